"""dlib's face ResNet (dlib_face_recognition_resnet_model_v1) run in torch, with dlib's own weights.

dlib-bin is built without BLAS, so its CNN took ~92 ms per 150x150 chip on this CPU (Intel Xeon, 1 thread), most of
a face pair's time. The same network in torch takes 12-16 ms and gives the same descriptors (largest difference
4e-7 on the dev faces; tests/test_face_net.py checks it against dlib). dlib still detects and aligns the faces.

The weights are read from the `.dat` file that `face-recognition-models` ships (dlib's serialization: a layer's
version string, then its fields; a tensor is a version, four dimensions and raw little-endian float32). The layers
come in forward order, input first, as dlib writes the innermost network first. The network (dlib's
dnn_face_recognition_ex.cpp): a 7x7/2 convolution, max-pool 3x3/2, then 14 residual blocks of two 3x3 convolutions
(32, 64, 128, 256, 256 channels; the first block of each new width halves the size, its shortcut an average pool),
a global average and a 128x256 linear map. Each convolution is followed by a per-channel affine (batch norm folded
at training time), which is folded into the convolution here.
"""
from __future__ import annotations

import contextlib
import functools
import re
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .device import TORCH_THREADS, pick_device
from .errors import ServiceError
from .face_worker import CHIP_SIZE, models_dir

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
WIDTHS = (32, 64, 128, 256, 256)  # residual blocks' channels, stage by stage
BLOCKS = (3, 4, 3, 3, 1)  # residual blocks per stage; each stage after the first starts by halving the size
CONVOLUTIONS = 1 + 2 * sum(BLOCKS)
_LAYER = re.compile(rb"\x01\x05con_4|\x01\x07affine_|\x01\x04fc_2|\x01\x15input_rgb_image_sized")


class FaceModelFileError(ServiceError):
    """The dlib model file is missing or not the network this module knows: reinstall face-recognition-models."""


class _Reader:
    """dlib's serialized values from a byte buffer: an integer is a control byte (its length in the low bits, 0x80
    for negative) and that many little-endian bytes; a float is a mantissa and a power of two."""

    def __init__(self, data: bytes, position: int):
        self.data, self.position = data, position

    def int(self) -> int:
        control = self.data[self.position]
        size = control & 0x0F
        value = int.from_bytes(self.data[self.position + 1:self.position + 1 + size], "little")
        self.position += 1 + size
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa = self.int()
        return mantissa * 2.0 ** self.int()

    def dims(self) -> tuple[int, ...]:
        self.int()  # the tensor's format version
        return tuple(self.int() for _ in range(4))

    def tensor(self) -> np.ndarray:
        count = int(np.prod(self.dims()))
        values = np.frombuffer(self.data, "<f4", count, self.position).astype(np.float32)
        self.position += 4 * count
        return values


def read_weights(path: str | Path) -> dict:
    """{"mean": (3,), "convs": [(weight, bias, stride, padding)], "affines": [(gamma, beta)], "linear": (256, 128)};
    FaceModelFileError when the file is not that network or is damaged."""
    data = Path(path).read_bytes()
    if b"loss_metric_" not in data[:32]:
        raise FaceModelFileError(f"{path} is not dlib's face ResNet (no loss_metric header). "
                                 "Reinstall it: pip install --force-reinstall face-recognition-models")
    try:
        weights = _parse(data, path)
    except (ValueError, IndexError) as exc:  # a value runs past the end: the file was cut short
        raise FaceModelFileError(f"{path} is damaged or incomplete ({exc}). Reinstall it: "
                                 "pip install --force-reinstall face-recognition-models") from None
    widths = [WIDTHS[0]] + [width for width, count in zip(WIDTHS, BLOCKS) for _ in range(2 * count)]
    found = {"convolution widths": [w.shape[0] for w, *_ in weights["convs"]], "affine layers": len(weights["affines"]),
             "linear map": "linear" in weights, "input mean": "mean" in weights}
    expected = {"convolution widths": widths, "affine layers": CONVOLUTIONS, "linear map": True, "input mean": True}
    wrong = [f"{key} {found[key]} (expected {expected[key]})" for key in found if found[key] != expected[key]]
    if wrong:
        raise FaceModelFileError(f"{path} is not dlib's face ResNet as this module knows it: {'; '.join(wrong)}. "
                                 "Reinstall it: pip install --force-reinstall face-recognition-models")
    return weights


def _parse(data: bytes, path: Path) -> dict:
    weights: dict = {"convs": [], "affines": []}
    for match in _LAYER.finditer(data):
        read, name = _Reader(data, match.end()), match.group()[2:]
        if name == b"con_4":
            params = read.tensor()
            filters, rows, cols = read.int(), read.int(), read.int()
            stride = (read.int(), read.int())
            padding = (read.int(), read.int())
            shape = read.dims()  # the filters' (out, in, rows, cols)
            size = int(np.prod(shape))
            if shape[0] != filters or shape[2:] != (rows, cols) or params.size != size + filters:
                raise FaceModelFileError(f"{path}: a convolution's sizes do not add up ({shape}, {params.size} values). "
                                         "Reinstall it: pip install --force-reinstall face-recognition-models")
            weights["convs"].append((params[:size].reshape(shape), params[size:], stride, padding))
        elif name == b"affine_":
            params = read.tensor()
            weights["affines"].append((params[:params.size // 2], params[params.size // 2:]))
        elif name == b"fc_2":
            outputs, inputs = read.int(), read.int()
            weights["linear"] = read.tensor().reshape(inputs, outputs)
        else:
            weights["mean"] = np.array([read.float() for _ in range(3)], np.float32)
    return weights


class FaceResNet(nn.Module):
    """The network, each convolution with its affine layer folded in. Input: (n, 150, 150, 3) uint8 RGB chips."""

    def __init__(self, weights: dict):
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(weights["mean"]).view(1, 3, 1, 1))
        self.convs = nn.ModuleList()
        for (weight, bias, stride, padding), (gamma, beta) in zip(weights["convs"], weights["affines"]):
            conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2:], stride=stride, padding=padding)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(weight * gamma[:, None, None, None]))
                conv.bias.copy_(torch.from_numpy(bias * gamma + beta))
            self.convs.append(conv)
        self.register_buffer("linear", torch.from_numpy(weights["linear"]))
        self.eval().requires_grad_(False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips.permute(0, 3, 1, 2).float() - self.mean) / 256.0  # dlib's input_rgb_image: (pixel - mean) / 256
        convs = iter(self.convs)
        x = F.max_pool2d(F.relu(next(convs)(x)), 3, 2)
        for stage, count in enumerate(BLOCKS):
            for block in range(count):
                down = stage > 0 and block == 0
                first, second = next(convs), next(convs)  # in file order
                y = second(F.relu(first(x)))
                x = F.relu(_add(y, F.avg_pool2d(x, 2, 2) if down else x))
        return x.mean(dim=(2, 3)) @ self.linear


def _add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger of each dimension, the smaller tensor taken as zero beyond its end
    (a halving block's shortcut has fewer channels, and can be a pixel larger than the convolved path)."""
    shape = [max(s, t) for s, t in zip(a.shape, b.shape)]

    def pad(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, shape[3] - x.shape[3], 0, shape[2] - x.shape[2], 0, shape[1] - x.shape[1]))

    return pad(a) + pad(b)


class FaceDescriber:
    """128-d descriptors of aligned chips; thread-safe (inference only). On the app's device (TWINSIGHT_DEVICE, else
    CUDA when there is one), always in float32: dlib's threshold of 0.6 was set on its float32 descriptors."""

    def __init__(self, path: str | Path | None = None, device: str | torch.device | None = None):
        path = Path(path) if path is not None else models_dir() / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"dlib's face model is missing ({path}): pip install face-recognition-models")
        self.device = pick_device(str(device) if device is not None else None)
        self.net = FaceResNet(read_weights(path)).to(self.device)

    def __call__(self, chips: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """(n, 128) float32 descriptors of (n, 150, 150, 3) uint8 chips."""
        if not len(chips):
            return np.zeros((0, 128), np.float32)
        batch = np.ascontiguousarray(np.stack(list(chips)) if isinstance(chips, list) else chips)
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"Face chips must be (n, {CHIP_SIZE}, {CHIP_SIZE}, 3) uint8, not {batch.shape} {batch.dtype}.")
        with self._precise(), torch.inference_mode():
            return self.net(torch.from_numpy(batch).to(self.device)).cpu().numpy()

    @contextlib.contextmanager
    def _precise(self):
        """One CPU thread for the pass; on CUDA, no TF32 (dlib's 0.6 was set on float32 descriptors).

        On a busy CPU each of the network's ~100 small ops waited for a preempted second OpenMP thread, and a pass
        took 0.8-1 s instead of 16 ms; a pair's two images are described on two threads at once, which keeps both
        cores busy anyway. torch.set_num_threads sets the calling thread's count and the count threads started later
        begin with, so it is put back to the process's own (TORCH_THREADS), not to whatever this thread had: with
        two calls overlapping, the second would otherwise read the first's 1 and leave it for every later thread."""
        if self.device.type == "cuda":
            cudnn = torch.backends.cudnn
            with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                             allow_tf32=False):
                yield
            return
        if torch.get_num_threads() == 1:
            yield
            return
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(TORCH_THREADS)


_lock = threading.Lock()


@functools.cache
def _shared() -> FaceDescriber:
    return FaceDescriber()


def face_describer() -> FaceDescriber:
    """The process's one describer (loaded on first use, ~0.2 s, 22 MB of weights)."""
    with _lock:
        return _shared()
