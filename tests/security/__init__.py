"""security tests (see docs/reliability.md)."""
