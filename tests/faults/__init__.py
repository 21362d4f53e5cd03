"""faults tests (see docs/reliability.md)."""
