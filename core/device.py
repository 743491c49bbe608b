"""Device and dtype policy: CUDA in fp16 when present, CPU in fp32 otherwise.

torch is imported only when a policy is asked for, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from core.errors import InvalidInput

ACCEPTED_DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DevicePolicy:
    """Where models run and in which precision.

    Attributes:
        device: ``"cuda"``, ``"cuda:N"`` or ``"cpu"``.
        dtype_name: ``"float16"`` on CUDA, ``"float32"`` on CPU (half precision on CPU is slow
            and unsupported by several kernels).
    """

    device: str
    dtype_name: str

    @property
    def torch_dtype(self):
        """The policy's dtype as a ``torch.dtype`` (imports torch)."""
        import torch

        return getattr(torch, self.dtype_name)

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")


def cuda_available() -> bool:
    """True when torch sees a usable CUDA device (imports torch)."""
    import torch

    return bool(torch.cuda.is_available())


def resolve_policy(requested: str | None = None) -> DevicePolicy:
    """Pick the device and dtype for model work.

    Args:
        requested: ``"auto"`` (default; also read from ``SEGSTUDIO_DEVICE``), ``"cpu"``, ``"cuda"``
            or ``"cuda:N"``.

    Raises:
        InvalidInput: for an unknown device name, or ``cuda`` asked for where none is available.
    """
    choice = (requested or os.environ.get("SEGSTUDIO_DEVICE") or "auto").strip().lower()
    base = choice.split(":", 1)[0]
    if base not in ACCEPTED_DEVICES:
        raise InvalidInput(f"unknown device {choice!r}; accepted: auto, cpu, cuda, cuda:N")
    if base == "cpu":
        return DevicePolicy("cpu", "float32")
    has_cuda = cuda_available()
    if base == "cuda" and not has_cuda:
        raise InvalidInput(f"device {choice!r} was asked for but torch sees no CUDA device; use 'cpu' or 'auto'")
    if has_cuda:
        return DevicePolicy(choice if base == "cuda" else "cuda", "float16")
    return DevicePolicy("cpu", "float32")


def quiet_nondeterminism_warnings() -> None:
    """Silence PyTorch's "... does not have a deterministic implementation" warnings (one per kernel call on CUDA
    with ``use_deterministic_algorithms(True, warn_only=True)``; a GPU run printed thousands). The CPU stays strict,
    where training is bitwise reproducible; on CUDA that is documented as not guaranteed."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*does not have a deterministic implementation.*", category=UserWarning)
