"""The worker: reserve -> claim -> run -> stream -> finish -> ack, with heartbeats.

- ``core``: ``Worker``, its slot threads and one job's run; the executor gets
  a ``Target`` built from the server's row (``remora.services.targets``);
- ``held``: ``HeldJobs``, the jobs this worker holds (their leases):
  reserving for free slots, START/ACK/NACK, heartbeats;
- ``sink``: ``JobSink``, where a running job's output goes (stored through
  ``remora.output.JobOutput``);
- ``backoff``: ``Outage``, backoff and once-per-outage logging for the queue
  and the database.
"""

from remora.worker.core import Worker

__all__ = ["Worker"]
