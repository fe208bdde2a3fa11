"""Scheduler: publishes one tick per job and period, however many replicas run."""
