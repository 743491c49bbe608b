"""Shared fixtures: an offline, isolated environment and copies of the bundled samples."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Nothing in the test run may reach for the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLES = PROJECT_ROOT / "assets" / "samples"
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path_factory, monkeypatch):
    """Point the models folder, workspace and Hugging Face cache at empty temporary folders."""
    base = tmp_path_factory.mktemp("env")
    monkeypatch.setenv("SEGSTUDIO_MODELS", str(base / "models"))
    monkeypatch.setenv("SEGSTUDIO_WORKSPACE", str(base / "workspace"))
    monkeypatch.setenv("HF_HUB_CACHE", str(base / "hf"))
    monkeypatch.delenv("SEGSTUDIO_ALLOW_DOWNLOADS", raising=False)
    monkeypatch.delenv("SEGSTUDIO_MAX_PIXELS", raising=False)
    return base


@pytest.fixture
def samples_copy(tmp_path) -> Path:
    """A private copy of the bundled sample dataset that a test may modify."""
    target = tmp_path / "samples"
    shutil.copytree(SAMPLES, target)
    return target


def shared_set(name: str) -> Path:
    """A set from ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"evaluation data {path} is absent (it lives beside the project checkout, never in it)")
    return path
