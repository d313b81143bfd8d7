"""Named locks that several worker processes share through the database they share.

On PostgreSQL, a session-level advisory lock: it lives as long as the holder's connection, so
a worker that dies (SIGKILL, a lost machine) lets go of it the moment its connection closes,
with no lease to wait out. On SQLite, whose workers all run beside the database file, a byte
of a lock file next to it (POSIX record locks, likewise released by the kernel when the holder
dies). Either way a lock is held by a process: the tasks that take one run on a worker's main
thread, one at a time."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DatabaseError, connection

# One open file per process and database: POSIX locks are dropped when any descriptor of the
# file is closed, so the descriptor stays open for the life of the process.
_files: dict[str, int] = {}


def _key(name: str) -> int:
    """The lock's number: PostgreSQL's advisory locks take a signed 64-bit integer."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _lock_file() -> int:
    path = f"{connection.settings_dict['NAME']}.locks"
    fd = _files.get(path)
    if fd is None:
        fd = _files[path] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    return fd


@contextmanager
def held(name: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold the lock called ``name`` for the block. With ``wait=False`` the block runs at once
    and is told whether it got the lock (False: another process holds it)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            if wait:
                cursor.execute("SELECT pg_advisory_lock(%s), true", [_key(name)])
            else:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [_key(name)])
            got = bool(cursor.fetchone()[-1])
        try:
            yield got
        finally:
            if got:
                try:
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT pg_advisory_unlock(%s)", [_key(name)])
                except DatabaseError:
                    pass  # the connection went away, and the lock with it
        return
    fd = _lock_file()
    offset = _key(name) % (2**31)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB), 1, offset)
        got = True
    except BlockingIOError:
        got = False
    try:
        yield got
    finally:
        if got:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
