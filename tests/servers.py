"""Real servers for tests, on loopback: an `mlflow server` and a PostgreSQL server from Debian's package.

Each is started by the test that needs it and stopped by it (its own process group or pg_ctl), never by name.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_server(store: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` on loopback with a SQLite store in `store`, up when /health answers."""
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1", "--backend-store-uri", f"sqlite:///{store}/mlflow.db",
                               "--default-artifact-root", str(store / "artifacts")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert server.poll() is None, "mlflow server exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            time.sleep(0.5)
    raise TimeoutError("mlflow server did not start")


def stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(30)


@dataclass(frozen=True)
class Postgres:
    url: str  # postgresql://127.0.0.1:PORT/DB, no credentials (libpq reads PGUSER and PGPASSWORD)
    user: str
    password: str

    @property
    def env(self) -> dict[str, str]:
        return {"PGUSER": self.user, "PGPASSWORD": self.password}


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


@contextlib.contextmanager
def postgres_server(database: str = "studies"):
    """A throwaway PostgreSQL cluster on loopback with password login (scram-sha-256). PostgreSQL refuses
    to run as root, so under root (CI) it runs as the `postgres` user Debian's package creates."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, postgres) are not installed: Debian's package "
                    "`postgresql` has them (.ci/run installs it)")
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the PostgreSQL server as")
        run_as = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="edgesweep-pg-"))  # short: the socket path must stay under 107 bytes
    user, password, port = "edgesweep", "pg-pass-for-tests-only", free_port()
    (root / "pw").write_text(password)
    if run_as:
        for path in (root, root / "pw"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    data = root / "data"
    subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=scram-sha-256",
                    f"--pwfile={root / 'pw'}", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
    log = root / "server.log"
    subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True,
                   timeout=120)
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="postgres",
                             autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {database}")
        yield Postgres(url=f"postgresql://127.0.0.1:{port}/{database}", user=user, password=password)
    finally:
        subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
