"""The scheduler service (see docs/ARCHITECTURE.md)."""
