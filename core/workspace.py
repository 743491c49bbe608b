"""Where the studio reads and writes: the dataset folder and the workspace for new outputs.

The bundled sample dataset is never modified in place: the studio works on a copy of it under the
workspace folder (``$SEGSTUDIO_WORKSPACE``, default ``~/.cache/segstudio/workspace``). A user's own
dataset is edited in place, every overwritten file kept under ``<dataset>/.segstudio/history/``, and
new samples and exports go to ``<dataset>/.segstudio/workspace`` unless another folder is given.
"""

from __future__ import annotations

import os
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


@dataclass(frozen=True)
class Workspace:
    """The folders a studio session may read and write.

    Attributes:
        dataset_root: the dataset being browsed and edited.
        output_root: where new samples, manifests and exports are written.
        source: the folder the user asked for (the bundled samples when none was given).
        is_copy: ``dataset_root`` is a working copy of ``source``.
    """

    dataset_root: Path
    output_root: Path
    source: Path
    is_copy: bool

    def allowed_paths(self) -> list[str]:
        """The folders the server may serve files from."""
        return sorted({str(self.dataset_root), str(self.output_root)})


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
        workspace: the workspace folder (see the module docstring for defaults).
        reset: recreate the working copy of the bundled samples (the old copy is moved aside).

    Raises:
        InvalidInput: the dataset folder does not exist.
    """
    source = Path(data).expanduser() if data is not None else BUNDLED_SAMPLES
    if not source.is_dir():
        raise InvalidInput(f"dataset folder {source} does not exist or is not a folder")
    source = source.resolve()
    if _is_bundled(source):
        root = Path(workspace).expanduser() if workspace else default_workspace_root()
        copy = root.resolve() / "samples"
        _copy_bundled(copy, reset)
        return Workspace(copy, root.resolve() / "outputs", source, True)
    output = Path(workspace).expanduser().resolve() if workspace else source / ".segstudio" / "workspace"
    return Workspace(source, output, source, False)
