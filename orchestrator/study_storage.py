"""Where a sweep's Optuna study lives: SQLite in the sweep directory, or a PostgreSQL server
(`searcher.storage`, Optuna's RDB storage).

On a cluster the sweep directory is shared storage (NFS), and SQLite's file locks are unreliable
there (with `nolock` or `local_lock` mounts they lock nothing), so a study written from one node
and read from another can be corrupted; a database server has no such problem. Its URL names
host, port and database only: libpq takes the user and password from PGUSER and PGPASSWORD or
~/.pgpass, so no secret is ever written to sweep.json, MLflow or Tune's saved state.

Checking a URL needs no Optuna (the config check is fast); opening one does.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from common.errors import UserError

if TYPE_CHECKING:
    import optuna

__all__ = ["STUDY_DB", "StudyStorageError", "check_study_storage", "open_storage", "study_url"]

STUDY_DB = "optuna.db"  # the SQLite study's file in the sweep directory (no `searcher.storage`)
SERVER_SCHEMES = ("postgresql", "postgresql+psycopg2")
SERVER_FORM = "postgresql://HOST[:PORT]/DATABASE"


class StudyStorageError(UserError, RuntimeError):
    """The study's database cannot be opened; the message names `searcher.storage` and why."""


def check_study_storage(url: str | None) -> str | None:
    """`searcher.storage` as written: null, or a PostgreSQL URL without credentials. The messages never
    repeat the URL (it could hold a password)."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in SERVER_SCHEMES:
        raise ValueError(f"must be a PostgreSQL URL {SERVER_FORM} (null keeps the study in SQLite in the sweep "
                         f"directory), got the scheme {parts.scheme!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"must not hold a user or password ({SERVER_FORM}): set PGUSER and PGPASSWORD (or "
                         f"~/.pgpass) for the driver instead, so no secret is stored with the sweep")
    if not parts.hostname or not parts.path.strip("/"):
        raise ValueError(f"must name a host and a database: {SERVER_FORM}")
    return url


def study_url(sweep_dir: Path, storage: str | None = None) -> str:
    """The study's database URL: the configured server, or SQLite in the sweep directory."""
    return storage or f"sqlite:///{(Path(sweep_dir) / STUDY_DB).resolve()}"


def open_storage(url: str) -> "optuna.storages.RDBStorage":
    """Optuna's RDB storage at `url` (its tables made on first use). A connection checked before each
    use, so a long sweep survives a server that dropped idle connections."""
    import optuna
    import sqlalchemy.exc

    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except ImportError:
        raise StudyStorageError("searcher.storage: PostgreSQL's driver is not installed: pip install "
                                "'psycopg[binary]' (part of EdgeSweep's train extra)") from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise StudyStorageError(f"searcher.storage: cannot open the study's database ({type(e).__name__}: {reason}); "
                                f"is the server up and reachable, and are PGUSER and PGPASSWORD (or ~/.pgpass) set for "
                                f"this user?") from None
