"""Kubeflow pipelines: wiring of `components/` only (they arrive with the pipeline issue)."""
