"""Which precision a run trains in: ``train.mixed_precision`` resolved for the device at hand.

    auto  bf16 where the device computes it natively (a CPU with bf16 instructions, a CUDA GPU that
          supports bf16), otherwise full precision
    no    full precision (fp32)
    bf16  bf16 autocast, and the frozen base weights stored in bf16
    fp16  fp16 autocast (accelerate's loss scaling on CUDA)

The resolved value (never ``auto``) is what a run's config holds, hashes and records, so a run in
another precision is another configuration, and a fp32 run hashes as it did before ``auto`` existed.
Adapters, the task head and the optimizer state stay fp32 in every precision.
"""
from __future__ import annotations

from pathlib import Path

SETTINGS = ("auto", "no", "bf16", "fp16")
#: the record's ``precision`` field for each resolved setting
RECORDED = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}
#: how the frozen base weights are stored (``variants.apply``'s ``base_dtype``; absent: as loaded, fp32).
#: fp16 keeps an fp32 base: without bf16's exponent range, fp16 weights are safe only with loss scaling
BASE_DTYPE = {"bf16": "bfloat16"}
#: /proc/cpuinfo flags of native bf16 arithmetic: x86 (AVX512-BF16, AMX-BF16) and Arm (FEAT_BF16)
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_supports_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has bf16 instructions (``cpuinfo``: the text of /proc/cpuinfo, read when None).
    oneDNN also runs bf16 on CPUs without them, by emulation, which is slower than fp32: not counted."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features") and set(value.split()) & set(CPU_BF16_FLAGS):
            return True
    return False


def resolve(setting: str, device: str, cpu_bf16: bool, cuda_bf16: bool) -> str:
    """``setting`` (one of SETTINGS) for ``device`` ("cpu" or "cuda"): ``auto`` becomes ``bf16`` where
    that device has native bf16 (``cpu_bf16``, ``cuda_bf16``), else ``no``; other settings stay."""
    if setting not in SETTINGS:
        raise ValueError(f"train.mixed_precision={setting!r} is not a precision; valid: {', '.join(SETTINGS)}")
    if setting != "auto":
        return setting
    return "bf16" if (cuda_bf16 if device == "cuda" else cpu_bf16) else "no"


def resolve_here(setting: str, device_setting: str | None) -> str:
    """``resolve`` for this machine: the device the training loop will use (``train.device``: auto picks
    CUDA when torch sees a GPU) and what it supports. Imports torch only for ``auto``."""
    if setting != "auto":
        return resolve(setting, "cpu", False, False)
    import torch

    cuda = device_setting != "cpu" and torch.cuda.is_available()
    return resolve(setting, "cuda" if cuda else "cpu", cpu_supports_bf16(),
                   cuda and torch.cuda.is_bf16_supported(including_emulation=False))
