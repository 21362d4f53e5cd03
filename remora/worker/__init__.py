"""The worker: reserve -> claim -> run -> stream -> finish -> ack, with heartbeats.

- ``core``: ``Worker``, its dispatcher (reserve, claim and start in batches)
  and starters;
- ``servers``: ``WorkerServers``, the server rows (cached ``SERVER_TTL``, a
  claim's read in one query) and an executor per row, given a ``Target``
  built from it (``remora.services.targets``);
- ``ends``: ``Ends``, the finisher threads recording job ends together (final
  statuses and last output in one transaction, one ACK, each batch stepped once);
- ``held``: ``HeldJobs``, the jobs this worker holds (their leases):
  reserving for free slots (one RESERVE for all), START/ACK/NACK, heartbeats;
- ``sink``: ``JobSink``, where a running job's output goes (stored through
  ``remora.output.JobOutput``), and ``OutputWriter``, the thread storing every
  job's output (bounded by bytes; due outputs flushed in one transaction);
- ``backoff``: ``Outage``, backoff and once-per-outage logging for the queue
  and the database.
"""

from remora.worker.core import Worker

__all__ = ["Worker"]
