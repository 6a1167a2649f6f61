"""ZenML steps: thin adapters over fedmm.workflow, one stage per file."""
