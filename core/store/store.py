"""``DatasetStore``: the one way to list, read and write a dataset's samples.

One store per opened dataset per process (:func:`open_store`). Everything that reads samples (the studio's
tabs, the command line, batch jobs) asks the store on every use, so a save made anywhere is seen
everywhere at once, and changes made on disk by another program are picked up on the next listing.

Guarantees:

- **Revisions.** Every sample has a revision (a hash of its label map's and boxes' content and of its image
  file's identity). A save names the revision it started from; when the sample has moved on since, the
  save is refused with :class:`SaveConflict`, whose choices are ``reload`` (take theirs), ``overwrite``
  (theirs kept in the history) and ``copy`` (save mine as a new sample).
- **Only the user's saves touch the dataset folder.** Indexes, thumbnails, drafts and problem records live
  in the workspace (:func:`core.workspace.dataset_cache_dir`). Saving an unchanged sample writes nothing.
- **Bad files are isolated.** A sample whose image cannot be read is reported (``problems``) and skipped by
  batch operations; one whose label map is bad (unreadable, wrong size, unknown values) opens with its
  image and a note, and counts as unlabelled.
- **Unlabelled is not background.** Only samples with a usable label map are ``labelled``.
- **Status.** Each sample is ``unlabelled``, ``draft``, ``done`` or ``needs_review`` (:meth:`DatasetStore.status`,
  :meth:`~DatasetStore.statuses`, :meth:`~DatasetStore.set_status`; see :mod:`core.store.status`): derived from
  the files and drafts, with explicit marks kept in the workspace.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import ImageLoadError, InvalidInput, StudioError
from core.io import voc
from core.io.images import image_size, load_image, thumbnail
from core.store import layouts
from core.store.drafts import DraftStore
from core.store.index import FactIndex, file_stamp
from core.store.records import Dataset, Sample
from core.store.status import (
    DONE,
    DRAFT,
    EXPLICIT,
    LABELS,
    STATUSES,
    UNLABELLED,
    StatusBook,
    StatusMark,
    normalise_status,
)
from core.types import Box, ClassSet
from core.workspace import dataset_cache_dir

try:  # POSIX: a lock file serialises saves across processes (the studio and a command line, say)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

CONFLICT_CHOICES = ("reload", "overwrite", "copy")
_READ_ONLY_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS)
RESCAN_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Problem:
    """A file that could not be used, and why (the file itself is never changed)."""

    path: str
    reason: str
    sample_id: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason

    def to_json(self) -> dict:
        return {"path": self.path, "reason": self.reason, "sample": self.sample_id}

    @classmethod
    def from_message(cls, message: str) -> Problem:
        """Split a reader's ``"<path>: <reason>"`` message."""
        path, sep, reason = message.partition(": ")
        return cls(path, reason) if sep and ("/" in path or "\\" in path) else cls("", message)


class SaveConflict(StudioError):
    """A save based on an older revision of a sample that has changed since.

    Attributes:
        sample_id, base_revision, current_revision: what was edited, from which revision, and what is on
            disk now.
        choices: ``reload`` (discard mine, take theirs), ``overwrite`` (mine replaces theirs; theirs is
            kept in the dataset's history) or ``copy`` (save mine as a new sample beside theirs).
    """

    def __init__(self, sample_id: str, base_revision: str, current_revision: str):
        self.sample_id = sample_id
        self.base_revision = base_revision
        self.current_revision = current_revision
        self.choices = CONFLICT_CHOICES
        super().__init__(
            f"{sample_id!r} was changed by someone else after you opened it (revision {base_revision} -> "
            f"{current_revision}); nothing was written. Choose: reload theirs, overwrite (theirs is kept in "
            "history), or save yours as a copy."
        )


@dataclass
class SampleData:
    """One sample's arrays.

    Attributes:
        image: ``H x W x 3 uint8`` RGB.
        label_map: ``H x W uint8`` class indices, or ``None`` when the sample has no usable label map.
        revision: the revision these arrays belong to.
        label_problem: why an existing label map could not be used (``None`` when fine or absent).
    """

    sample: Sample
    image: np.ndarray
    label_map: np.ndarray | None
    revision: str
    label_problem: str | None = None

    @property
    def id(self) -> str:
        return self.sample.id


@dataclass
class SaveResult:
    """What a save did.

    Attributes:
        sample_id: the sample written (a new id when saved as a copy).
        revision: its revision after the save.
        written: files written in the dataset folder (empty when nothing changed).
        kept: history copies of the files they replaced.
        resolution: ``saved``, ``unchanged``, ``overwrote`` (a conflict resolved by overwriting) or ``copied``.
    """

    sample_id: str
    revision: str
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    resolution: str = "saved"

    @property
    def changed(self) -> bool:
        return bool(self.written)


@dataclass
class SkipReport:
    """The samples a batch operation skipped, and why (also recorded in the store's problems)."""

    skipped: list[Problem] = field(default_factory=list)

    def add(self, problem: Problem) -> None:
        self.skipped.append(problem)

    def __len__(self) -> int:
        return len(self.skipped)

    def summary(self, limit: int = 3) -> str:
        """``""`` or ``"2 samples skipped (a: reason; b: reason)"``."""
        if not self.skipped:
            return ""
        shown = "; ".join(f"{p.sample_id or p.path}: {p.reason}" for p in self.skipped[:limit])
        more = f"; and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
        return f"{len(self.skipped)} sample{'s' if len(self.skipped) != 1 else ''} skipped ({shown}{more})"


def _sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


class DatasetStore:
    """The samples of one dataset folder, their revisions, problems, caches and drafts.

    It offers the read interface of :class:`core.store.records.Dataset` (``root``, ``layout``, ``classes``,
    ``samples``, ``ids``, ``get``, ``len``, iteration), always current, plus reading arrays, saving with
    conflict checks, and the workspace caches.

    Args:
        root: the dataset folder.
        cache_dir: its workspace folder (default :func:`core.workspace.dataset_cache_dir`).
        layout: ``voc``, ``boxes_csv`` or ``images``; detected when ``None``.

    Raises:
        InvalidInput: the folder does not exist or holds no image.
    """

    def __init__(self, root: str | Path, *, cache_dir: Path | None = None, layout: str | None = None):
        self.root = Path(root).expanduser().resolve()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else dataset_cache_dir(self.root)
        self._layout_choice = layout
        self._lock = threading.RLock()
        self._dataset = layouts.open_dataset(self.root, layout)
        self._boxes_stamps = self._box_file_stamps(self._dataset)
        self._signature = self._folder_signature()
        self._checked_at = time.monotonic()
        self._runtime_problems: dict[str, tuple[str | None, Problem]] = {}
        self._shas: dict[str, tuple[str, str]] = {}
        self.index = FactIndex(self.cache_dir / "index.sqlite")
        self.drafts = DraftStore(self.cache_dir / "drafts")
        self.status_book = StatusBook(self.cache_dir / "status.sqlite")
        self._status_seen = self.status_book.data_version()
        self.version = 0

    # ---- the Dataset read interface, always current -----------------------------------------

    @property
    def layout(self) -> str:
        return self._dataset.layout

    @property
    def classes(self) -> ClassSet:
        return self._dataset.classes

    @property
    def samples(self) -> list[Sample]:
        return self.dataset.samples

    @property
    def ids(self) -> list[str]:
        return self.dataset.ids

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.dataset.samples)

    @property
    def dataset(self) -> Dataset:
        """The current listing (re-read when the folder changed; checked at most once a second)."""
        self.refresh()
        return self._dataset

    def get(self, sample_id: str) -> Sample:
        """The sample's current record (its annotation files re-checked now).

        Raises:
            InvalidInput: naming the unknown id.
        """
        self.refresh()
        sample = self._dataset.get(sample_id)
        if self._annotations_changed(sample):
            sample = self._reload_sample(sample)
        return sample

    def _reload_sample(self, sample: Sample) -> Sample:
        """Parse one sample's annotation files again (another program changed them)."""
        with self._lock:
            stamp = layouts.annotation_stamp(self._dataset, sample)
            problems: list[str] = []
            fresh = layouts.reload_sample(self._dataset, sample, problems)
            position = self._dataset.samples.index(sample)
            self._dataset.samples[position] = fresh
            self._dataset._by_id[fresh.id] = fresh
            self._dataset.problems.extend(p for p in problems if p not in self._dataset.problems)
            self._boxes_stamps[sample.id] = stamp
            self.version += 1
            return fresh

    def filter_by_classes(self, class_indices: Iterable[int], label_classes: dict[str, set[int]] | None = None):
        return self.dataset.filter_by_classes(class_indices, label_classes)

    # ---- noticing changes ---------------------------------------------------------------------

    def _folder_signature(self) -> tuple:
        """Stamps of the folders and index files whose change means the listing must be re-read."""
        root = self.root
        watched = layouts.watched_paths(self._dataset)
        if watched is not None:  # another tool's layout: the folders and index files it names
            paths = list(watched)
        elif self._dataset.layout == "voc":
            paths = [root, root / voc.IMAGE_DIR, root / voc.LABEL_DIR, root / voc.ANNOTATION_DIR,
                     root / voc.IMAGESETS_DIR / "Segmentation", root / voc.IMAGESETS_DIR / "Main"]  # fmt: skip
        elif self._dataset.layout == "boxes_csv":
            paths = [root, root / layouts.BOXES_CSV, *(p for p in root.iterdir() if p.is_dir())]
        else:
            paths = [Path(dirpath) for dirpath, dirnames, _ in os.walk(root) if not _hidden(Path(dirpath), root)]
        paths.append(root / layouts.CLASSES_FILE)
        return tuple(_dir_stamp(p) for p in paths)

    def _annotations_changed(self, sample: Sample) -> bool:
        """Whether the sample's label map or box file appeared, vanished or changed since the listing."""
        if self._dataset.layout == "boxes_csv":
            return False  # boxes.csv and the masks folder are part of the folder signature
        expected_label = sample.label_path is not None
        label_path = sample.label_path or (self.root / voc.LABEL_DIR / f"{sample.id}.png")
        if label_path.is_file() != expected_label:
            return True
        return layouts.annotation_stamp(self._dataset, sample) != self._boxes_stamps.get(sample.id)

    def refresh(self, force: bool = False, max_age: float = RESCAN_INTERVAL_S) -> bool:
        """Re-read the listing if the folder changed (checked at most every ``max_age`` seconds unless
        ``force``). Statuses marked by another process also count as a change of ``version``.

        Returns:
            whether the listing changed.
        """
        now = time.monotonic()
        with self._lock:
            if not force and now - self._checked_at < max_age:
                return False
            self._checked_at = now
            seen = self.status_book.data_version()
            if seen != self._status_seen:  # another process marked a sample
                self._status_seen = seen
                self.version += 1
            signature = self._folder_signature()
            if not force and signature == self._signature:
                return False
            stamps_before = self._box_file_stamps(self._dataset)
            dataset = layouts.open_dataset(self.root, self._layout_choice or self._dataset.layout)
            changed = _listing_key(dataset) != _listing_key(self._dataset)
            # stamps taken before parsing: a file changing meanwhile is parsed again on its next use
            self._boxes_stamps = {**self._box_file_stamps(dataset), **stamps_before}
            self._dataset, self._signature = dataset, signature
            self.version += 1
            return changed

    def _box_file_stamps(self, dataset: Dataset) -> dict[str, str | None]:
        if dataset.layout == "boxes_csv":
            return {}
        return {s.id: layouts.annotation_stamp(dataset, s) for s in dataset.samples}

    # ---- revisions ----------------------------------------------------------------------------

    def _content_sha(self, path: Path | None) -> str:
        """SHA-1 of a file's bytes, memoised by its stamp; ``"-"`` when it does not exist."""
        if path is None:
            return "-"
        stamp = file_stamp(path)
        if stamp is None:
            return "-"
        key = str(path)
        with self._lock:
            known = self._shas.get(key)
        if known and known[0] == stamp:
            return known[1]
        try:
            digest = _sha(path.read_bytes())
        except OSError:
            return "unreadable"
        with self._lock:
            self._shas[key] = (stamp, digest)
        return digest

    def revision(self, sample_id: str) -> str:
        """The sample's current revision: 16 hex digits over its label map's and boxes' content and its
        image file's identity."""
        sample = self.get(sample_id)
        boxes = repr([(b.x0, b.y0, b.x1, b.y1, b.label) for b in sample.boxes]).encode()
        parts = [file_stamp(sample.image_path) or "-", self._content_sha(sample.label_path), _sha(boxes)]
        source = sample.label_source  # a label map derived from another tool's annotation
        if source is not None:
            parts.append(source.token or self._content_sha(source.path))
        return _sha("|".join(parts).encode())[:16]

    # ---- problems -----------------------------------------------------------------------------

    def report(self, path: Path | str, reason: str, sample_id: str | None = None) -> Problem:
        """Record that a file could not be used (kept until the file changes)."""
        problem = Problem(str(path), reason, sample_id)
        with self._lock:
            self._runtime_problems[str(path)] = (file_stamp(Path(path)), problem)
        return problem

    def _report_error(self, exc: StudioError, path: Path, sample_id: str) -> Problem:
        message = str(exc)
        prefix = f"{path}: "
        return self.report(path, message[len(prefix):] if message.startswith(prefix) else message, sample_id)

    def _forget(self, path: Path) -> None:
        with self._lock:
            self._runtime_problems.pop(str(path), None)

    @property
    def problems(self) -> list[Problem]:
        """Files that could not be used: entries skipped while listing, and files found bad since (as long
        as they have not changed)."""
        listed = [Problem.from_message(m) for m in self.dataset.problems]
        with self._lock:
            current = [p for stamp, p in self._runtime_problems.values() if file_stamp(Path(p.path)) == stamp]
        seen = {str(p) for p in listed}
        return listed + [p for p in current if str(p) not in seen]

    # ---- reading ------------------------------------------------------------------------------

    def image(self, sample_id: str) -> np.ndarray:
        """The sample's image, ``H x W x 3 uint8`` RGB.

        Raises:
            ImageLoadError: the image cannot be read (also recorded in ``problems``).
        """
        sample = self.get(sample_id)
        try:
            image = load_image(sample.image_path)
        except StudioError as exc:
            self._report_error(exc, sample.image_path, sample_id)
            raise
        self._forget(sample.image_path)
        return image

    def image_hw(self, sample_id: str) -> tuple[int, int]:
        """``(height, width)`` of the sample's image from its header (cached in the index).

        Raises:
            ImageLoadError: the header cannot be read (also recorded in ``problems``).
        """
        sample = self.get(sample_id)
        stamp = file_stamp(sample.image_path)
        fact = self.index.get(sample.image_path, "header", stamp)
        if fact is None:
            try:
                fact = {"hw": list(image_size(sample.image_path))}
            except StudioError as exc:
                fact = {"error": str(exc)}
            self.index.put(sample.image_path, "header", stamp, fact)
        if "error" in fact:
            exc = ImageLoadError(fact["error"])
            self._report_error(exc, sample.image_path, sample_id)
            raise exc
        return int(fact["hw"][0]), int(fact["hw"][1])

    def label_map(self, sample_id: str, image_hw: tuple[int, int] | None = None) -> np.ndarray | None:
        """The sample's label map, ``H x W uint8``, checked against its image's size and the class set;
        ``None`` when it has none.

        Raises:
            InvalidInput: the map is unreadable, of the wrong size or holds unknown values (also recorded).
        """
        sample = self.get(sample_id)
        origin = layouts.label_origin(sample)  # the saved map, else another tool's annotation
        if origin is None:
            return None
        expected = image_hw or self.image_hw(sample_id)
        try:
            label = layouts.load_sample_label_map(self._dataset, sample, expected)
        except StudioError as exc:
            self._report_error(exc, origin, sample_id)
            raise
        self._forget(origin)
        return label

    def read(self, sample_id: str) -> SampleData:
        """The sample's image and label map. A bad label map does not stop the image from opening: the
        result has ``label_map=None`` and says why in ``label_problem``.

        Raises:
            ImageLoadError: the image cannot be read.
        """
        revision = self.revision(sample_id)
        sample = self.get(sample_id)
        image = self.image(sample_id)
        try:
            label = self.label_map(sample_id, image.shape[:2])
            problem = None
        except StudioError as exc:
            label, problem = None, str(exc)
        return SampleData(sample, image, label, revision, problem)

    def label_facts(self, sample_id: str) -> dict | None:
        """``{"classes": [...], "hw": [h, w]}`` of the sample's label map, or ``{"error": ...}`` when it is
        unusable (unreadable, wrong size, unknown values); ``None`` without a label map. Cached by stamps."""
        sample = self.get(sample_id)
        version = layouts.label_version(self._dataset, sample)
        if version is None:
            return None
        path, stamp = version
        key = f"{stamp}|{file_stamp(sample.image_path)}"
        fact = self.index.get(path, "label", key)
        if fact is None:
            fact = self._label_fact(sample_id)
            self.index.put(path, "label", key, fact)
        if "error" in fact:
            self.report(layouts.label_origin(sample) or path, fact["error"], sample_id)
        return fact

    def _label_fact(self, sample_id: str) -> dict:
        sample = self.get(sample_id)
        try:
            hw = self.image_hw(sample_id)
        except StudioError as exc:
            return {"error": f"its image cannot be read ({exc})"}
        try:
            label = layouts.load_sample_label_map(self._dataset, sample, hw)
        except StudioError as exc:
            message = str(exc)
            prefix = f"{layouts.label_origin(sample)}: "
            return {"error": message[len(prefix):] if message.startswith(prefix) else message}
        counts = np.bincount(label.ravel(), minlength=256)
        classes = [int(v) for v in np.flatnonzero(counts) if v != self.classes.ignore_index]
        return {"classes": classes, "hw": list(hw)}

    def label_classes(self) -> dict[str, set[int]]:
        """Sample id -> class indices in its label map (ignore left out), for every sample with a usable
        map; bad maps are left out and reported."""
        out = {}
        for sample in self.samples:
            fact = self.label_facts(sample.id) if sample.has_label_map else None
            if fact is not None and "classes" in fact:
                out[sample.id] = set(fact["classes"])
        return out

    def labelled_ids(self) -> list[str]:
        """Samples with a usable label map, in listing order (unlabelled ones are never background)."""
        present = self.label_classes()
        return [s.id for s in self.samples if s.id in present]

    def each(
        self, ids: Iterable[str] | None = None, *, labelled: bool = True, skipped: SkipReport | None = None
    ) -> Iterator[SampleData]:
        """Read samples one at a time, skipping (and reporting) the ones that cannot be read.

        Args:
            ids: which samples (default: every labelled one, or every one when ``labelled`` is false).
            labelled: skip samples without a usable label map.
            skipped: collects the skipped samples with reasons.
        """
        chosen = list(ids) if ids is not None else (self.labelled_ids() if labelled else self.ids)
        for sample_id in chosen:
            try:
                data = self.read(sample_id)
            except StudioError as exc:
                if skipped is not None:
                    skipped.add(Problem(str(self._dataset.get(sample_id).image_path), str(exc), sample_id))
                continue
            if labelled and data.label_map is None:
                if skipped is not None and data.label_problem:
                    skipped.add(Problem(str(layouts.label_origin(data.sample)), data.label_problem, sample_id))
                continue
            yield data

    def check(self, *, decode_images: bool = True, progress=None) -> list[Problem]:
        """Check every sample (images decoded when ``decode_images``, label maps against their images) and
        return every problem found. Results are cached in the workspace index by file stamps."""
        from core.progress import track

        for sample in track(self.samples, progress=progress, message="checking"):
            if decode_images:
                self._check_image(sample)
            if sample.has_label_map:
                self.label_facts(sample.id)
        return self.problems

    def _check_image(self, sample: Sample) -> None:
        stamp = file_stamp(sample.image_path)
        fact = self.index.get(sample.image_path, "decode", stamp)
        if fact is None:
            try:
                load_image(sample.image_path)
                fact = {"ok": True}
            except StudioError as exc:
                fact = {"error": str(exc)}
            self.index.put(sample.image_path, "decode", stamp, fact)
        if "error" in fact:
            self._report_error(ImageLoadError(fact["error"]), sample.image_path, sample.id)

    # ---- status: the annotator's work queue -----------------------------------------------------

    def status_key(self, sample_id: str) -> str:
        """The saved version of a sample that an explicit status belongs to: its label map's file stamp and
        its boxes (a save that changes either changes the key; no file is read)."""
        return self._status_key(self.get(sample_id))

    def _status_key(self, sample: Sample) -> str:
        version = layouts.label_version(self._dataset, sample)
        boxes = repr([(b.x0, b.y0, b.x1, b.y1, b.label) for b in sample.boxes]).encode()
        return f"{version[1] if version else '-'}|{_sha(boxes)[:12]}"

    def _label_known_bad(self, sample: Sample) -> bool:
        """Whether the index already knows this version of the label map to be unusable (never decodes)."""
        version = layouts.label_version(self._dataset, sample)
        if version is None:
            return False
        fact = self.index.get(version[0], "label", f"{version[1]}|{file_stamp(sample.image_path)}")
        return fact is not None and "error" in fact

    def _derive_status(self, sample: Sample, mark: StatusMark | None, drafted: bool) -> str:
        if mark is not None and mark.key == self._status_key(sample):
            return mark.status
        if sample.has_label_map and not self._label_known_bad(sample):
            return DONE
        return DRAFT if drafted else UNLABELLED

    def status(self, sample_id: str) -> str:
        """The sample's status now: ``unlabelled``, ``draft``, ``done`` or ``needs_review`` (see
        :mod:`core.store.status` for the rules). Follows saves made anywhere at once.

        Raises:
            InvalidInput: naming the unknown id.
        """
        sample = self.get(sample_id)
        return self._derive_status(sample, self.status_book.get(sample_id), self.drafts.has_any(sample_id))

    def status_mark(self, sample_id: str) -> StatusMark | None:
        """The explicit mark that decides the sample's status now (with its note), or ``None``."""
        sample = self.get(sample_id)
        mark = self.status_book.get(sample_id)
        return mark if mark is not None and mark.key == self._status_key(sample) else None

    def statuses(self, ids: Iterable[str] | None = None) -> dict[str, str]:
        """Sample id -> status for every sample (or ``ids``), in listing order: one query for the marks,
        one listing of the drafts folder, a few ``stat`` calls per sample; no image or map is decoded."""
        self.refresh(max_age=0)
        marks = self.status_book.all()
        drafted = self.drafts.drafted()
        digest = self.drafts.digest
        samples = self._dataset.samples if ids is None else [self.get(i) for i in ids]
        return {s.id: self._derive_status(s, marks.get(s.id), digest(s.id) in drafted) for s in samples}

    def status_counts(self, ids: Iterable[str] | None = None) -> dict[str, int]:
        """How many samples have each status (every status present, in :data:`STATUSES` order)."""
        counts = dict.fromkeys(STATUSES, 0)
        for value in self.statuses(ids).values():
            counts[value] += 1
        return counts

    def set_status(self, sample_id: str, status: str | None, note: str = "") -> str:
        """Mark a sample ``done`` or ``needs_review`` (``"needs review"`` is accepted too), or clear its mark
        with ``None``. The mark is kept in the workspace and belongs to the sample as saved now: a later save
        that changes the sample replaces it. Nothing is written in the dataset folder.

        Returns:
            the sample's status afterwards.

        Raises:
            InvalidInput: an unknown sample, or a status that cannot be set (``unlabelled`` and ``draft``
                follow from the files and drafts).
        """
        self.get(sample_id)
        with self._write_lock():
            if status is None or status == "":
                self.status_book.clear(sample_id)
            else:
                name = normalise_status(status)
                if name not in EXPLICIT:
                    raise InvalidInput(
                        f"{LABELS[name]!r} follows from the files and drafts and cannot be set; set "
                        f"{' or '.join(repr(LABELS[s]) for s in EXPLICIT)}, or None to clear a mark"
                    )
                self.status_book.put(sample_id, name, self.status_key(sample_id), note)
            self.version += 1
        return self.status(sample_id)

    def next_with_status(
        self, after: str | None, statuses: Iterable[str] = (UNLABELLED,), step: int = 1
    ) -> str | None:
        """The next sample (``step=-1``: the previous) in listing order after ``after`` whose status is one of
        ``statuses``, wrapping round; never ``after`` itself. ``None`` when there is none."""
        wanted = {normalise_status(s) for s in statuses}
        current = self.statuses()
        ids = list(current)
        if not ids:
            return None
        start = ids.index(after) if after in current else (-1 if step > 0 else 0)
        for offset in range(1, len(ids) + 1):
            candidate = ids[(start + offset * (1 if step > 0 else -1)) % len(ids)]
            if candidate != after and current[candidate] in wanted:
                return candidate
        return None

    def neighbour(self, sample_id: str | None, step: int = 1) -> str | None:
        """The sample ``step`` places after (``-1``: before) ``sample_id`` in listing order, wrapping round;
        the first (or last) one when ``sample_id`` is ``None`` or unknown; ``None`` for an empty dataset."""
        ids = self.ids
        if not ids:
            return None
        if sample_id not in ids:
            return ids[0] if step > 0 else ids[-1]
        return ids[(ids.index(sample_id) + step) % len(ids)]

    # ---- thumbnails ---------------------------------------------------------------------------

    def thumbnail(self, sample_id: str, max_side: int = 256) -> Path:
        """A JPEG thumbnail of the sample's image in the workspace (made once per image version).

        Raises:
            ImageLoadError: the image cannot be read (also recorded).
        """
        from PIL import Image

        from core.io.atomic import atomic_write

        sample = self.get(sample_id)
        stamp = file_stamp(sample.image_path) or "-"
        name = _sha(f"{sample.id}|{stamp}".encode())[:24]
        path = self.cache_dir / "thumbs" / str(max_side) / f"{name}.jpg"
        if path.is_file():
            return path
        try:
            small = thumbnail(sample.image_path, max_side)
        except StudioError as exc:
            self._report_error(exc, sample.image_path, sample_id)
            raise
        atomic_write(path, lambda tmp: Image.fromarray(small).save(tmp, format="JPEG", quality=88))
        return path

    # ---- writing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write_lock(self):
        """Serialise saves in this process (threads) and across processes (a lock file in the workspace)."""
        with self._lock:
            handle = None
            if fcntl is not None:
                with contextlib.suppress(OSError):
                    self.cache_dir.mkdir(parents=True, exist_ok=True)
                    handle = open(self.cache_dir / "save.lock", "a+")  # noqa: SIM115
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                if handle is not None:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                    handle.close()

    def save(
        self,
        sample_id: str,
        *,
        label_map: np.ndarray | None = None,
        boxes: list[Box] | None = None,
        base_revision: str | None = None,
        on_conflict: str = "refuse",
    ) -> SaveResult:
        """Save a sample's label map and/or boxes, writing only what differs from the files on disk.

        Args:
            label_map: ``H x W uint8`` class indices the size of the image (``None``: leave the map as is).
            boxes: the sample's boxes (``None``: leave them as they are).
            base_revision: the revision the edit started from; ``None`` skips the conflict check.
            on_conflict: what to do when the sample changed since ``base_revision``: ``refuse`` (raise
                :class:`SaveConflict`), ``overwrite`` (theirs kept in history) or ``copy`` (save as a new
                sample, whatever the revision).

        Raises:
            SaveConflict: the sample changed since ``base_revision`` and ``on_conflict`` is ``refuse``.
            InvalidInput: wrong size or values, boxes outside the image, or the dataset is read-only;
                nothing is written.
        """
        if on_conflict not in ("refuse", "overwrite", "copy"):
            raise InvalidInput(f"unknown conflict choice {on_conflict!r}; accepted: refuse, overwrite, copy")
        with self._write_lock():
            self.refresh(force=True)
            current = self.revision(sample_id)
            if on_conflict == "copy":
                return self._save_copy(sample_id, label_map, boxes)
            conflict = base_revision is not None and base_revision != current
            if conflict and on_conflict == "refuse":
                raise SaveConflict(sample_id, base_revision, current)  # type: ignore[arg-type]
            result = self._write(sample_id, label_map, boxes)
            if conflict and result.changed:
                result.resolution = "overwrote"
            return result

    def _write(self, sample_id: str, label_map: np.ndarray | None, boxes: list[Box] | None) -> SaveResult:
        sample = self.get(sample_id)
        written, kept = [], []
        try:
            if label_map is not None and self._label_differs(sample_id, label_map):
                kept.append(layouts.save_sample_label_map(self._dataset, sample, label_map))
                written.append(layouts.label_path_for(self._dataset, sample))
            if boxes is not None and self._boxes_differ(sample, boxes):
                kept.append(layouts.save_sample_boxes(self._dataset, sample, boxes))
                written.append(layouts.boxes_path_for(self._dataset, sample))
        except OSError as exc:
            if exc.errno not in _READ_ONLY_ERRORS:
                raise
            raise InvalidInput(
                f"cannot write in {self.root} ({exc.strerror}: {exc.filename}); the dataset folder is "
                "read-only. Nothing was lost: your edits are kept as a draft; make the folder writable, or "
                "export elsewhere"
            ) from None
        if written:
            self.refresh(force=True)
            self.version += 1
        return SaveResult(sample_id, self.revision(sample_id), written, [k for k in kept if k is not None],
                          "saved" if written else "unchanged")  # fmt: skip

    def _label_differs(self, sample_id: str, label_map: np.ndarray) -> bool:
        try:
            current = self.label_map(sample_id)
        except StudioError:
            return True  # a bad map on disk is replaced
        return current is None or current.shape != label_map.shape or not np.array_equal(current, label_map)

    def _boxes_differ(self, sample: Sample, boxes: list[Box]) -> bool:
        height, width = self.image_hw(sample.id)
        clipped = [b.clip(width, height) for b in boxes]
        if clipped == list(sample.boxes):
            return False
        if not clipped and not layouts.boxes_path_for(self._dataset, sample).is_file():
            return False  # no boxes, and no box file to empty: nothing to write
        return True

    def _save_copy(self, sample_id: str, label_map: np.ndarray | None, boxes: list[Box] | None) -> SaveResult:
        """Save the edit as a new sample ``<id>_copy[N]`` beside the original (its image copied)."""
        import shutil

        from core.io.atomic import atomic_write

        sample = self.get(sample_id)
        new_id = self._free_copy_id(sample_id)
        image_path = layouts.copy_image_path(self._dataset, sample, new_id)
        try:
            atomic_write(image_path, lambda tmp: shutil.copyfile(sample.image_path, tmp))
        except OSError as exc:
            if exc.errno not in _READ_ONLY_ERRORS:
                raise
            raise InvalidInput(f"cannot write in {self.root} ({exc.strerror}); the dataset folder is read-only") from None
        copy = Sample(new_id, image_path, None, [], sample.split, sample.size)
        if label_map is None:
            label_map = self.label_map(sample_id)
        boxes = list(sample.boxes) if boxes is None else boxes
        written = [image_path]
        if label_map is not None:
            layouts.save_sample_label_map(self._dataset, copy, label_map)
            written.append(layouts.label_path_for(self._dataset, copy))
        if boxes:
            layouts.save_sample_boxes(self._dataset, copy, boxes)
            written.append(layouts.boxes_path_for(self._dataset, copy))
        self.refresh(force=True)
        self.version += 1
        return SaveResult(new_id, self.revision(new_id), written, [], "copied")

    def _free_copy_id(self, sample_id: str) -> str:
        taken = set(self._dataset.ids)
        for n in range(1, 10_000):
            candidate = f"{sample_id}_copy" if n == 1 else f"{sample_id}_copy{n}"
            if candidate not in taken:
                return candidate
        raise InvalidInput(f"too many copies of {sample_id!r} already")


def _hidden(path: Path, root: Path) -> bool:
    relative = path.relative_to(root).parts
    return any(part.startswith(".") or part in layouts.SKIPPED_DIRS for part in relative)


def _dir_stamp(path: Path) -> str:
    try:
        stat = os.stat(path)
    except OSError:
        return "-"
    return f"{stat.st_ino}:{stat.st_mtime_ns}:{stat.st_size}"


def _listing_key(dataset: Dataset) -> tuple:
    return tuple((s.id, str(s.label_path), tuple(s.boxes)) for s in dataset.samples)


_STORES: dict[tuple[str, str], DatasetStore] = {}
_STORES_LOCK = threading.Lock()


def open_store(root: str | Path, *, cache_dir: Path | None = None, layout: str | None = None) -> DatasetStore:
    """The process's store for a dataset folder (made on first use, shared after)."""
    resolved = Path(root).expanduser().resolve()
    key = (str(resolved), str(cache_dir or dataset_cache_dir(resolved)))
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = DatasetStore(resolved, cache_dir=cache_dir, layout=layout)
            _STORES[key] = store
        return store
