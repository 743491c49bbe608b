"""The dataset store: one source of truth for a dataset's samples (see :mod:`core.store.store`)."""

from core.store.records import Dataset, Sample, natural_key
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
    "SkipReport", "natural_key", "open_store",
]  # fmt: skip
