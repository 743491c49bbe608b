"""Train tab, "Does synthetic data help?": the experiment controller over a real background process: start with
sources made from the train split, watch the runs and the table grow, pause holds, cancel, resume to the end; form
errors name the bad value; the dataset folder is never written."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("torch")

from core.errors import InvalidInput  # noqa: E402
from core.train.runs import read_job  # noqa: E402
from studio.app import StudioConfig, build_app  # noqa: E402
from tests.reliability.helpers import tree_digest  # noqa: E402
from tests.studio.test_train_tab import kill_workers, wait_for  # noqa: E402

FORM = {"make": ["composite"], "folders": "", "ratios": "0,1", "augs": ["none"], "repeats": 2, "steps": 40,
        "size": 32, "width": 4, "depth": 2, "split": "6,3,3", "seed": 0, "device": "cpu"}  # fmt: skip


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory):
    from core.train.toy import write_toy_dataset

    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "toy", count=12, size=24, num_classes=3, seed=0)


@pytest.fixture
def experiments(toy_dataset, tmp_path):
    app = build_app(StudioConfig.for_data(toy_dataset, tmp_path / "ws"))
    controller = app.experiment
    yield controller
    kill_workers(controller.root)


def test_experiment_starts_shows_progress_pauses_cancels_and_resumes(experiments, toy_dataset):
    before = tree_digest(toy_dataset)
    name = experiments.start("exp-a", FORM)
    assert experiments.default_name() == "experiment-1"
    assert experiments.view(name).live
    # the first finished run shows in the status, the table and the plot
    view = wait_for(lambda: (v := experiments.view(name)).miou_plot and v, 240, "a finished run")
    assert "| real only | 0 | none |" in view.table and view.miou_plot.endswith(".png")
    assert "of 6 runs finished" in view.status  # 2 repeats x (real only, composite x1, composite only)
    # pause holds the worker: no run finishes and the job says paused
    experiments.control(name, "pause")
    wait_for(lambda: read_job(experiments.root / name).get("state") == "paused", what="paused")
    view = experiments.view(name)
    assert view.paused and view.status.startswith("**paused**")
    held = (experiments.root / name / "results.json").stat().st_mtime_ns
    time.sleep(1.5)
    assert (experiments.root / name / "results.json").stat().st_mtime_ns == held
    experiments.control(name, "run")
    experiments.control(name, "cancel")
    wait_for(lambda: read_job(experiments.root / name).get("state") == "cancelled", what="cancelled")
    view = experiments.view(name)
    assert not view.live and view.resumable
    with pytest.raises(InvalidInput, match="exp-a already exists"):
        experiments.start("exp-a", FORM)
    assert "continuing exp-a from run" in experiments.resume(name)
    wait_for(lambda: read_job(experiments.root / name).get("state") in ("finished", "failed"), what="finished")
    view = experiments.view(name)
    assert read_job(experiments.root / name)["state"] == "finished", view.status
    assert "6 of 6 runs finished" in view.status and not view.resumable
    assert "| composite x1 | 1 | none | 2 |" in view.table and view.gains_plot
    # the sources were made in the workspace, from the train split alone; the dataset folder is untouched
    assert (experiments.root / name / "synthetic" / "composite" / "manifest.jsonl").is_file()
    assert tree_digest(toy_dataset) == before
    assert [value for _, value in experiments.choices()] == ["exp-a"]


def test_form_errors_name_what_was_wrong(experiments, tmp_path):
    with pytest.raises(InvalidInput, match="synthetic folder .*nowhere does not exist"):
        experiments.start("exp-b", {**FORM, "folders": f"mine={tmp_path / 'nowhere'}"})
    with pytest.raises(InvalidInput, match="is not NAME=DIR"):
        experiments.start("exp-b", {**FORM, "folders": str(tmp_path)})
    with pytest.raises(InvalidInput, match="'x' is not a number"):
        experiments.start("exp-b", {**FORM, "ratios": "0,x"})
    with pytest.raises(InvalidInput, match="need synthetic sources"):
        experiments.start("exp-b", {**FORM, "make": []})
    with pytest.raises(InvalidInput, match="run name '../x' is not accepted"):
        experiments.start("../x", FORM)
    with pytest.raises(InvalidInput, match="no experiment is chosen"):
        experiments.resume(None)
    assert not (experiments.root / "exp-b").exists()
