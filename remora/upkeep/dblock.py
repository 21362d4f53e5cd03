"""A named lock in the database (a ``Lock`` row): one holder at a time across processes and hosts.

The API's background loops (remora.upkeep) each take one, so among several API
instances one runs a loop's pass at a time.  (The queue's word "lease" names
something else: a worker's hold on a reserved job.)

``acquire()`` takes the lock when it is free or expired, or renews it for
its holder, with one conditional UPDATE (INSERT when the row does not exist
yet; a concurrent INSERT loses on the primary key).  On PostgreSQL a second
UPDATE waits for the first to commit and then re-checks the condition, so two
instances can never both succeed.  Expiry is judged by the acquiring host's
clock: keep hosts in sync (NTP) and the ttl well above any skew.
"""

from __future__ import annotations

import datetime as dt

from remora import models
from remora.models import Lock


class DbLock:
    def __init__(self, name: str, holder: str, ttl: float) -> None:
        self.name = name
        self.holder = holder
        self.ttl = ttl

    def acquire(self) -> bool:
        """Take or renew the lock for ``ttl`` seconds; True when this holder has it."""
        now = models.utcnow()
        expires = now + dt.timedelta(seconds=self.ttl)
        try:
            with models.write_transaction():
                changed = (
                    Lock.update(holder=self.holder, expires_at=expires)
                    .where(Lock.name == self.name, (Lock.expires_at < now) | (Lock.holder == self.holder))
                    .execute()
                )
                if changed:
                    return True
                if Lock.get_or_none(Lock.name == self.name) is None:
                    Lock.create(name=self.name, holder=self.holder, expires_at=expires)
                    return True
        except models.IntegrityError:
            return False
        return False

    def release(self) -> None:
        """Give the lock up at once (another instance may take it on its next try)."""
        try:
            Lock.delete().where(Lock.name == self.name, Lock.holder == self.holder).execute()
        except models.DatabaseError:
            pass


__all__ = ["DbLock"]
