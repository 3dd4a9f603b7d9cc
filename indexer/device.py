"""Where and in which precision the model runs."""
from __future__ import annotations

import enum
import functools

import torch

from .config import settings
from .errors import CapabilityError


# torch's intra-op threads at import (OMP_NUM_THREADS, else the cores). Read once: a thread that starts later
# inherits whatever any thread last passed to torch.set_num_threads, and the model's streams set their own.
TORCH_THREADS = torch.get_num_threads()


class Precision(str, enum.Enum):
    AUTO = "auto"  # fp16 on CUDA, bf16 on CPUs with native bf16 (AMX / AVX512-BF16), else fp32
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    INT8 = "int8"  # CPUs with AMX-int8 or VNNI: the image tower's Linear layers in int8, the rest as auto picks


def pick_device(requested: str | None = None) -> torch.device:
    """cuda, then mps, then cpu; `requested` or TWINSIGHT_DEVICE overrides."""
    requested = requested or settings().device
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return frozenset(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return frozenset()


def cpu_has_fast_bf16() -> bool:
    """True where the CPU computes bf16 natively; elsewhere bf16 is emulated and slower than fp32."""
    return bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())


def cpu_has_fast_int8() -> bool:
    """True where the CPU has int8 dot-product instructions (AMX-int8 on Intel, VNNI on Intel and AMD) and torch
    has oneDNN's quantized kernels, which use them; without them int8 matrix products are no faster than fp32."""
    return bool({"amx_int8", "avx512_vnni", "avx_vnni"} & _cpu_flags()) and (
        "onednn" in torch.backends.quantized.supported_engines)


def pick_dtype(device: torch.device, precision: Precision | str | None = None) -> torch.dtype:
    """The weight dtype for `device`; TWINSIGHT_PRECISION=fp32 forces full precision everywhere. int8 gives the
    dtype of everything but the int8 Linear layers (auto's pick on this CPU), or CapabilityError where it cannot run."""
    precision = Precision(precision or settings().precision)
    if precision is Precision.INT8:
        if device.type != "cpu" or not cpu_has_fast_int8():
            raise CapabilityError(
                f"TWINSIGHT_PRECISION=int8 needs a CPU with AMX-int8 or VNNI and torch's oneDNN quantized kernels "
                f"(device: {device.type}, int8 CPU: {cpu_has_fast_int8()}); set TWINSIGHT_PRECISION=auto.")
        precision = Precision.AUTO
    if precision is Precision.AUTO:
        if device.type == "cuda":
            return torch.float16
        if device.type == "cpu" and cpu_has_fast_bf16():
            return torch.bfloat16
        return torch.float32
    return {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}[precision]


def model_streams(device: torch.device) -> tuple[int, int]:
    """(workers, threads each): how many batches run on the model at once, and with how many intra-op threads.

    On a CPU, two streams of half the threads beat one stream of all of them at every batch size measured (2
    cores: ViT-B-32 127 vs 85 images/s at batch 8, 135 vs 123 at 32; EfficientNet-Lite0 135-140 vs 90-102 at 8;
    docs/BENCHMARKS.md, 1): one op's threads wait for each other at every layer, two streams never do.
    GPUs get one stream. TWINSIGHT_MODEL_WORKERS overrides the number of streams.
    """
    threads = TORCH_THREADS
    workers = settings().model_workers or (min(2, threads) if device.type == "cpu" else 1)
    return workers, max(1, threads // workers)
