"""Masking secret values in a job's output before it is stored.

``SecretMasker`` replaces every occurrence of a secret value in a stream
with ``***``.  Output arrives in reads of any size, so a value may be split
across two reads: each stream keeps a tail of ``len(longest secret) - 1``
bytes back until the next read (or the end, ``finish``).  Occurrences that
overlap (two secrets sharing bytes, a secret that is a prefix of another)
are masked as one ``***``; occurrences that merely touch are masked one by
one.  Streams are masked independently: a value split between stdout and
stderr is two harmless halves.

Values shorter than ``MIN_SECRET_BYTES`` are not masked (masking a one-letter
value would destroy the output): the API refuses explicit secrets that short.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MASK = b"***"
MIN_SECRET_BYTES = 4


@dataclass
class _State:
    carry: bytes = b""  # raw bytes held back (at most len(longest) - 1)
    covered: int = 0  # leading bytes of ``carry`` already written out as part of a ``***``


class SecretMasker:
    """Masks secret values in each stream of one job's output (thread-safe per stream: one writer each)."""

    def __init__(self, secrets: Iterable[str | bytes]) -> None:
        values = {s.encode() if isinstance(s, str) else bytes(s) for s in secrets}
        self.secrets = sorted((v for v in values if len(v) >= MIN_SECRET_BYTES), key=len, reverse=True)
        self.keep = len(self.secrets[0]) - 1 if self.secrets else 0
        self._states: dict[object, _State] = {}

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def feed(self, stream: object, data: bytes) -> bytes:
        """The masked bytes of ``stream`` that can be written now (a tail may be held back)."""
        return self._mask(stream, data, final=False)

    def finish(self, stream: object) -> bytes:
        """The masked rest of ``stream`` (its held-back tail); the stream starts afresh afterwards."""
        return self._mask(stream, b"", final=True)

    def streams(self) -> list[object]:
        """Streams that hold bytes back."""
        return [stream for stream, state in self._states.items() if state.carry]

    def _mask(self, stream: object, data: bytes, *, final: bool) -> bytes:
        state = self._states.setdefault(stream, _State())
        buf = state.carry + data
        cutoff = len(buf) if final else max(len(buf) - self.keep, 0)
        # Every occurrence starting before the cutoff lies wholly in buf (no secret is longer than keep + 1).
        found: list[tuple[int, int]] = []
        for secret in self.secrets:
            start = buf.find(secret)
            while 0 <= start < cutoff:
                found.append((start, start + len(secret)))
                start = buf.find(secret, start + 1)
        found.sort()
        out = bytearray()
        pos = state.covered  # buf[:pos] is written out already, the output ending in a *** when pos > 0
        for start, end in found:
            if start < pos:  # overlaps the *** just written: widen it
                pos = max(pos, end)
                continue
            out += buf[pos:start]
            out += MASK
            pos = end
        if pos <= cutoff:
            out += buf[pos:cutoff]
            state.carry, state.covered = buf[cutoff:], 0
        else:
            state.carry, state.covered = buf[cutoff:], pos - cutoff
        if final:
            self._states.pop(stream, None)
        return bytes(out)
