"""Helpers of the fault suite: hashing a folder, running the command line, spoiling files."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> SHA-1 of every file under ``root`` (folders included as entries, so new empty
    folders count as changes too)."""
    out = {}
    for dirpath, _, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        out[f"{rel}/"] = "dir"
        for name in filenames:
            path = Path(dirpath) / name
            out[os.path.join(rel, name)] = hashlib.sha1(path.read_bytes()).hexdigest()
    return out


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``segstudio`` with these arguments in a subprocess (the caller's environment, offline)."""
    return subprocess.run([sys.executable, "-m", "core.cli", *args], capture_output=True, text=True, cwd=PROJECT_ROOT,
                          env={**os.environ, **(env or {})}, timeout=300)  # fmt: skip


def spoil(root: Path) -> dict[str, str]:
    """Add the kinds of bad file real folders hold to a copy of the bundled samples; returns sample id -> the
    problem it has. The four original samples stay good."""
    from PIL import Image

    images = root / "JPEGImages"
    labels = root / "SegmentationClass"
    good = (images / "chelsea.jpg").read_bytes()
    (images / "corrupt.jpg").write_bytes(good[:200] + bytes(range(256)) * 40)
    (images / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (images / "notimage.jpg").write_text("this is a text file with an image suffix")
    (images / "wrongsize.jpg").write_bytes(good)  # 451 x 300
    Image.new("P", (100, 80)).save(labels / "wrongsize.png")
    (images / "wrongvalues.jpg").write_bytes(good)
    values = Image.new("L", (451, 300), 0)
    values.paste(77, (10, 10, 60, 60))
    values.save(labels / "wrongvalues.png")
    (images / "badxml.jpg").write_bytes(good)
    (root / "Annotations" / "badxml.xml").write_text("<annotation><object><name>cat")
    return {"corrupt": "image", "truncated": "image", "notimage": "image", "wrongsize": "label map",
            "wrongvalues": "label map", "badxml": "boxes"}  # fmt: skip
