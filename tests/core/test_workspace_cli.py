from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.cli import main, parse_auth
from core.errors import InvalidInput
from core.workspace import BUNDLED_SAMPLES, prepare_workspace
from tests.conftest import PROJECT_ROOT


def _tree(root):
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_bundled_samples_open_as_a_copy_and_are_never_modified(isolated_dirs):
    before = _tree(BUNDLED_SAMPLES)
    ws = prepare_workspace()
    assert ws.is_copy and ws.dataset_root == (isolated_dirs / "workspace" / "samples").resolve()
    assert _tree(ws.dataset_root) == before
    (ws.dataset_root / "JPEGImages" / "chelsea.jpg").write_bytes(b"edited")
    again = prepare_workspace()
    assert (again.dataset_root / "JPEGImages" / "chelsea.jpg").read_bytes() == b"edited"  # edits survive a relaunch
    assert _tree(BUNDLED_SAMPLES) == before
    assert str(ws.dataset_root) in ws.allowed_paths() and str(ws.output_root) in ws.allowed_paths()


def test_reset_moves_the_old_copy_aside(isolated_dirs):
    ws = prepare_workspace()
    (ws.dataset_root / "marker").write_text("mine")
    fresh = prepare_workspace(reset=True)
    assert not (fresh.dataset_root / "marker").exists()
    aside = [p for p in fresh.dataset_root.parent.iterdir() if p.name.startswith("samples.old-")]
    assert len(aside) == 1 and (aside[0] / "marker").read_text() == "mine"


def test_user_dataset_is_used_in_place_with_everything_derived_in_the_workspace(samples_copy, isolated_dirs):
    ws = prepare_workspace(samples_copy)
    assert not ws.is_copy and ws.dataset_root == samples_copy.resolve()
    workspace = (isolated_dirs / "workspace").resolve()
    assert ws.cache_root.parent == workspace / "datasets" and ws.cache_root.name.startswith("samples-")
    assert ws.output_root == ws.cache_root / "outputs"
    assert prepare_workspace(samples_copy).cache_root == ws.cache_root  # keyed by the dataset's path
    assert not (samples_copy / ".segstudio").exists()
    named = prepare_workspace(samples_copy, isolated_dirs / "mine")
    assert named.output_root == (isolated_dirs / "mine").resolve() and named.cache_root.parent.parent == named.output_root
    with pytest.raises(InvalidInput, match="does not exist"):
        prepare_workspace(samples_copy / "nope")


def test_auth_must_be_user_colon_password():
    assert parse_auth("ann:secret:x") == ("ann", "secret:x")
    assert parse_auth(None) is None
    for bad in ("ann", ":pw", "ann:"):
        with pytest.raises(InvalidInput, match="USER:PASS"):
            parse_auth(bad)


def test_info_command_summarises_the_dataset(capsys):
    assert main(["info", str(BUNDLED_SAMPLES), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layout"] == "voc" and summary["samples"] == 4 and summary["with_label_map"] == 3


def test_user_errors_exit_2_with_one_line_and_no_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "core.cli", "info", str(tmp_path / "missing")], cwd=PROJECT_ROOT,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.startswith("error: dataset folder") and "Traceback" not in out.stderr


def test_studio_help_lists_the_documented_options():
    out = subprocess.run(
        [sys.executable, "launch.py", "--help"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    for option in ("--data", "--host", "--port", "--share", "--auth", "--allow-downloads", "--workspace"):
        assert option in out.stdout
