"""The path tracer behind synthetic renders: Mitsuba 3, chosen by measurement (README, "Renders from 3D meshes").

Blender's ``bpy`` wheel pins ``numpy<2`` and exists for Python 3.11 only, so it cannot live in the project's
environment; Mitsuba 3 installs beside numpy 2 from PyPI (``pip install -e ".[render]"``) and was faster per sample
on this CPU. Variants, best first:

- ``llvm_ad_rgb`` (vectorised CPU) when a system libLLVM 17 or newer is found: Dr.Jit picks the system's default
  LLVM, and Debian 12's LLVM 15 aborts the process on mesh loading, so :func:`_llvm_library` points Dr.Jit at the
  newest libLLVM >= 17 (Debian: ``apt install libllvm19``) through ``DRJIT_LIBLLVM_PATH``;
- ``scalar_rgb`` otherwise (about 2x slower per sample, no system dependency).

``SEGSTUDIO_RENDER_VARIANT`` forces one, e.g. ``cuda_ad_rgb`` on an NVIDIA GPU: not chosen automatically, since
it has never run here (no GPU could carry the renderer), and a variant that starts but fails while rendering would
skip every sample of a batch. :func:`load_mitsuba` imports and sets the variant once per process.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import threading

from core.errors import StudioError

INSTALL_HINT = ('pip install -e ".[render]" (Mitsuba 3); for the fast CPU variant also a libLLVM 17 or newer '
                "(Debian / Ubuntu: apt install libllvm19)")  # fmt: skip
MIN_LLVM = 17
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
_lock = threading.Lock()
_loaded: dict = {}


class RendererUnavailable(StudioError):
    """Mitsuba 3 (the renderer) is not installed, or no variant of it could start here."""


def renderer_installed() -> bool:
    """Whether the ``mitsuba`` package is importable (cheap: does not import it)."""
    return importlib.util.find_spec("mitsuba") is not None


def _llvm_library() -> str | None:
    """The newest system libLLVM of version >= :data:`MIN_LLVM`, or ``None``."""
    found = []
    for folder in _LIB_DIRS:
        for path in glob.glob(os.path.join(folder, "libLLVM*.so*")):
            match = re.search(r"libLLVM[-.]?(?:so\.)?(\d+)", os.path.basename(path))
            if match and int(match.group(1)) >= MIN_LLVM:
                found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def choose_variant() -> str:
    """The Mitsuba variant this machine should use (see the module docstring)."""
    forced = os.environ.get("SEGSTUDIO_RENDER_VARIANT")
    if forced:
        return forced
    if os.environ.get("DRJIT_LIBLLVM_PATH") or _llvm_library():
        return "llvm_ad_rgb"
    return "scalar_rgb"


def load_mitsuba():
    """``mitsuba`` with its variant set (once per process).

    Raises:
        RendererUnavailable: mitsuba is not installed, or the variant cannot start (names the variant and why).
    """
    with _lock:
        if "mi" in _loaded:
            return _loaded["mi"]
        if not renderer_installed():
            raise RendererUnavailable(f"3D rendering needs Mitsuba 3, which is not installed: {INSTALL_HINT}")
        variant = choose_variant()
        if variant.startswith("llvm") and not os.environ.get("DRJIT_LIBLLVM_PATH"):
            os.environ["DRJIT_LIBLLVM_PATH"] = _llvm_library() or ""
        import mitsuba as mi

        try:
            mi.set_variant(variant)
        except (ImportError, AttributeError, RuntimeError) as exc:
            if variant == "scalar_rgb":
                raise RendererUnavailable(f"Mitsuba's {variant} variant could not start: {exc}") from exc
            variant = "scalar_rgb"
            mi.set_variant(variant)
        _loaded.update(mi=mi, variant=variant)
        return mi


def active_variant() -> str | None:
    """The variant :func:`load_mitsuba` set, or ``None`` before it ran."""
    return _loaded.get("variant")


def renderer_version() -> str:
    from importlib.metadata import version

    return f"mitsuba {version('mitsuba')}, drjit {version('drjit')}"
