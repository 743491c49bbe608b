"""The Ray runner: the same tree as the local runner, failures recorded, cancel and resume, the command line.

One local Ray (2 CPUs) serves the whole module; the runner reuses it and leaves it running, and the teardown
shuts it down and checks that no Ray process is left behind.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from core.errors import Cancelled, InvalidInput
from core.export.plan import plan_jobs
from core.export.ray_runner import actor_plan
from core.export.runner import run_export
from core.progress import CancelToken
from core.store import DatasetStore
from tests.conftest import PROJECT_ROOT
from tests.core.test_export import _recipe, _without_ledger
from tests.reliability.helpers import tree_digest

ray = pytest.importorskip("ray")


def _ray_children() -> list:
    import psutil

    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "ray" in " ".join(child.cmdline()).lower():
                found.append(child)
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray for the module; shut down (no process left) at the end."""
    assert not ray.is_initialized()
    context = ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
                       log_to_driver=False)  # fmt: skip
    yield context.address_info["gcs_address"]
    ray.shutdown()
    deadline = time.monotonic() + 15
    while _ray_children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _ray_children(), [p.cmdline()[:3] for p in _ray_children()]


def test_ray_gives_the_local_runners_tree_and_leaves_a_ray_it_did_not_start(ray_address, samples_copy, tmp_path):
    recipe = _recipe(samples_copy)
    local = run_export(recipe, tmp_path / "local")
    seen = []
    on_ray = run_export(recipe, tmp_path / "ray", runner="ray", workers=2, progress=lambda f, m="": seen.append(f))
    assert on_ray.made == local.made == 17 and not on_ray.failures
    assert _without_ledger(tree_digest(tmp_path / "ray")) == _without_ledger(tree_digest(tmp_path / "local"))
    fractions = [f for f in seen if f is not None]
    assert fractions == sorted(fractions) and len(fractions) >= 17 and fractions[-1] == 1.0
    assert ray.is_initialized()  # the module's Ray: reused, not shut down


def test_a_failing_job_on_ray_is_recorded_and_the_run_completes(ray_address, samples_copy, tmp_path):
    recipe = _recipe(samples_copy, generate=[{"backend": "recombine", "count": 2, "options": {"classes": ["dog"]}},
                                             {"backend": "composite", "count": 3}])  # fmt: skip
    summary = run_export(recipe, tmp_path / "out", runner="ray", workers=2)
    assert summary.made == 3 + 3 and len(summary.failures) == 2 and "no region" in summary.failures[0][1]
    export = json.loads((tmp_path / "out" / "export.json").read_text())
    assert export["samples"] == 6 and len(export["failures"]) == 2


def test_a_cancelled_ray_export_resumes_to_the_same_tree(ray_address, samples_copy, tmp_path):
    recipe = _recipe(samples_copy, generate=[{"backend": "composite", "count": 17}])
    run_export(recipe, tmp_path / "reference")
    token = CancelToken()

    def cancel_after_ten(fraction, message=""):
        if fraction is not None and round(fraction * 20) >= 10:
            token.cancel()

    with pytest.raises(Cancelled):
        run_export(recipe, tmp_path / "out", runner="ray", workers=2, progress=cancel_after_ten, cancel=token)
    resumed = run_export(recipe, tmp_path / "out", runner="ray", workers=2, resume=True)
    assert resumed.skipped == 10 and resumed.made == 10
    assert _without_ledger(tree_digest(tmp_path / "out")) == _without_ledger(tree_digest(tmp_path / "reference"))


def test_the_command_line_runs_on_ray_and_resumes_on_a_given_cluster(ray_address, samples_copy, tmp_path):
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(json.dumps(_recipe(samples_copy, generate=[{"backend": "composite", "count": 6}]).to_json()
                                      | {"quality": None, "review": None}))  # fmt: skip
    out = tmp_path / "out"
    command = [sys.executable, "-m", "core.cli", "export", str(recipe_path), "--out", str(out), "--runner", "ray",
               "--workers", "2"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "9 samples planned: 9 made now, 0 done before" in done.stdout
    first = _without_ledger(tree_digest(out))
    for name in ("gen1_composite_000001", "gen1_composite_000004"):  # lost files: those jobs are made again
        (out / "JPEGImages" / f"{name}.jpg").unlink()
    again = subprocess.run([*command, "--resume", "--address", ray_address], cwd=PROJECT_ROOT, capture_output=True,
                           text=True, env=env, timeout=180)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "9 samples planned: 2 made now, 7 done before" in again.stdout
    assert _without_ledger(tree_digest(out)) == first


def test_without_ray_the_runner_says_how_to_install_it(samples_copy, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(InvalidInput, match=r"pip install 'segstudio\[ray\]'"):
        run_export(_recipe(samples_copy, generate=[]), tmp_path / "out", runner="ray")


def test_actors_ask_for_a_gpu_only_for_diffusion_jobs_on_a_cluster_with_gpus(samples_copy):
    store = DatasetStore(samples_copy)
    composite = plan_jobs(_recipe(samples_copy, generate=[{"backend": "composite", "count": 4}]), store)
    diffusion = plan_jobs(_recipe(samples_copy, generate=[{"backend": "controlnet", "count": 4,
                                                          "model": "controlnet-seg"}]), store)  # fmt: skip
    assert actor_plan(composite, 4, {"CPU": 2.0, "GPU": 2.0}) == (2, {"num_cpus": 1, "num_gpus": 0})
    assert actor_plan(diffusion, 4, {"CPU": 16.0, "GPU": 2.0}) == (2, {"num_cpus": 1, "num_gpus": 1})
    assert actor_plan(diffusion, 3, {"CPU": 8.0}) == (3, {"num_cpus": 1, "num_gpus": 0})
    assert actor_plan(composite, 0, {"CPU": 8.0})[0] == 1


def test_gan_steps_on_ray_give_the_local_runners_maps(ray_address, tmp_path):
    """A label2image step on a recombine step's maps and a pair step: made by a Ray actor that loads the run."""
    pytest.importorskip("torch")
    from tests.core.generate.gan_runs import gan_toy_dataset, one_torch_thread, tiny_run

    data = gan_toy_dataset(tmp_path / "toy")
    l2i = tiny_run("label2image", data, tmp_path / "l2i", tmp_path / "ws")
    pair = tiny_run("pair", data, tmp_path / "pair", tmp_path / "ws")
    recipe = _recipe(data, real="exclude", formats=["voc"], split={"train": 1.0},
                     generate=[{"backend": "recombine", "count": 2, "options": {"classes": ["c2"], "min_area": 8}},
                               {"backend": "gan", "model": str(l2i), "count": 2, "options": {"maps_from": 1}},
                               {"backend": "gan", "model": str(pair), "count": 2}])  # fmt: skip
    with one_torch_thread():
        local = run_export(recipe, tmp_path / "local")
    on_ray = run_export(recipe, tmp_path / "ray", runner="ray", workers=1)
    assert on_ray.made == local.made == 6 and not on_ray.failures, on_ray.failures
    for name in ("gen2_gan_000000", "gen2_gan_000001", "gen3_gan_000000", "gen3_gan_000001"):
        for folder, ext in (("SegmentationClass", "png"), ("JPEGImages", "jpg")):
            ours, theirs = (tmp_path / run / folder / f"{name}.{ext}" for run in ("local", "ray"))
            assert ours.read_bytes() == theirs.read_bytes(), (name, folder)
    assert (tmp_path / "ray" / "SegmentationClass" / "gen2_gan_000001.png").read_bytes() == (
        tmp_path / "ray" / "SegmentationClass" / "gen1_recombine_000001.png").read_bytes()


def test_actors_ask_for_a_gpu_for_gan_jobs_on_a_cluster_with_gpus(samples_copy):
    from core.export.plan import Job

    job = Job("0" * 16, 0, 1, 0, "gan", "gen1_gan_000000", None, None, (0, 1, 0))
    assert actor_plan([job], 4, {"CPU": 16.0, "GPU": 2.0}) == (2, {"num_cpus": 1, "num_gpus": 1})
    assert actor_plan([job], 2, {"CPU": 8.0}) == (2, {"num_cpus": 1, "num_gpus": 0})
