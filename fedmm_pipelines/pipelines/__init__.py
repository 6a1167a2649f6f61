"""ZenML pipelines composed of steps/."""
