"""Executor backends: run a participant container (or program) inside a workspace."""
