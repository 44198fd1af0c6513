"""bf16 only where the hardware computes it: `precision = "bf16"` runs the matrix products in bf16
where the device has native bf16 arithmetic, and in fp32 (with one warning line, and the precision
used recorded in each run's metrics) where it has not.

Measured (issue 19) on a 2-core AMD EPYC with AVX2 only: the notebook's model trained at 69.7 s
per epoch in bf16 against 2.58 s in fp32, 27x slower.
The decision reads capability flags, never a timing, so the same machine always decides the same
way whatever its load: a CUDA GPU of compute capability 8.0 or newer (Ampere on), a CPU with
AVX512_BF16 or AMX-BF16 (x86) or the BF16 extension (ARM). Probed once per process and device type.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from dataclasses import replace
from pathlib import Path

import torch

from .group import GroupSettings

CPU_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # /proc/cpuinfo names (x86 flags, ARM features)


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether devices of this type ("cpu", "cuda") compute bf16 products natively."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8
    return _cpu_has_bf16()


def _cpu_has_bf16() -> bool:
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # torch's cpuinfo (private)
    try:
        if check is not None and check():
            return True
    except Exception:  # a private helper that changed: the flags below decide
        pass
    return bool(cpu_flags() & CPU_FLAGS)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; macOS sysctl for ARM's BF16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    if not flags and platform.system() == "Darwin" and platform.machine() == "arm64":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True,
                                 text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out == "1":
            flags.add("bf16")
    return flags


def effective(group: GroupSettings, device: torch.device) -> GroupSettings:
    """The group settings a model is built with: bf16 becomes fp32 where it is not native."""
    if group.precision == "bf16" and not native_bf16(device.type):
        return replace(group, precision="fp32")
    return group


def fallback_message(device: torch.device) -> str:
    """The one line said when a bf16 group trains in fp32 instead."""
    what = "this GPU (compute capability below 8.0)" if device.type == "cuda" else (
        "this CPU (no avx512_bf16, amx_bf16 or ARM bf16)")
    return (f"precision bf16: {what} has no native bf16, where bf16 matrix products run up to 27x "
            "slower than fp32; this group trains in fp32 (each run's metrics record "
            "precision_used)")
