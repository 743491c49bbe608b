from __future__ import annotations

import os
import stat

import pytest

from core.errors import InvalidInput
from core.io.atomic import (
    atomic_write,
    atomic_write_text,
    previous_versions,
    restore_previous_version,
    write_with_history,
)


def test_atomic_write_replaces_content_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "out" / "file.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.txt"]


def test_a_failing_write_keeps_the_original_untouched(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("original")

    def broken(tmp):
        tmp.write_text("half written")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "original"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_new_files_get_normal_permissions_and_existing_modes_are_kept(tmp_path):
    path = tmp_path / "new.txt"
    atomic_write_text(path, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    os.chmod(path, 0o640)
    atomic_write_text(path, "y")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_history_keeps_every_previous_version_and_restore_brings_it_back(tmp_path):
    root = tmp_path / "dataset"
    path = root / "SegmentationClass" / "a.png"
    assert write_with_history(root, path, lambda t: t.write_bytes(b"v1")) is None
    kept = write_with_history(root, path, lambda t: t.write_bytes(b"v2"))
    write_with_history(root, path, lambda t: t.write_bytes(b"v3"))
    assert kept is not None and kept.read_bytes() == b"v1"
    assert kept.is_relative_to(root / ".segstudio" / "history" / "SegmentationClass" / "a.png")
    assert [p.read_bytes() for p in previous_versions(root, path)] == [b"v1", b"v2"]
    restore_previous_version(root, path)
    assert path.read_bytes() == b"v2"
    # the version that was replaced by the restore is itself kept, so nothing is lost
    assert b"v3" in [p.read_bytes() for p in previous_versions(root, path)]


def test_history_refuses_files_outside_the_dataset(tmp_path):
    with pytest.raises(InvalidInput, match="not inside the dataset folder"):
        write_with_history(tmp_path / "dataset", tmp_path / "elsewhere.png", lambda t: t.write_bytes(b"x"))


def test_restore_without_history_says_so(tmp_path):
    with pytest.raises(InvalidInput, match="no earlier version"):
        restore_previous_version(tmp_path, tmp_path / "a.png")
