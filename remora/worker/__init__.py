"""The worker: reserve -> claim -> run -> stream -> finish -> ack, with heartbeats (see ``core``)."""

from remora.worker.core import Worker

__all__ = ["Worker"]
