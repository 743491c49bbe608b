"""The dataset folder is written only when the user saves a sample: read-only commands and browsing leave it
byte-identical, and a read-only folder still browses, refines and exports elsewhere."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess

import pytest

from core.errors import InvalidInput
from core.types import Box
from studio.app import StudioConfig, build_app
from studio.tabs.dataset import class_filter_choices, gallery_page, render_sample
from tests.reliability.helpers import cli, spoil, tree_digest


def test_read_only_commands_leave_the_dataset_byte_identical(samples_copy, tmp_path):
    spoil(samples_copy)
    before = tree_digest(samples_copy)
    out = tmp_path / "out"
    commands = [
        ("info", str(samples_copy)), ("info", str(samples_copy), "--json"), ("stats", str(samples_copy), "--json"),
        ("plan", str(samples_copy), "--n-balance", "2", "--out", str(out / "plan.json")),
        ("recombine", str(samples_copy), "--class", "cat", "--count", "2", "--out", str(out / "r")),
        ("generate", str(samples_copy), "--backend", "composite", "--count", "2", "--out", str(out / "g")),
        ("priors", str(samples_copy), "--out", str(out / "p")),
        ("eval-boxes", str(samples_copy), "--method", "grabcut-fast", "--limit", "2"),
    ]  # fmt: skip
    for command in commands:
        done = cli(*command)
        assert done.returncode == 0, (command, done.stderr)
        assert tree_digest(samples_copy) == before, command


def test_browsing_and_editing_without_saving_leave_the_dataset_byte_identical(samples_copy):
    before = tree_digest(samples_copy)
    demo = build_app(StudioConfig.for_data(samples_copy))
    ctx = demo.studio_context
    gallery_page(ctx, [], 0)
    class_filter_choices(ctx)
    for sample_id in ctx.store.ids:
        render_sample(ctx, sample_id, 0.5, True)
    session = demo.annotate.session("ed", "chelsea")
    session.set_boxes([*(e.box for e in session.entries), Box(410, 10, 450, 100, 12)])
    demo.annotate.persist("ed", "chelsea", session)
    demo.labels.distribution()
    assert tree_digest(samples_copy) == before
    assert demo.annotate.store.drafts.load("ed", "chelsea") is not None  # the draft lives in the workspace


@contextlib.contextmanager
def read_only(folder):
    """Make ``folder`` read-only for this process: permission bits for a normal user; a read-only bind
    mount for root (which ignores permission bits). Skips when neither is possible."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for path in modes:
            path.chmod(modes[path] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            yield folder
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    view = folder.with_name(folder.name + "-ro")
    view.mkdir()
    bind = subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True)
    if bind.returncode != 0:
        view.rmdir()
        pytest.skip(f"running as root and cannot bind-mount read-only: {bind.stderr.decode().strip()}")
    try:
        remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr.decode().strip()}")
        yield view
    finally:
        subprocess.run(["umount", str(view)], capture_output=True)
        view.rmdir()


def test_a_read_only_dataset_browses_refines_and_exports_elsewhere(samples_copy, tmp_path):
    with read_only(samples_copy) as folder:
        with pytest.raises(OSError):
            (folder / "probe").write_text("x")
        demo = build_app(StudioConfig.for_data(folder))
        items, ids, _, _ = gallery_page(demo.studio_context, [], 0)
        assert len(items) == 4
        controller = demo.annotate
        session = controller.session("ed", "grace_hopper")
        session.refine()
        controller.persist("ed", "grace_hopper", session)
        with pytest.raises(InvalidInput, match="read-only"):
            controller.save(session, "grace_hopper")
        assert session.dirty and controller.store.drafts.load("ed", "grace_hopper") is not None  # nothing lost
        done = cli("generate", str(folder), "--backend", "composite", "--count", "2", "--out", str(tmp_path / "g"))
        assert done.returncode == 0, done.stderr
        assert len((tmp_path / "g" / "manifest.jsonl").read_text().splitlines()) == 2
    assert shutil.which("mount") or os.geteuid() != 0
