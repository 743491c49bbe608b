"""Issue 14: the augmentation-value experiment (core.task.experiment) and ``segstudio experiment``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from core.errors import Cancelled, InvalidInput
from core.progress import CancelToken
from core.task.data import split_ids
from core.task.experiment import (
    ExperimentConfig,
    parse_numbers,
    parse_source,
    plan_rows,
    run_experiment,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny(data, synth, **kw) -> ExperimentConfig:
    base = {"synthetic": (("toy", str(synth)),), "ratios": (0, 1), "standard_aug": ("none", "flip"), "repeats": 1,
            "steps": 4, "size": 16, "split": (6, 3, 3), "batch": 4, "lr": 1e-2, "width": 8, "depth": 2,
            "val_every": 2, "device": "cpu"}  # fmt: skip
    base.update(kw)
    return ExperimentConfig(data=str(data), **base)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from core.train.toy import write_toy_dataset

    return write_toy_dataset(tmp_path_factory.mktemp("exp_synth") / "synth", count=5, size=24, num_classes=3, seed=7)


def test_rows_cover_baseline_sources_ratios_augs_and_synthetic_only(toy_root, synth_root):
    config = tiny(toy_root, synth_root, synthetic=(("a", str(synth_root)), ("b", str(synth_root))),
                  ratios=(0, 0.5, 2), repeats=2)  # fmt: skip
    rows = plan_rows(config)
    names = [r.name for r in rows]
    assert len(rows) == 2 * 2 * (1 + 2 * 2 + 2) and len(set(names)) == len(names)
    assert names[:7] == ["real_none_rep0", "a_x0.5_none_rep0", "a_x2_none_rep0", "b_x0.5_none_rep0",
                         "b_x2_none_rep0", "a_only_none_rep0", "b_only_none_rep0"]  # fmt: skip
    assert [r.repeat for r in rows] == [0] * 14 + [1] * 14  # whole repeats first
    assert {r.label for r in rows} == {"real only", "a x0.5", "a x2", "b x0.5", "b x2", "a only", "b only"}
    assert not any(r.kind == "only" for r in plan_rows(dataclasses.replace(config, synthetic_only=0)))


def test_experiment_writes_table_plots_json_and_resumes_after_cancel(toy_root, synth_root, tmp_path):
    config = tiny(toy_root, synth_root)
    out = tmp_path / "exp"
    token = CancelToken()
    messages = []

    def report(fraction, message=""):
        messages.append(message)
        if message.startswith("run 2/6") and "step 2/4" in message:
            token.cancel()

    with pytest.raises(Cancelled):
        run_experiment(config, out, report, token)
    assert any(m.startswith("run 1/6 (real only, aug none, repeat 0): step 4/4") for m in messages)
    assert [r["row"] for r in json.loads((out / "results.json").read_text())["runs"]] == ["real_none_rep0"]
    interrupted = out / "runs" / "toy_x1_none_rep0"
    assert json.loads((interrupted / "checkpoint.json").read_text())["step"] == 2
    assert not (interrupted / "result.json").exists()

    result = run_experiment(config, out)  # resumes: the finished row is skipped, the cut one continues
    assert result.skipped == ["real_none_rep0"] and len(result.trained) == 5
    doc = json.loads((out / "results.json").read_text())
    runs = {r["row"]: r for r in doc["runs"]}
    assert set(runs) == {f"{m}_{a}_rep0" for m in ("real", "toy_x1", "toy_only") for a in ("none", "flip")}
    assert runs["toy_x1_none_rep0"]["resumed_from"] == 2
    for r in runs.values():
        assert 0.0 <= r["test_miou"] <= 1.0 and set(r["test_iou"]) == {"background", "c1", "c2"}
        assert r["test_samples"] == 3 and r["wall_seconds"] > 0 and r["steps"] == 4
    assert (runs["real_none_rep0"]["train_real"], runs["real_none_rep0"]["train_synthetic"]) == (6, 0)
    assert (runs["toy_x1_flip_rep0"]["train_real"], runs["toy_x1_flip_rep0"]["train_synthetic"]) == (6, 6)
    assert (runs["toy_only_none_rep0"]["train_real"], runs["toy_only_none_rep0"]["train_synthetic"]) == (0, 6)
    summary = {(s["label"], s["aug"]): s for s in doc["summary"]}
    assert summary[("real only", "none")]["gain_mean"] is None
    gain = runs["toy_x1_none_rep0"]["test_miou"] - runs["real_none_rep0"]["test_miou"]
    assert summary[("toy x1", "none")]["gain_mean"] == pytest.approx(gain)
    assert doc["versions"]["albumentations"]

    # one fixed split: every run trained on the same real train / val samples, and no test sample entered a view
    split = json.loads((out / "split.json").read_text())
    assert split == split_ids(split["train"] + split["val"] + split["test"], (6, 3, 3), 0).to_json()
    for r in runs.values():
        run_split = json.loads((out / r["run_dir"] / "split.json").read_text())
        view = json.loads((out / "data" / Path(run_split["data"]).name / "view.json").read_text())
        train = [view["names"][n] for n in run_split["split"]["train"]]
        assert [view["names"][n] for n in run_split["split"]["val"]] == split["val"]
        assert train == split["train"] or all(i.startswith("toy::") for i in train)
        assert not set(view["names"].values()) & set(split["test"])

    table = (out / "table.md").read_text()
    for line in ("| real only | 0 | none | 1 |", "| toy x1 | 1 | flip | 1 |", "| toy only | only | none | 1 |"):
        assert line in table, table
    assert "(baseline)" in table and "| background | c1 | c2 |" in table
    for name in ("miou_vs_ratio.png", "class_gains.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC

    again = run_experiment(config, out)
    assert again.trained == [] and len(again.skipped) == 6
    with pytest.raises(InvalidInput, match="steps: 4 -> 5.*choose a new output folder"):
        run_experiment(tiny(toy_root, synth_root, steps=5), out)


def test_config_and_parsing_errors_name_the_bad_value(toy_root, synth_root):
    assert parse_source("comp=a/b=c") == ("comp", "a/b=c")
    assert parse_numbers("0, 0.5,2", "--ratios") == (0.0, 0.5, 2.0)
    with pytest.raises(InvalidInput, match="'comp' is not NAME=DIR"):
        parse_source("comp")
    with pytest.raises(InvalidInput, match="'x' is not a number"):
        parse_numbers("0,x", "--ratios")
    with pytest.raises(InvalidInput, match="ratio -0.5 is not accepted"):
        tiny(toy_root, synth_root, ratios=(0, -0.5))
    with pytest.raises(InvalidInput, match="name 'real' is not accepted"):
        tiny(toy_root, synth_root, synthetic=(("real", str(synth_root)),))
    with pytest.raises(InvalidInput, match="names must be unique"):
        tiny(toy_root, synth_root, synthetic=(("a", str(synth_root)), ("a", str(synth_root))))
    with pytest.raises(InvalidInput, match="ratios \\[1.0\\] need synthetic sources"):
        tiny(toy_root, synth_root, synthetic=())
    with pytest.raises(InvalidInput, match="augmentation 'rotate' is unknown"):
        tiny(toy_root, synth_root, standard_aug=("none", "rotate"))
    with pytest.raises(InvalidInput, match="batch must be at least 1, got 0"):
        tiny(toy_root, synth_root, batch=0)


def test_experiment_command(toy_root, synth_root, tmp_path, capsys):
    from core.cli import run
    from core.task.commands import add_parsers

    parser = argparse.ArgumentParser(prog="segstudio")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    base = ["experiment", "--data", str(toy_root), "--out", str(tmp_path / "exp")]

    def call(*extra):
        args = parser.parse_args(base + list(extra))
        return run(args.handler, args), capsys.readouterr()

    code, out = call("--synthetic", str(synth_root))
    assert code == 2 and f"synthetic source '{synth_root}' is not NAME=DIR" in out.err and out.err.count("\n") == 1
    code, out = call("--synthetic", f"toy={tmp_path / 'missing'}")
    assert code == 2 and f"folder {tmp_path / 'missing'} does not exist" in out.err
    code, out = call("--synthetic", f"toy={synth_root}", "--ratios", "0,-1")
    assert code == 2 and "ratio -1.0 is not accepted" in out.err
    code, out = call("--synthetic", f"toy={synth_root}", "--standard-aug", "none,blur")
    assert code == 2 and "augmentation 'blur' is unknown" in out.err
    code, out = call("--ratios", "0", "--standard-aug", "none", "--repeats", "1", "--steps", "2", "--size", "16",
                     "--split", "6,3,3", "--width", "8", "--depth", "2", "--batch", "2", "--device", "cpu")  # fmt: skip
    assert code == 0, out.err
    assert "| real only | 0 | none | 1 |" in out.out and "1 runs trained, 0 already finished" in out.out
    assert (tmp_path / "exp" / "runs" / "real_none_rep0" / "result.json").is_file()


def test_albumentations_policies_depend_only_on_seed_step_and_index():
    import numpy as np

    from core.task.data import AUGMENTATIONS, augment_batch, parse_augmentation

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 20, 20, 3), dtype=np.uint8)
    labels = rng.choice(np.array([0, 2, 255], np.uint8), (5, 20, 20))
    assert parse_augmentation("full") == ("flip", "scale", "color")
    assert parse_augmentation("color+flip") == ("flip", "color")
    for policy in AUGMENTATIONS[1:]:
        whole = augment_batch(images, labels, policy, np.random.default_rng([3, 7, 1]))
        head = augment_batch(images[:2], labels[:2], policy, np.random.default_rng([3, 7, 1]))
        assert np.array_equal(whole[0][:2], head[0]) and np.array_equal(whole[1][:2], head[1]), policy
        other = augment_batch(images, labels, policy, np.random.default_rng([3, 8, 1]))
        assert not np.array_equal(whole[0], other[0]), policy
        if "color" not in parse_augmentation(policy):  # geometry only: where the image was padded (0), label 255
            padded = (whole[0] == 0).all(-1)
            assert (whole[1][padded] == 255).all(), policy
    colour = augment_batch(images, labels, "color", np.random.default_rng(1))
    assert np.array_equal(colour[1], labels) and not np.array_equal(colour[0], images)


def _source_ids(record: dict) -> set[str]:
    """Every dataset sample id a composite / overlay manifest record names (background, target, pasted regions)."""
    ids = {record[k] for k in ("background", "target") if isinstance(record.get(k), str)}

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("sample"), str):
                ids.add(node["sample"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(record.get("objects", [])), walk(record.get("steps", [])), walk(record.get("pasted", []))
    return ids


def test_experiment_makes_its_sources_from_the_train_split_alone(toy_root, tmp_path):
    config = tiny(toy_root, None, synthetic=(), make_sources=("composite", "recombined"), ratios=(0, 1),
                  standard_aug=("none",), synthetic_only=0)  # fmt: skip
    out = tmp_path / "exp"
    result = run_experiment(config, out)
    split = json.loads((out / "split.json").read_text())
    view = out / "synthetic" / "train_view"
    assert sorted(p.stem for p in (view / "JPEGImages").iterdir()) == sorted(split["train"])
    held_out = set(split["val"]) | set(split["test"])
    for kind in ("composite", "recombined"):
        records = [json.loads(line) for line in (out / "synthetic" / kind / "manifest.jsonl").read_text().splitlines()]
        assert len(records) == len(split["train"])  # round(max ratio 1 x n_train)
        used = set().union(*(_source_ids(r) for r in records))
        assert used and used <= set(split["train"]) and not used & held_out, (kind, used & held_out)
    assert {r["label"] for r in result.runs} == {"real only", "composite x1", "recombined x1"}
    assert all(r["train_synthetic"] == len(split["train"]) for r in result.runs if r["kind"] == "mix")
    # a rerun keeps the made sources (and every finished row)
    stamp = (out / "synthetic" / "composite" / "manifest.jsonl").stat().st_mtime_ns
    again = run_experiment(config, out)
    assert again.trained == [] and (out / "synthetic" / "composite" / "manifest.jsonl").stat().st_mtime_ns == stamp


def test_sources_to_make_are_checked(toy_root, synth_root):
    with pytest.raises(InvalidInput, match="source kind 'gan' cannot be made by the experiment; accepted: composite"):
        tiny(toy_root, synth_root, make_sources=("gan",))
    with pytest.raises(InvalidInput, match="'composite' is also a source the experiment makes"):
        tiny(toy_root, synth_root, synthetic=(("composite", str(synth_root)),), make_sources=("composite",))
    assert tiny(toy_root, None, synthetic=(), make_sources=("mined",)).make_sources == ("mined",)


def _wait_state(folder, states, timeout=240.0):
    import time

    from core.train.jobs import job_state

    end = time.time() + timeout
    while time.time() < end:
        state, message = job_state(folder)
        if state in states:
            return state, message
        time.sleep(0.2)
    raise AssertionError(f"{folder} did not reach {states}: {job_state(folder)}")


def test_experiment_runs_as_a_background_job_that_cancels_and_resumes(toy_root, synth_root, tmp_path):
    from core.task.experiment import experiment_info, experiments_root, list_experiments
    from core.train.jobs import request, start_experiment_job

    config = tiny(toy_root, synth_root, standard_aug=("none",), repeats=2, steps=30, val_every=10)
    folder = experiments_root(tmp_path / "cache") / "exp-1"
    start_experiment_job(config, folder)
    with pytest.raises(InvalidInput, match="exp-1 is already running"):
        start_experiment_job(config, folder)
    _wait_state(folder, ("running",))
    request(folder, "cancel")
    state, message = _wait_state(folder, ("cancelled", "finished", "failed"))
    assert state == "cancelled", message
    info = experiment_info(folder)
    assert info.total_runs == 2 * 3 and info.finished_runs < info.total_runs and info.state == "cancelled"
    with pytest.raises(InvalidInput, match="exp-1 already exists; choose another name or resume it"):
        start_experiment_job(config, folder)
    start_experiment_job(config, folder, resume=True)
    state, message = _wait_state(folder, ("cancelled", "finished", "failed"))
    assert state == "finished", message
    info = experiment_info(folder)
    assert info.finished_runs == info.total_runs == 6
    assert "| real only | 0 | none | 2 |" in (folder / "table.md").read_text()
    assert [e.name for e in list_experiments(folder.parent)] == ["exp-1"]
    job = json.loads((folder / "job.json").read_text())
    assert job["step"] == job["steps"] == 6
