"""The gateway service (see docs/ARCHITECTURE.md)."""
