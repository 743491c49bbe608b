"""Atomic writes and the history of overwritten files.

Every write goes to a temporary file in the destination folder and is moved into place with
``os.replace``, so a crash leaves either the old file or the new one, never half of one. When a
write replaces a file inside a dataset, the previous version is first copied to
``<dataset>/.segstudio/history/<relative path>/<UTC timestamp>__<name>`` so that it can be restored.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from core.errors import InvalidInput

HISTORY_DIR = Path(".segstudio") / "history"
STALE_TMP_S = 600  # a temporary file this old was left by a killed writer (a live one finishes in seconds)


def _default_file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open()`` would give a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_NEW_FILE_MODE = _default_file_mode()


def atomic_write(path: Path, write: Callable[[Path], None], *, durable: bool = True) -> None:
    """Call ``write(tmp_path)`` and move the temporary file onto ``path`` atomically.

    The temporary file lives in ``path``'s folder (so ``os.replace`` never crosses file systems)
    and is removed if ``write`` fails. With ``durable`` the data is flushed to disk before the rename
    (skip it only for files that are cheap to lose on a power cut, such as drafts and caches).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        # mkstemp creates 0600 files; give the result the mode the file had, or a new file's mode.
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else _NEW_FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(path: Path, max_age_s: float = STALE_TMP_S) -> list[Path]:
    """Delete this module's own temporary files for ``path`` (``.<name>.<random>.tmp``) that a killed
    writer left behind more than ``max_age_s`` seconds ago; returns what was removed."""
    removed = []
    now = time.time()
    for candidate in Path(path).parent.glob(f".{Path(path).name}.*.tmp"):
        try:
            if now - candidate.stat().st_mtime > max_age_s:
                candidate.unlink()
                removed.append(candidate)
        except OSError:
            continue
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str, *, durable: bool = True) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write` for ``durable``)."""
    atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"), durable=durable)


def _relative_to_root(root: Path, path: Path) -> Path:
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        raise InvalidInput(f"{path} is not inside the dataset folder {root}; refusing to write there") from None


def history_folder(root: Path, path: Path) -> Path:
    """The folder holding earlier versions of ``path`` (a file inside the dataset ``root``)."""
    return Path(root) / HISTORY_DIR / _relative_to_root(Path(root), Path(path))


def keep_previous_version(root: Path, path: Path) -> Path | None:
    """Copy the current ``path`` into its history folder before it is overwritten.

    Returns:
        the saved copy, or ``None`` when ``path`` does not exist yet.
    """
    path = Path(path)
    if not path.exists():
        return None
    folder = history_folder(root, path)
    folder.mkdir(parents=True, exist_ok=True)
    now_ns = time.time_ns()  # one reading: seconds and fraction from the same instant, so names sort in time order
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ns // 1_000_000_000)) + f"{now_ns % 1_000_000_000:09d}"
    target = folder / f"{stamp}__{path.name}"
    atomic_write(target, lambda tmp: shutil.copyfile(path, tmp))
    return target


def previous_versions(root: Path, path: Path) -> list[Path]:
    """Earlier versions of ``path``, oldest first."""
    folder = history_folder(root, path)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and "__" in p.name and not p.name.startswith("."))


def write_with_history(root: Path, path: Path, write: Callable[[Path], None]) -> Path | None:
    """Atomically (re)write ``path`` inside the dataset ``root``, keeping the previous version.

    Returns:
        where the previous version was kept, or ``None`` for a new file.
    """
    _relative_to_root(Path(root), Path(path))
    kept = keep_previous_version(root, path)
    atomic_write(Path(path), write)
    return kept


def restore_previous_version(root: Path, path: Path) -> Path:
    """Put back the newest earlier version of ``path`` (the current one goes to history first,
    so a restore can itself be undone).

    Returns:
        the history file that was restored.

    Raises:
        InvalidInput: when ``path`` has no earlier version.
    """
    versions = previous_versions(root, path)
    if not versions:
        raise InvalidInput(f"{path} has no earlier version in {history_folder(root, path)}")
    newest = versions[-1]
    data = newest.read_bytes()
    keep_previous_version(root, path)
    atomic_write_bytes(Path(path), data)
    newest.unlink()
    return newest
