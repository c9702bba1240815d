"""Facts about the machine that times a model, read from /proc and /sys.

A latency number means little without the conditions it was taken under: which CPU, how many
cores, the frequency governor, how hot the SoC was. Every report carries these facts, and the
thermal snapshot taken before and after a measurement is how throttling is detected. Whatever
a machine does not expose (no cpufreq in a VM, no thermal zones) is None, never a guess.
"""
from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

# ARM does not print a "model name" in /proc/cpuinfo; its "CPU part" identifies the core.
ARM_CPU_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd44": "Cortex-X1",
}


@dataclass(frozen=True)
class SystemRoots:
    """Where /proc, /sys and /etc are; tests point these at fake trees."""
    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    etc: Path = Path("/etc")


@dataclass(frozen=True)
class ThermalSnapshot:
    """SoC temperature and CPU frequency at one instant (None where /sys does not tell)."""
    temperature_c: float | None  # hottest thermal zone
    frequency_mhz: float | None  # mean current frequency over the online CPUs
    max_frequency_mhz: float | None  # the lowest scaling_max_freq: a thermal cap lowers it


# Set by whatever runs a board under emulation (scripts/arm-board.sh: "qemu-aarch64 (cortex-a53)"),
# so no result of such a node is taken for a board's timing.
EMULATION_ENV = "EDGESWEEP_EMULATION"


@dataclass(frozen=True)
class BoardFacts:
    cpu_model: str
    cores: int
    machine: str  # aarch64, x86_64
    governor: str | None
    soc: str | None  # device-tree model on ARM boards, e.g. "NXP i.MX8MPlus EVK board"
    os: str
    kernel: str
    python: str
    ray: str | None
    numpy: str
    memory_total_mb: float | None
    emulation: str | None = None  # how this machine emulates the board, e.g. "qemu-aarch64 (cortex-a53)"
    simd: str = ""  # the int8-relevant vector extensions (see INT8_SIMD): whether int8 can pay here

    def to_dict(self) -> dict:
        return asdict(self)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _read_number(path: Path) -> float | None:
    text = _read(path)
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def cpu_model(roots: SystemRoots = SystemRoots()) -> str:
    """'AMD EPYC' on x86; 'Cortex-A53' (from the CPU part) on ARM; the machine name otherwise."""
    info = _read(roots.proc / "cpuinfo") or ""
    fields: dict[str, str] = {}
    for line in info.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    if fields.get("model name"):
        return fields["model name"]
    part = fields.get("CPU part", "").lower()
    if part:
        return ARM_CPU_PARTS.get(part, f"ARM CPU part {part}")
    return fields.get("Hardware") or platform.processor() or platform.machine()


# Vector extensions that decide whether int8 kernels beat float ones: VNNI / dot-product instructions
# multiply-accumulate int8 in one step; without them (AVX2 alone) int8 convolutions gain little.
INT8_SIMD = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm", "sve")


def simd_features(roots: SystemRoots = SystemRoots()) -> str:
    """The INT8_SIMD extensions /proc/cpuinfo lists ("flags" on x86, "Features" on ARM), in that order."""
    info = _read(roots.proc / "cpuinfo") or ""
    present: set[str] = set()
    for line in info.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            present.update(value.split())
    return ",".join(f for f in INT8_SIMD if f in present)


def _cpu_dirs(roots: SystemRoots) -> list[Path]:
    base = roots.sys / "devices/system/cpu"
    return sorted(p for p in base.glob("cpu[0-9]*") if p.name[3:].isdigit())


def online_cores(roots: SystemRoots = SystemRoots()) -> int:
    """CPUs this process may run on (the affinity mask), which is what a runtime's threads get."""
    if roots == SystemRoots() and hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return len(_cpu_dirs(roots)) or (os.cpu_count() or 1)


def governor(roots: SystemRoots = SystemRoots()) -> str | None:
    """The cpufreq governor; several distinct ones are joined with '/'."""
    found = {g for d in _cpu_dirs(roots) if (g := _read(d / "cpufreq/scaling_governor"))}
    return "/".join(sorted(found)) if found else None


def thermal_snapshot(roots: SystemRoots = SystemRoots()) -> ThermalSnapshot:
    temps = [t / 1000.0 for zone in sorted((roots.sys / "class/thermal").glob("thermal_zone*"))
             if (t := _read_number(zone / "temp")) is not None]
    cur = [f / 1000.0 for d in _cpu_dirs(roots) if (f := _read_number(d / "cpufreq/scaling_cur_freq")) is not None]
    caps = [f / 1000.0 for d in _cpu_dirs(roots) if (f := _read_number(d / "cpufreq/scaling_max_freq")) is not None]
    return ThermalSnapshot(temperature_c=max(temps) if temps else None,
                           frequency_mhz=sum(cur) / len(cur) if cur else None,
                           max_frequency_mhz=min(caps) if caps else None)


def _os_name(roots: SystemRoots) -> str:
    for line in (_read(roots.etc / "os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def _memory_total_mb(roots: SystemRoots) -> float | None:
    for line in (_read(roots.proc / "meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return round(float(line.split()[1]) / 1024, 1)
    return None


def _soc(roots: SystemRoots) -> str | None:
    for path in (roots.sys / "firmware/devicetree/base/model", roots.proc / "device-tree/model"):
        text = _read(path)
        if text:
            return text.rstrip("\x00")
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def board_facts(roots: SystemRoots = SystemRoots()) -> BoardFacts:
    return BoardFacts(cpu_model=cpu_model(roots), cores=online_cores(roots), machine=platform.machine(),
                      governor=governor(roots), soc=_soc(roots), os=_os_name(roots), kernel=platform.release(),
                      python=".".join(map(str, sys.version_info[:3])), ray=_version("ray"),
                      numpy=_version("numpy") or "unknown", memory_total_mb=_memory_total_mb(roots),
                      emulation=os.environ.get(EMULATION_ENV) or None, simd=simd_features(roots))
