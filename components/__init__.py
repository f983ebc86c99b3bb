"""Kubeflow Pipelines components: thin callers of `training/` (they arrive with the pipeline issue)."""
