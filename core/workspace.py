"""Where the studio reads and writes: the dataset folder and the workspace.

The dataset folder is written only when the user saves a sample (each overwritten file's previous
version kept under ``<dataset>/.segstudio/history/``). Everything SegStudio derives lives in the
workspace (``$SEGSTUDIO_WORKSPACE``, default ``~/.cache/segstudio/workspace``), keyed by the dataset's
absolute path: the index, thumbnails, drafts (``datasets/<name>-<hash>/``) and new outputs.

The bundled sample dataset is never modified at all: the studio works on a copy of it in the workspace.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidInput

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_SAMPLES = PROJECT_ROOT / "assets" / "samples"


def default_workspace_root() -> Path:
    """``$SEGSTUDIO_WORKSPACE`` or ``~/.cache/segstudio/workspace``."""
    raw = os.environ.get("SEGSTUDIO_WORKSPACE")
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "segstudio" / "workspace"


def dataset_cache_dir(dataset_root: str | Path, workspace_root: str | Path | None = None) -> Path:
    """The workspace folder of one dataset: ``<workspace>/datasets/<folder name>-<hash of its path>``."""
    root = Path(dataset_root).expanduser().resolve()
    base = Path(workspace_root).expanduser().resolve() if workspace_root else default_workspace_root()
    digest = hashlib.sha1(str(root).encode("utf-8")).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", root.name)[:40] or "dataset"
    return base / "datasets" / f"{name}-{digest}"


@dataclass(frozen=True)
class Workspace:
    """The folders a studio session may read and write.

    Attributes:
        dataset_root: the dataset being browsed and edited.
        output_root: where new samples, manifests and exports are written.
        source: the folder the user asked for (the bundled samples when none was given).
        is_copy: ``dataset_root`` is a working copy of ``source``.
        cache_root: the dataset's derived data (index, thumbnails, drafts), see :func:`dataset_cache_dir`.
    """

    dataset_root: Path
    output_root: Path
    source: Path
    is_copy: bool
    cache_root: Path

    def allowed_paths(self) -> list[str]:
        """The folders the server may serve files from."""
        return sorted({str(self.dataset_root), str(self.output_root), str(self.cache_root)})


def _is_bundled(path: Path) -> bool:
    return path.resolve() == BUNDLED_SAMPLES.resolve()


def _copy_bundled(target: Path, reset: bool) -> None:
    """Create (or, with ``reset``, recreate) the working copy of the bundled samples; an old copy is
    moved aside, never deleted."""
    if target.exists() and reset:
        aside = target.with_name(f"{target.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        target.rename(aside)
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.copying")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(BUNDLED_SAMPLES, staging)
    os.replace(staging, target)


def prepare_workspace(
    data: str | Path | None = None, workspace: str | Path | None = None, *, reset: bool = False
) -> Workspace:
    """Resolve the dataset and output folders for a studio or command-line session.

    Args:
        data: the dataset folder; ``None`` means the bundled samples.
        workspace: the workspace folder (see the module docstring for defaults). New outputs of a user's own
            dataset go straight into a workspace given here, else to ``<default>/datasets/<name>-<hash>/outputs``.
        reset: recreate the working copy of the bundled samples (the old copy is moved aside).

    Raises:
        InvalidInput: the dataset folder does not exist.
    """
    source = Path(data).expanduser() if data is not None else BUNDLED_SAMPLES
    if not source.is_dir():
        raise InvalidInput(f"dataset folder {source} does not exist or is not a folder")
    source = source.resolve()
    root = (Path(workspace).expanduser() if workspace else default_workspace_root()).resolve()
    if _is_bundled(source):
        copy = root / "samples"
        _copy_bundled(copy, reset)
        return Workspace(copy, root / "outputs", source, True, dataset_cache_dir(copy, root))
    cache = dataset_cache_dir(source, root)
    # a workspace named for this dataset holds its outputs directly; the shared default one keeps them apart
    output = root if workspace else cache / "outputs"
    return Workspace(source, output, source, False, cache)
