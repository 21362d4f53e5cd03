"""Shared test machinery, one module per concern; no test imports another folder's conftest.

- ``waits``: ``wait_for`` / ``wait_until`` / ``wait_port`` (polls with a deadline), ``free_port``, ``elapsed``.
- ``services``: finding binaries; ``missing`` skips, or fails under REMORA_REQUIRE_SERVICES=1.
- ``clock``: ``Clock``, a fake monotonic clock for code that takes a ``clock`` callable.
- ``http``: the one HTTP helper (``request`` -> ``Reply``, keep-alive ``Http``).
- ``cluster``: Remora as subprocesses (queue server, APIs, workers, or `remora up` plus the CLI).
- ``api``: an in-process API + NetQueue with a token per role, for the REST tests.
- ``workerkit``: settings, server rows and job submission for executor and worker tests.
- ``sshd`` / ``postgres``: pytest plugins (see tests/conftest.py) with real OpenSSH and PostgreSQL servers.
"""
