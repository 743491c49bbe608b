"""The dataset store: one source of truth for a dataset's samples (see :mod:`core.store.store`)."""

from core.store.records import Dataset, Sample, natural_key
from core.store.status import LABELS as STATUS_LABELS
from core.store.status import STATUSES, StatusMark, normalise_status
from core.store.store import (
    CONFLICT_CHOICES,
    DatasetStore,
    Problem,
    SampleData,
    SaveConflict,
    SaveResult,
    SkipReport,
    open_store,
)

__all__ = [
    "CONFLICT_CHOICES", "Dataset", "DatasetStore", "Problem", "Sample", "SampleData", "SaveConflict", "SaveResult",
    "SkipReport", "STATUSES", "STATUS_LABELS", "StatusMark", "natural_key", "normalise_status", "open_store",
]  # fmt: skip
