"""Kubeflow pipelines: wiring of `components/` only."""
