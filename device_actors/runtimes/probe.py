"""Whether a runtime's library imports on this machine, tried in a child process first.

An import that crashes the interpreter (onnxruntime under qemu-user emulation with the host's x86
/proc/cpuinfo dies with SIGSEGV) would kill the board's latency actor, and Ray would restart it
into the same crash again and again. Probed in a child, a broken runtime is one named error
("importing onnxruntime in a fresh Python died with SIGSEGV"), the actor stays up, and the other
runtimes keep working.
"""
from __future__ import annotations

import functools
import platform
import signal
import subprocess
import sys

PROBE_TIMEOUT_S = 300.0  # an import under emulation can take a minute


@functools.cache
def import_problem(module: str) -> str | None:
    """Why `module` does not import in a fresh interpreter on this machine; None when it does."""
    try:
        done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"importing {module} in a fresh Python did not finish within {PROBE_TIMEOUT_S:.0f} s"
    if done.returncode == 0:
        return None
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        hint = ""
        if name == "SIGSEGV" and platform.machine() == "aarch64":
            hint = (" (under qemu-user emulation this is the host's x86 /proc/cpuinfo: scripts/arm-board.sh "
                    "mounts an ARM one and sets QEMU_CPU)")
        return f"importing {module} in a fresh Python died with {name}{hint}"
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return f"importing {module} in a fresh Python failed: {last}"
