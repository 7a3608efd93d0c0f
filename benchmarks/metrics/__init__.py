"""Metric functions shared by the tasks (one concept per module)."""
