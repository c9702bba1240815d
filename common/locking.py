"""Exclusive file locks (flock) that say so plainly when the file system has none.

Some network file systems refuse flock (NFS mounted without a lock daemon returns ENOLCK; others
EOPNOTSUPP). Without a lock two drivers could write one sweep directory at once, so such a file
system is refused naming the file, never ignored. (NFS mounted with `local_lock` or `nolock` takes
the lock on the local machine only: no error to see here; docs say to keep sweeps off such mounts.)
"""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from common.errors import UserError

__all__ = ["LockUnsupported", "lock_exclusive"]

NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}


class LockUnsupported(UserError, OSError):
    """The file system holding a lock file does not support locks."""


def lock_exclusive(fd: int, path: Path, *, wait: bool = True) -> None:
    """flock `fd` (open on `path`) exclusively; with `wait=False` a lock held elsewhere raises
    BlockingIOError at once."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        raise
    except OSError as e:
        if e.errno not in NO_LOCKS:
            raise
        raise LockUnsupported(f"{path}: cannot lock this file, its file system does not support file locks "
                              f"({os.strerror(e.errno)}); put output_dir and EDGESWEEP_CACHE on a local disk or "
                              f"on a network file system mounted with locking (NFS with its lock service, not "
                              f"'nolock')") from None
