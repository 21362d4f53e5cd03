"""NetQueue: Remora's durable priority queue server and its client.

Modules (server and client share only the protocol layer):

- protocol layer: ``protocol`` (frames and the job-flow bodies; server and
  client import only this), ``control`` (session, worker-registry and
  inspection bodies), ``wire`` (limits, opcodes, error codes, primitive codecs).
- server: ``server`` (the epoll I/O loop), ``settings`` (``ServeSettings``),
  ``replies`` (connections, group commit, held replies), ``handlers`` (one
  function per opcode), ``waiters`` (parked blocking RESERVEs), ``preauth``
  (unauthenticated connections), ``monitor`` (live /monitor streams),
  ``idle`` (adaptive busy-poll), ``http`` and ``metrics`` (HTTP/JSON and
  Prometheus on the same port), ``__main__`` (``python -m remora.netqueue``).
- state: ``engine`` (the operations), ``jobindex`` (the indexes under them and
  recovery's rebuild), ``timers`` (delayed jobs and leases), ``entries`` (the
  job record, queue and group indexes, worker registry), ``wal`` (the
  write-ahead log, group-commit fsync, snapshots; job bodies are read back
  from it), ``records`` (the log's record layout and codec).
- client: ``client`` (``QueueClient``), ``link`` (its connection).
"""
