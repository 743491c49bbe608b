"""What every tab shares: the config, the dataset store and the model registry.

In its own module so that tabs import it without importing ``studio.app`` (which imports the tabs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.models import ModelRegistry
from core.store import DatasetStore
from core.workspace import Workspace, prepare_workspace


@dataclass
class StudioConfig:
    """What the studio is opened on and how it is served.

    Attributes:
        workspace: the dataset and output folders (see :func:`core.workspace.prepare_workspace`).
        host, port, share, auth: passed to ``launch``.
        registry: the model registry (the process-wide default when ``None``).
    """

    workspace: Workspace
    host: str = "127.0.0.1"
    port: int | None = None
    share: bool = False
    auth: tuple[str, str] | None = None
    registry: ModelRegistry | None = None

    @classmethod
    def for_data(cls, data: str | Path | None = None, workspace: str | Path | None = None, **kwargs) -> StudioConfig:
        """A config for a dataset folder (``None``: the bundled samples, as a workspace copy)."""
        return cls(prepare_workspace(data, workspace), **kwargs)


@dataclass
class StudioContext:
    """The config, the dataset's store (the only way tabs read and write samples) and the registry.

    Tabs ask ``store`` on every event instead of keeping their own lists, so a save in one tab is seen by
    every other tab (and every browser) at once.
    """

    config: StudioConfig
    store: DatasetStore
    registry: ModelRegistry

    @property
    def dataset(self) -> DatasetStore:
        """The store (it offers the read interface of a ``Dataset``, always current)."""
        return self.store

    @property
    def classes(self):
        return self.store.classes
