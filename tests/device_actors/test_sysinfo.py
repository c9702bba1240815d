"""Board facts and thermal readings come from /proc and /sys as the board exposes them."""
from __future__ import annotations

from pathlib import Path

from device_actors.sysinfo import SystemRoots, board_facts, cpu_model, governor, simd_features, thermal_snapshot


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _imx8mp_tree(root: Path, *, cur_khz: int = 1600000, max_khz: int = 1800000, temps=(45000, 52000),
                 governors=("performance",) * 4) -> SystemRoots:
    """The files an i.MX8M Plus (4x Cortex-A53) exposes, with the values given."""
    cpuinfo = "".join(f"processor\t: {i}\nBogoMIPS\t: 16.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 "
                      f"cpuid\nCPU implementer\t: 0x41\nCPU part\t: 0xd03\n\n" for i in range(4))
    _write(root / "proc/cpuinfo", cpuinfo)
    _write(root / "proc/meminfo", "MemTotal:        3874476 kB\nMemFree:  100 kB\n")
    for i, gov in enumerate(governors):
        cpufreq = root / f"sys/devices/system/cpu/cpu{i}/cpufreq"
        _write(cpufreq / "scaling_governor", gov + "\n")
        _write(cpufreq / "scaling_cur_freq", f"{cur_khz}\n")
        _write(cpufreq / "scaling_max_freq", f"{max_khz}\n")
    (root / "sys/devices/system/cpu/cpufreq").mkdir(parents=True)  # a non-cpuN entry that must be ignored
    for i, t in enumerate(temps):
        _write(root / f"sys/class/thermal/thermal_zone{i}/temp", f"{t}\n")
    _write(root / "sys/firmware/devicetree/base/model", "NXP i.MX8MPlus EVK board\x00")
    _write(root / "etc/os-release", 'NAME="Poky"\nPRETTY_NAME="NXP i.MX Release Distro 6.6-scarthgap"\n')
    return SystemRoots(proc=root / "proc", sys=root / "sys", etc=root / "etc")


def test_board_facts_of_an_imx8mp_name_the_core_soc_and_governor(tmp_path):
    facts = board_facts(_imx8mp_tree(tmp_path))
    assert facts.cpu_model == "Cortex-A53"
    assert facts.cores == 4
    assert facts.governor == "performance"
    assert facts.soc == "NXP i.MX8MPlus EVK board"
    assert facts.os == "NXP i.MX Release Distro 6.6-scarthgap"
    assert facts.memory_total_mb == round(3874476 / 1024, 1)
    assert facts.ray is not None and facts.python.count(".") == 2
    assert facts.simd == "asimd"  # the A53 has NEON but no int8 dot product (asimddp): int8 gains less there


def test_int8_relevant_x86_extensions_are_named_in_a_fixed_order(tmp_path):
    _write(tmp_path / "proc/cpuinfo", "processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu sse2 avx512_vnni avx2 "
                                      "avx512f fma\n\n")
    roots = SystemRoots(proc=tmp_path / "proc", sys=tmp_path / "sys", etc=tmp_path / "etc")
    assert simd_features(roots) == "avx2,avx512f,avx512_vnni"


def test_thermal_snapshot_reads_hottest_zone_mean_frequency_and_frequency_cap(tmp_path):
    snap = thermal_snapshot(_imx8mp_tree(tmp_path, cur_khz=1200000, max_khz=1600000, temps=(45000, 61500)))
    assert snap.temperature_c == 61.5
    assert snap.frequency_mhz == 1200.0
    assert snap.max_frequency_mhz == 1600.0


def test_machine_without_cpufreq_or_thermal_zones_reports_none_not_guesses(tmp_path):
    _write(tmp_path / "proc/cpuinfo", "processor\t: 0\nmodel name\t: AMD EPYC\n\n"
                                      "processor\t: 1\nmodel name\t: AMD EPYC\n")
    (tmp_path / "sys/devices/system/cpu/cpu0").mkdir(parents=True)
    roots = SystemRoots(proc=tmp_path / "proc", sys=tmp_path / "sys", etc=tmp_path / "etc")
    assert cpu_model(roots) == "AMD EPYC"
    assert governor(roots) is None
    snap = thermal_snapshot(roots)
    assert (snap.temperature_c, snap.frequency_mhz, snap.max_frequency_mhz) == (None, None, None)
    assert board_facts(roots).soc is None


def test_mixed_governors_are_all_reported(tmp_path):
    roots = _imx8mp_tree(tmp_path, governors=("performance", "schedutil", "performance", "performance"))
    assert governor(roots) == "performance/schedutil"
