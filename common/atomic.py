"""Whole files that a crash never leaves half-written, and directories only their owner can enter.

A state file is written beside its final name (a fresh 0600 file: `tempfile.mkstemp`), fsync'd, renamed
over it and the rename fsync'd too, so a reader finds the old file or the new one, never a torn mix.
Used for every state file the sweep or a cache trusts later (checkpoints, cache markers, sweep.json,
kept models).

A sweep directory and the caches hold Tune's pickles and checkpoints that later runs load, so they
are made private (0700, `private_dir`). Explicit modes rather than a process umask: a umask would
also change the files a user asks for elsewhere (`best --out`), and would not reach Ray workers that
are already running or live on other nodes; a 0700 directory keeps other users out of everything
below it, whoever writes the files there.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

PRIVATE_DIR = 0o700


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path (mode 0600) beside `path` to write; on a clean exit it becomes `path`, on an
    error it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def write_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def copy_file(source: Path, target: Path) -> None:
    with replacing(target) as tmp:
        shutil.copyfile(source, tmp)


def private_dir(path: Path) -> Path:
    """`path`, created if needed, that only its owner can list, enter or write (0700). An existing
    directory of this user's with wider modes is narrowed; one of another user's is left as it is."""
    path = Path(path)
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    st = path.stat()
    if stat.S_IMODE(st.st_mode) != PRIVATE_DIR and st.st_uid == os.getuid():
        path.chmod(PRIVATE_DIR)
    return path


def writable_by_others(path: Path) -> str | None:
    """Why users other than this one could have changed `path` (group or others may write it, or
    another user owns it), or None."""
    st = Path(path).stat()
    if st.st_uid != os.getuid():
        return f"it belongs to user id {st.st_uid}, not to this user ({os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"its group or other users may write it (mode {stat.S_IMODE(st.st_mode):04o})"
    return None
