"""load tests (see docs/reliability.md)."""
