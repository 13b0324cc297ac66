"""Extraction jobs: request validation, the shared operations (CLI and REST), the state machine."""
