"""Experiment matrices: many configs run resumably into one results table."""
