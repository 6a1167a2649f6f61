"""fedmm's orchestrator adapters (``pip install fedmm[pipelines]``): ZenML steps and pipelines, kfp components,
all generated from ``fedmm.graph``. The core (``fedmm``) never imports this package."""
