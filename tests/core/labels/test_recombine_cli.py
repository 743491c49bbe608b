from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from core.errors import InvalidInput
from core.io.images import load_label_map
from core.labels.overlay import Placement
from core.labels.recombine import RecombineRequest, recombine, write_samples
from core.store import DatasetStore
from tests.conftest import PROJECT_ROOT


def _tree(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=PROJECT_ROOT, capture_output=True, text=True)


def test_recombine_command_is_byte_identical_for_a_seed(tmp_path, samples_copy):
    for out in ("a", "b"):
        done = _cli("recombine", str(samples_copy), "--mode", "overlay", "--class", "cat", "--count", "3", "--seed", "5",
                    "--out", str(tmp_path / out), "--protect", "person", "--ignore-border", "2")  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    other = _cli(
        "recombine", str(samples_copy), "--class", "cat", "--count", "3", "--seed", "6", "--out", str(tmp_path / "c")
    )
    assert other.returncode == 0 and _tree(tmp_path / "c") != _tree(tmp_path / "a")
    lines = [json.loads(line) for line in (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == ["overlay_000000", "overlay_000001", "overlay_000002"]
    assert all(line["target"] != "chelsea" and line["steps"][0]["region"]["sample"] == "chelsea" for line in lines)
    out = DatasetStore(tmp_path / "a")
    assert out.layout == "voc" and len(out) == 3
    for sample in out:
        label = load_label_map(sample.label_path, out.classes)
        assert 8 in label and set(np.unique(label)) <= {0, 8, 11, 15, 255}


def test_multi_and_reconstruct_modes(tmp_path, samples_copy):
    done = _cli("recombine", str(samples_copy), "--mode", "multi", "--class", "cat", "--class", "diningtable",
                "--count", "2", "--out", str(tmp_path / "m"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    lacking = {"astronaut": {8, 11}, "chelsea": {11}, "coffee": {8}}
    for raw in (tmp_path / "m" / "manifest.jsonl").read_text().splitlines():
        line = json.loads(raw)  # each target gets exactly the listed classes it lacks
        assert {s["region"]["class"] for s in line["steps"]} == lacking[line["target"]]
    done = _cli("recombine", str(samples_copy), "--mode", "reconstruct", "--class", "cat", "--band", "aeroplane:0.5",
                "--band", "diningtable:0.5", "--count", "1", "--out", str(tmp_path / "r"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    label = load_label_map(
        tmp_path / "r" / "SegmentationClass" / "reconstruct_000000.png", DatasetStore(tmp_path / "r").classes
    )
    assert label.shape == (512, 512) and set(np.unique(label)) <= {1, 8, 11}


def test_recombine_refuses_what_cannot_work(tmp_path, samples_copy):
    bad = _cli("recombine", str(samples_copy), "--class", "unicorn", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "unknown class 'unicorn'" in bad.stderr
    bad = _cli("recombine", str(samples_copy), "--class", "dog", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "no region" in bad.stderr
    ds = DatasetStore(samples_copy)
    samples = recombine(ds, RecombineRequest("overlay", ("cat",), 1, 0, Placement()))
    write_samples(tmp_path / "y", ds.classes, samples)
    with pytest.raises(InvalidInput, match="already holds a manifest"):
        write_samples(tmp_path / "y", ds.classes, samples)


def test_stats_and_plan_commands(tmp_path, samples_copy):
    stats = json.loads(_cli("stats", str(samples_copy), "--json").stdout)
    assert stats["maps"] == 3 and stats["imbalance_ratio_appearance"] == 1.0
    done = _cli("plan", str(samples_copy), "--n-balance", "2", "--out", str(tmp_path / "plan.json"))
    assert done.returncode == 0, done.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert (
        plan["n_balance"] == 2
        and plan["synthetic_samples"] == 3
        and set(plan["quotas"]) == {"cat", "diningtable", "person"}
    )
    assert all(plan["after"][c] >= 2 for c in ("cat", "diningtable", "person"))
