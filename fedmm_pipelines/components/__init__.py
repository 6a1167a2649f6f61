"""Kubeflow Pipelines (kfp v2) components and pipeline: thin adapters over fedmm.workflow."""
