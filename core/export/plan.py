"""The job list of an export: a pure function of the recipe and the dataset's revisions.

Job ``i`` of step ``s`` has the id ``sha1(recipe digest, s, i)`` and the seed sequence ``(seed, s, i)``, so what it
makes does not depend on the runner, the number of workers, the order in which jobs finish, or interruptions.
Step 0 holds the real samples (one job each, when the recipe includes them); steps 1.. are the generation steps.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from core.errors import InvalidInput
from core.export.recipe import Recipe, Step
from core.store import DatasetStore


@dataclass(frozen=True)
class Job:
    """One sample of the export.

    Attributes:
        id: 16 hex digits from the recipe digest, the step and the index.
        position: the job's place in the plan (outputs are listed in this order).
        step: 0 for real samples, ``k`` for the ``k``-th generation step.
        index: the job's number within its step.
        kind: ``real`` or the step's backend.
        output_id: the sample's id in the export.
        source: the real sample it copies, the source a balance plan chose, or ``None`` (drawn by the backend).
        target_class: the class a balance plan generates this sample for, or ``None``.
        seeds: ``(seed, step, index)``.
    """

    id: str
    position: int
    step: int
    index: int
    kind: str
    output_id: str
    source: str | None
    target_class: str | None
    seeds: tuple[int, int, int]

    def to_json(self) -> dict:
        return {"id": self.id, "position": self.position, "step": self.step, "index": self.index, "kind": self.kind,
                "output_id": self.output_id, "source": self.source, "target_class": self.target_class,
                "seeds": list(self.seeds)}  # fmt: skip

    @classmethod
    def from_json(cls, doc: dict) -> Job:
        return cls(**{**doc, "seeds": tuple(doc["seeds"])})

    def replacement(self, digest: str, index: int, position: int) -> Job:
        """The job that makes another sample in place of this rejected one: same step, source and target class,
        the step's next index (hence the next seed)."""
        return Job(job_id(digest, self.step, index), position, self.step, index, self.kind,
                   generated_output_id(self.step, self.kind, index), self.source, self.target_class,
                   (self.seeds[0], self.step, index))  # fmt: skip


def job_id(digest: str, step: int, index: int) -> str:
    return hashlib.sha1(f"{digest}|{step}|{index}".encode()).hexdigest()[:16]


def generated_output_id(step: int, backend: str, index: int) -> str:
    return f"gen{step}_{backend.replace('-', '_')}_{index:06d}"


def safe_id(sample_id: str) -> str:
    """A sample id usable as a file name in a flat folder (``trip/b`` -> ``trip__b``)."""
    return sample_id.replace("/", "__").replace("\\", "__")


def dataset_fingerprint(store: DatasetStore) -> str:
    """A hash of every labelled sample's id and revision: resuming an export over a changed dataset would
    mix two datasets, so a changed fingerprint is refused."""
    digest = hashlib.sha1()
    for sample_id in store.labelled_ids():
        digest.update(f"{sample_id}:{store.revision(sample_id)}\n".encode())
    return digest.hexdigest()[:16]


def plan_jobs(recipe: Recipe, store: DatasetStore) -> list[Job]:
    """Every job of the recipe, in order.

    Raises:
        InvalidInput: a balance plan with nothing to balance, or no labelled sample to start from.
    """
    digest = recipe.digest()
    labelled = store.labelled_ids()
    if not labelled:
        raise InvalidInput(f"{store.root} has no usable label map: an export needs labelled samples")
    jobs: list[Job] = []
    if recipe.real == "include":
        for index, sample_id in enumerate(labelled):
            jobs.append(Job(job_id(digest, 0, index), len(jobs), 0, index, "real", safe_id(sample_id), sample_id, None,
                            (recipe.seed, 0, index)))  # fmt: skip
    for number, step in enumerate(recipe.generate, start=1):
        for index, (source, target) in enumerate(_step_sources(step, store, labelled, recipe.seed, number)):
            output_id = generated_output_id(number, step.backend, index)
            jobs.append(Job(job_id(digest, number, index), len(jobs), number, index, step.backend, output_id, source,
                            target, (recipe.seed, number, index)))  # fmt: skip
    return jobs


def gan_run_kind(step: Step, number: int) -> str:
    """The kind of a gan step's run (``label2image`` or ``pair``), read from its folder.

    Raises:
        InvalidInput: the run cannot be used (``recipe: generate[i].model: ...``), or the step asks what its kind
            cannot do (a pair run with a balance plan or with maps_from).
    """
    from core.errors import StudioError
    from core.generate.gan import read_run

    key = f"recipe: generate[{number - 1}]"
    try:
        kind = read_run(step.model or "").kind
    except StudioError as exc:
        raise InvalidInput(f"{key}.model: {exc}") from None
    if kind == "pair" and step.balance is not None:
        raise InvalidInput(f"{key}.balance: a pair GAN run makes samples without choosing their classes, so it cannot "
                           "follow a balance plan; give count (or use a label2image run)")  # fmt: skip
    if kind == "pair" and step.options.get("maps_from", "dataset") != "dataset":
        raise InvalidInput(f"{key}.options.maps_from: a pair GAN run makes its own label maps; maps_from needs a "
                           "label2image run")  # fmt: skip
    return kind


def _step_sources(step: Step, store: DatasetStore, labelled: list[str], seed: int, number: int):
    """``(source sample or None, target class or None)`` per job of a step."""
    diffusion = step.backend in ("controlnet", "t2i-adapter")
    if step.backend == "gan":  # label2image keeps a dataset map as diffusion does, unless its maps come from a step
        kind = gan_run_kind(step, number)
        diffusion = kind == "label2image" and step.options.get("maps_from", "dataset") == "dataset"
    if step.count is not None:
        if diffusion:  # each image is made for one label map, cycling over the labelled samples
            return [(labelled[i % len(labelled)], None) for i in range(step.count)]
        return [(None, None)] * step.count
    from core.labels.balance import plan_balance

    target = step.balance or {}
    plan = plan_balance(store.label_classes(), store.classes, n_balance=target.get("n_balance"),
                        synthetic_share=target.get("synthetic_share"), seed=seed + number)  # fmt: skip
    if not plan.samples:
        raise InvalidInput(f"recipe: generate[{number - 1}].balance: the dataset is balanced already; nothing to plan")
    return [(s["source"], s["target_class"]) for s in plan.samples]
