"""NetQueue's write-ahead log: CRC-checked records, group-commit fsync, snapshots and compaction.

Files in the data directory (``N`` is the generation; the directory is kept
0700 and every file is created 0600, whatever the umask)::

    snapshot.N   every live job at the moment generation N began (written to
                 snapshot.N.tmp, fsynced, renamed: it exists only when whole)
    wal.N        every change since snapshot.N, appended in order (the file is
                 preallocated PREALLOCATE bytes at a time: zeros after the last
                 record are unused space, cut at recovery and at a clean close)

Both files hold CRC-checked records (layout and codec: ``remora.netqueue.records``).

Contracts:
- ``record()`` only buffers; ``flush()`` writes the buffer with one write()
  and returns the log sequence number (bytes written so far); ``durable``
  is the highest LSN known to be on disk.  With ``fsync = always`` the
  server holds replies until ``durable`` passes their LSN; the sync thread
  runs one ``fdatasync`` for everything written before it started (group
  commit) and calls ``on_durable``; while nothing is asked of the thread
  (``sync_idle()``) the I/O thread syncs its batch itself, without the
  hand-off: ``flush(dsync=True)`` writes it with ``RWF_DSYNC`` (write and sync
  in one system call) when everything before is durable, else ``sync_inline()``.  ``interval`` syncs at most every
  ``fsync_interval`` seconds and ``never`` leaves it to the OS; both count a
  write as durable at once (a process crash loses nothing, a power cut may).
- ``recover()`` loads the newest snapshot and replays its log; the first
  record that is short or fails its CRC ends the log: the file is truncated
  there and the report says how many bytes and records were dropped.
- ``compact()`` starts a new generation from the live jobs (the server calls it
  when ``should_compact``: most logged records are dead), so the log cannot grow.
- A job body over ``INLINE_BODY`` bytes is kept only in the log: ``record()``
  turns ``Entry.body`` into its place there (``body_loc``), ``body()`` reads it
  back, recovery and ``compact()`` point the jobs at their bodies' new places.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from remora.netqueue import entries as e
from remora.netqueue.engine import Engine
from remora.netqueue.entries import Entry
from remora.netqueue.records import (  # noqa: F401  (REC, INLINE_BODY: the log's layout, named here too)
    IN_SNAPSHOT,
    INLINE_BODY,
    LEN_MASK,
    LOC_SHIFT,
    REC,
    body_end,
    body_loc,
    encode,
    read_records,
)

log = logging.getLogger(__name__)

COMPACT_MIN_RECORDS = 50000  # never compact a log smaller than this
COMPACT_DEAD_RATIO = 4  # compact when records >= ratio * live jobs
PREALLOCATE = 4 * 1024 * 1024  # the log file grows by this much at a time (posix_fallocate), ahead of its records
_DSYNC = getattr(os, "RWF_DSYNC", 0)  # Linux 4.7+: a write that is also its own fdatasync


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WriteAheadLog:
    """The queue's log; see the module docstring for the contract of each method."""

    def __init__(
        self, directory: Path, *, fsync: str = "always", fsync_interval: float = 0.01, on_durable: Callable[[], None] | None = None
    ) -> None:
        self.dir = Path(directory)
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.on_durable = on_durable or (lambda: None)
        self.gen = 0
        self.fd = -1
        self.written = 0  # LSN: bytes handed to write() since this process opened the log
        self.durable = 0
        self.synced = 0
        self.records = 0  # records in the current snapshot + log
        self.log_bytes = 0
        self.compactions = 0
        self.fsyncs = 0
        self.inline_fsyncs = 0  # of ``fsyncs``: done by the I/O thread itself (the sync thread idle)
        self._buf = bytearray()
        self._rfds = [-1, -1]  # read-only fds of wal.N and snapshot.N: job bodies are read back from them
        self._allocated = 0  # the log file's size: records end at log_bytes, zeros (preallocated) after them
        self._preallocate = True  # off after a failed posix_fallocate (full disk, no support) until the next file
        self._pending_records = 0
        self._cv = threading.Condition(threading.Lock())
        self._file_lock = threading.Lock()
        self._sync_wanted = False
        self._syncing = False  # the sync thread is in fdatasync
        self._closing = False
        self._thread: threading.Thread | None = None

    # -- recovery ---------------------------------------------------------
    def _gens(self, prefix: str) -> list[int]:
        out = []
        for path in self.dir.glob(prefix + ".*"):
            suffix = path.name[len(prefix) + 1 :]
            if suffix.isdigit():
                out.append(int(suffix))
        return sorted(out)

    def recover(self, engine: Engine) -> dict[str, Any]:
        """Load snapshot + log into ``engine``; truncate a torn tail; open the log for appending."""
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)  # whatever the umask or the mode it was made with
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink()
        for path in self.dir.iterdir():
            if path.name.startswith(("snapshot.", "wal.")) and path.is_file():
                os.chmod(path, 0o600)
        snaps, wals = self._gens("snapshot"), self._gens("wal")
        self.gen = max(snaps[-1] if snaps else 0, 0)
        report: dict[str, Any] = {"generation": self.gen, "snapshot_jobs": 0, "log_records": 0, "dropped_bytes": 0, "dropped_at": None}
        journal, engine.journal = engine.journal, None
        engine.read_body = self.body
        snap = self.dir / f"snapshot.{self.gen}"
        if snap.exists():
            records, good, size = read_records(snap, IN_SNAPSHOT)
            if good != size:
                log.error("queue: snapshot %s is damaged after %d jobs; the rest is lost", snap, len(records))
                report["snapshot_damaged"] = True
            for _kind, job, _arg in records:
                engine.replay_job(job)
            report["snapshot_jobs"] = len(records)
            self.records = len(records)
        wal_path = self.dir / f"wal.{self.gen}"
        if wal_path.exists():
            records, good, size = read_records(wal_path)
            for kind, target, arg in records:
                if kind == e.J_PUT:
                    engine.replay_job(target)
                else:
                    e.replay(engine.jobs, kind, target, arg)
            if good != size:
                with open(wal_path, "r+b") as fh:
                    fh.seek(good)
                    damaged = len(fh.read().rstrip(b"\0"))  # zeros after the records: preallocated, unused
                    fh.truncate(good)
                    os.fsync(fh.fileno())
                if damaged:
                    report["dropped_bytes"] = damaged
                    report["dropped_at"] = good
                    log.warning("queue: log %s had a torn or corrupt tail: dropped %d bytes at offset %d", wal_path, damaged, good)
            report["log_records"] = len(records)
            self.records += len(records)
            self.log_bytes = good
        engine.rebuild()
        engine.journal = journal
        self.fd = os.open(wal_path, os.O_WRONLY | os.O_CREAT, 0o600)
        self._open_readers(wal_path, snap)
        self._allocated = self.log_bytes
        _fsync_dir(self.dir)
        for old in [g for g in snaps + wals if g < self.gen]:
            for name in (f"snapshot.{old}", f"wal.{old}"):
                (self.dir / name).unlink(missing_ok=True)
        report["jobs"] = len(engine.jobs)
        report["seconds"] = round(time.monotonic() - started, 3)
        log.info(
            "queue: recovered %d jobs from %s (snapshot %d jobs, log %d records, dropped %d bytes) in %.3fs",
            len(engine.jobs),
            self.dir,
            report["snapshot_jobs"],
            report["log_records"],
            report["dropped_bytes"],
            report["seconds"],
        )
        return report

    def _open_readers(self, wal_path: Path, snap: Path) -> None:
        """Open (or reopen, after a compaction) the read-only fds job bodies are read back from."""
        old = self._rfds
        self._rfds = [os.open(wal_path, os.O_RDONLY), os.open(snap, os.O_RDONLY) if snap.exists() else -1]
        for fd in old:
            if fd >= 0:
                os.close(fd)

    # -- job bodies -----------------------------------------------------------
    def body(self, loc: int) -> bytes:
        """The body at ``loc`` (``body_loc``): read back from the log, or from the buffer when not yet written.

        Bodies over ``INLINE_BODY`` are kept only here, not in memory: 100,000 ready jobs of 200 bytes
        are 20+ MiB less, for one ``pread`` per reservation, PEEK or LIST (page cache in practice)."""
        offset, length = loc >> LOC_SHIFT, (loc >> 1) & LEN_MASK
        if loc & IN_SNAPSHOT:
            return os.pread(self._rfds[1], length, offset)
        written = self.log_bytes
        if offset >= written:  # still in the buffer (or held there while the disk is full)
            start = offset - written
            return bytes(self._buf[start : start + length])
        return os.pread(self._rfds[0], length, offset)

    # -- appending ----------------------------------------------------------
    def record(self, kind: int, job: Entry, arg: Any) -> None:
        """The engine's journal callback: buffer one record.

        A PUT's body over ``INLINE_BODY`` leaves memory: ``job.body`` becomes its place in the log."""
        data = encode(kind, job, arg)
        buf = self._buf
        if kind == e.J_PUT:
            body = job.body
            if isinstance(body, bytes) and len(body) > INLINE_BODY:
                end = self.log_bytes + len(buf) + len(data) - body_end(job)
                job.body = body_loc(end - len(body), len(body))
        buf += data
        self._pending_records += 1

    def flush(self, dsync: bool = False) -> int:
        """Write the buffered records (one write); return the LSN they end at.

        ``dsync`` (the I/O thread, the sync thread idle): when everything written before is already
        durable, the write itself is synchronous (``RWF_DSYNC``: write and fdatasync in one system
        call), so the records are durable on return; counted as an inline fsync."""
        buf = self._buf
        if buf:
            dsync = dsync and self.synced >= self.written and self.fsync == "always"
            with self._file_lock:
                self._write_all(buf, _DSYNC if dsync else 0)
            self.written += len(buf)
            self.log_bytes += len(buf)
            self.records += self._pending_records
            self._pending_records = 0
            buf.clear()
            if self.fsync != "always":
                self.durable = self.written
            elif dsync:
                self.synced = self.durable = self.written
                self.fsyncs += 1
                self.inline_fsyncs += 1
        return self.written

    @property
    def buffered(self) -> int:
        """Bytes of records not yet written (they stay buffered while writes fail)."""
        return len(self._buf)

    def _write_all(self, buf: bytearray, flags: int = 0) -> None:
        """Append ``buf`` at ``log_bytes``, whole or not at all: on a failed write (disk full, file-size
        limit) the file is cut back to its last whole record and the records stay buffered for the next flush.

        The file is preallocated ``PREALLOCATE`` bytes at a time, so most writes land inside it: the
        file's size does not change and an fdatasync has only data to flush (no size to commit to the
        filesystem's journal), which makes ``fsync = always`` cheaper per request.  Recovery cuts the
        unused zeros after the last record; a clean close gives them back."""
        fd, offset = self.fd, self.log_bytes
        end = offset + len(buf)
        if end > self._allocated and self._preallocate:
            try:
                os.posix_fallocate(fd, self._allocated, max(PREALLOCATE, end - self._allocated))
                self._allocated += max(PREALLOCATE, end - self._allocated)
            except OSError:
                self._preallocate = False  # plain appends from now on: the write below says whether space is left
        try:
            n = os.pwritev(fd, (buf,), offset, flags) if flags else os.pwrite(fd, buf, offset)
            if n < len(buf):
                with memoryview(buf) as view:
                    while n < len(buf):
                        n += os.pwritev(fd, (view[n:],), offset + n, flags)
        except OSError:
            try:
                os.ftruncate(fd, offset)
                self._allocated = offset
            except OSError:
                log.exception("queue: cannot cut a partly written record off the log")
            raise
        self._allocated = max(self._allocated, end)

    def _give_back(self) -> None:
        """Cut the preallocated, unused tail off the log file (a clean close, a finished generation)."""
        if self._allocated > self.log_bytes:
            os.ftruncate(self.fd, self.log_bytes)
            self._allocated = self.log_bytes

    def request_sync(self) -> None:
        """Ask the sync thread for an fdatasync covering everything written so far."""
        with self._cv:
            self._sync_wanted = True
            self._cv.notify()

    def sync_idle(self) -> bool:
        """True when the sync thread has nothing asked of it and is not syncing (``fsync = always``)."""
        return self.fsync == "always" and not self._sync_wanted and not self._syncing

    def sync_now(self) -> None:
        self.flush()
        with self._file_lock:
            target = self.written
            if self.fd >= 0:
                os.fdatasync(self.fd)
                self.fsyncs += 1
        self.synced = max(self.synced, target)
        self.durable = max(self.durable, target)

    def sync_inline(self) -> None:
        """``sync_now()`` on the caller's thread while the sync thread is idle (``sync_idle``); counted apart."""
        self.sync_now()
        self.inline_fsyncs += 1

    def start(self) -> None:
        if self.fsync in ("always", "interval"):
            self._thread = threading.Thread(target=self._sync_loop, name="netqueue-fsync", daemon=True)
            self._thread.start()

    def _sync_loop(self) -> None:
        interval = self.fsync == "interval"
        while True:
            with self._cv:
                while not self._closing and not self._sync_wanted:
                    if interval:
                        self._cv.wait(self.fsync_interval)
                        break
                    self._cv.wait()
                if self._closing:
                    return
                self._syncing = True  # before _sync_wanted clears: sync_idle() never sees both off mid-way
                self._sync_wanted = False
            try:
                self._sync_once(interval)
            finally:
                self._syncing = False

    def _sync_once(self, interval: bool) -> None:
        """One fdatasync covering everything written when it starts (the sync thread's turn)."""
        target = self.written
        if target <= self.synced:
            return
        try:
            # sync a duplicate so the I/O thread can keep writing (and compaction can swap files) meanwhile
            with self._file_lock:
                fd = os.dup(self.fd)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
            self.fsyncs += 1
        except OSError:
            log.exception("queue: fdatasync failed; replies stay held until a sync succeeds")
            time.sleep(0.1)
            with self._cv:
                self._sync_wanted = True
            return
        self.synced = max(self.synced, target)  # the I/O thread may have synced further meanwhile (sync_now)
        if not interval:
            self.durable = max(self.durable, target)
            self.on_durable()

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.fd >= 0:
            self.sync_now()
            try:
                self._give_back()
            except OSError:
                log.exception("queue: cannot cut the preallocated tail off the log (recovery will)")
            os.close(self.fd)
            self.fd = -1
        for fd in self._rfds:
            if fd >= 0:
                os.close(fd)
        self._rfds = [-1, -1]

    # -- compaction ---------------------------------------------------------
    def should_compact(self, live_jobs: int) -> bool:
        return self.records >= COMPACT_MIN_RECORDS and self.records >= COMPACT_DEAD_RATIO * max(live_jobs, 1)

    def compact(self, engine: Engine) -> None:
        """Start generation N+1 from the live jobs (call with the engine lock held)."""
        started = time.monotonic()
        self.sync_now()
        gen = self.gen + 1
        tmp = self.dir / f"snapshot.{gen}.tmp"
        count = 0
        moved: list[tuple[Entry, int]] = []  # bodies kept in the log: their place in the new snapshot
        maps = [mmap.mmap(fd, 0, prot=mmap.PROT_READ) if fd >= 0 and os.fstat(fd).st_size else None for fd in self._rfds]

        def body_of(loc: int) -> bytes:  # the log is flushed: every body is in a file, read from its mapping
            start = loc >> LOC_SHIFT
            return maps[loc & IN_SNAPSHOT][start : start + ((loc >> 1) & LEN_MASK)]  # type: ignore[index]

        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            chunk = bytearray()
            written = 0
            for job in engine.live_jobs():
                loc = job.body
                if isinstance(loc, bytes):
                    chunk += encode(e.J_PUT, job, None)
                else:
                    body = body_of(loc)
                    chunk += encode(e.J_PUT, job, None, body)
                    moved.append((job, body_loc(written + len(chunk) - body_end(job) - len(body), len(body), IN_SNAPSHOT)))
                count += 1
                if len(chunk) > 1 << 20:
                    fh.write(chunk)
                    written += len(chunk)
                    chunk.clear()
            fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        for m in maps:
            if m is not None:
                m.close()
        snap = self.dir / f"snapshot.{gen}"
        os.replace(tmp, snap)
        new_fd = os.open(self.dir / f"wal.{gen}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        _fsync_dir(self.dir)
        with self._file_lock:
            old_fd, self.fd = self.fd, new_fd
            old_gen, self.gen = self.gen, gen
        os.close(old_fd)
        self._open_readers(self.dir / f"wal.{gen}", snap)
        for job, loc in moved:
            job.body = loc
        for name in (f"snapshot.{old_gen}", f"wal.{old_gen}"):
            (self.dir / name).unlink(missing_ok=True)
        dropped = self.records - count
        self.records, self.log_bytes = count, 0
        self._allocated, self._preallocate = 0, True
        self.compactions += 1
        log.info("queue: compacted the log: %d live jobs kept, %d dead records dropped (%.3fs)", count, dropped, time.monotonic() - started)

    def info(self) -> dict[str, Any]:
        return {
            "generation": self.gen,
            "records": self.records,
            "log_bytes": self.log_bytes,
            "fsync": self.fsync,
            "fsyncs": self.fsyncs,
            "fsyncs_inline": self.inline_fsyncs,
            "compactions": self.compactions,
            "directory": str(self.dir),
        }
