"""The Train tab's controller over real background training processes: start, watch the log and grids, pause (the
step stops advancing), continue, cancel (a checkpoint is written), resume to more steps, a worker killed with
SIGKILL shows as stopped and resumes; the dataset folder is never written."""

from __future__ import annotations

import os
import signal
import time

import pytest

pytest.importorskip("torch")

from core.errors import InvalidInput  # noqa: E402
from core.train.runs import read_job  # noqa: E402
from studio.app import StudioConfig, build_app  # noqa: E402
from studio.tabs.train import loss_frame  # noqa: E402
from tests.reliability.helpers import tree_digest  # noqa: E402

TINY = {"kind": "label2image", "size": 16, "steps": 100000, "batch": 2, "width": 8, "seed": 0, "sample_every": 5,
        "checkpoint_every": 20, "device": "cpu"}  # fmt: skip


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory):
    from core.train.toy import write_toy_dataset

    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "toy", count=8, size=16, num_classes=3, seed=0)


@pytest.fixture
def train(toy_dataset, tmp_path):
    app = build_app(StudioConfig.for_data(toy_dataset, tmp_path / "ws"))
    controller = app.train
    yield controller
    kill_workers(controller.runs_dir)


def kill_workers(runs_dir) -> None:
    """Never leave a training worker behind, whatever state its run is listed in."""
    from core.train.jobs import _pid_alive

    for job in runs_dir.glob("*/job.json"):
        pid = int(read_job(job.parent).get("pid", 0) or 0)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def wait_for(predicate, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def logged_step(controller, name: str) -> int:
    info = next(r for r in controller.runs() if r.name == name)
    return info.logged_step


def state(controller, name: str) -> str:
    return next(r for r in controller.runs() if r.name == name).state


def test_start_watch_pause_continue_cancel_resume(train, toy_dataset):
    before = tree_digest(toy_dataset)
    name = train.start("toy-run", TINY)
    with pytest.raises(InvalidInput, match="already"):
        train.start("toy-run", TINY)
    wait_for(lambda: logged_step(train, name) >= 6, what="six logged steps")
    view = train.view(name)
    assert view.live and "training" in view.status and "ETA" in view.status
    assert {"generator", "labelmix"} <= set(view.losses["loss"]) and len(view.losses) >= 6
    assert view.grid is not None and view.grid.endswith(".png")

    train.control(name, "pause")
    wait_for(lambda: state(train, name) == "paused", what="the paused state")
    held = logged_step(train, name)
    time.sleep(1.5)
    assert logged_step(train, name) == held, "a paused run kept training"
    assert "paused" in train.view(name).status

    train.control(name, "run")
    wait_for(lambda: logged_step(train, name) > held + 2, what="training to go on after Continue")

    train.control(name, "cancel")
    wait_for(lambda: state(train, name) == "cancelled", what="the cancelled state")
    info = next(r for r in train.runs() if r.name == name)
    assert info.step == info.logged_step > held, "cancel writes a checkpoint of the step reached"
    with pytest.raises(InvalidInput, match="no training process"):
        train.control(name, "pause")

    target = info.step + 4
    assert f"from step {info.step}" in train.resume(name, target)
    wait_for(lambda: state(train, name) == "finished", what="the resumed run to finish")
    done = next(r for r in train.runs() if r.name == name)
    assert done.step == target and done.steps == target
    assert "finished" in train.view(name).status
    with pytest.raises(InvalidInput, match="more than"):
        train.resume(name, target)
    assert tree_digest(toy_dataset) == before, "training wrote into the dataset folder"
    assert str(done.path).startswith(str(train.runs_dir))


def test_a_killed_worker_shows_as_stopped_and_resumes(train):
    name = train.start("killed", {**TINY, "checkpoint_every": 3})
    wait_for(lambda: next(r for r in train.runs() if r.name == name).step >= 3, what="a first checkpoint")
    os.kill(int(read_job(train.runs_dir / name)["pid"]), signal.SIGKILL)
    wait_for(lambda: state(train, name) == "stopped", what="the stopped state")
    assert "gone" in train.view(name).status
    step = next(r for r in train.runs() if r.name == name).step
    train.resume(name, step + 2)
    wait_for(lambda: state(train, name) == "finished", what="the resumed run to finish")
    assert next(r for r in train.runs() if r.name == name).step == step + 2


def test_form_errors_name_the_bad_value(train):
    with pytest.raises(InvalidInput, match="run name"):
        train.start("../escape", TINY)
    with pytest.raises(InvalidInput, match="size 100"):
        train.start("bad-size", {**TINY, "size": 100})
    assert not (train.runs_dir / "bad-size").exists()
    with pytest.raises(InvalidInput, match="no run named"):
        train.control("nothing-here", "pause")


def test_loss_frame_thins_and_skips_non_finite():
    records = [{"step": i + 1, "losses": {"a": float(i), "b": float("nan") if i == 3 else 1.0}} for i in range(1000)]
    frame = loss_frame(records, max_points=100)
    assert list(frame.columns) == ["step", "loss", "value"]
    assert frame["step"].nunique() <= 101 and frame["step"].max() == 1000
    assert frame["value"].notna().all()


def test_evaluation_markdown_reads_the_eval_file_layout():
    from studio.tabs.train import evaluation_markdown

    doc = {"step": 200, "n": 64, "color": {"color_fd": 12.34, "mean_color_l2": 5.0, "missing": ["c2"],
                                           "classes": {"background": {"frechet": 3.0, "real_mean": [1, 2, 3],
                                                                      "generated_mean": [4, 5, 6]}}},
           "inception": {"status": "skipped", "reason": "put weights-inception.pth in /x"}}  # fmt: skip
    text = evaluation_markdown(doc)
    assert "step 200 (64 samples)" in text and "**12.3**" in text and "background: 3.0" in text
    assert "never generated: c2" in text and "skipped: put weights-inception.pth in /x" in text
    ok = evaluation_markdown({"step": 1, "inception": {"status": "ok", "fid": 41.5, "kid_mean": 0.02, "kid_std": 0.001}})
    assert "FID 41.5" in ok and "KID 0.0200" in ok
