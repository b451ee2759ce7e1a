"""Temporal workflows. Orchestration only: every decision comes from `domain/`."""
