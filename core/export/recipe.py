"""Export recipes: what a batch export makes, as a small YAML (or JSON) document.

```yaml
source: path/to/dataset          # any layout SegStudio opens
seed: 0
real: include                    # include | exclude the real (labelled) samples
generate:                        # zero or more steps, run in order
  - backend: composite           # composite | recombine | controlnet | t2i-adapter | gan | render
    count: 200                   # or: balance: {n_balance: 50} / {synthetic_share: 0.5}
    options: {blending: gaussian}
  - backend: gan                 # a GAN trained on this data: model is its run folder
    model: runs/l2i              # label2image: keeps dataset label maps (or, with maps_from: N, the maps of
    count: 100                   # the N-th step, a recombine step) and makes their images; pair: new samples
split: {train: 0.8, val: 0.2}    # by source sample: one photo's variants never straddle splits
quality: {min_score: 0.3}        # optional gate on generated samples (core.export.quality); clip: true adds CLIP
review: false                    # true: generated samples wait for a person's accept / reject before the final write
formats: [voc, coco]             # voc | coco | cityscapes | yolo-seg | mmseg | hf
```

Every error names the key (``generate[1].count``) and what is accepted. The recipe's hash (of its canonical
JSON, the source folder resolved) identifies an export: job ids and the ledger depend on it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.errors import InvalidInput

BACKENDS = ("composite", "recombine", "controlnet", "t2i-adapter", "gan", "render")
FORMATS = ("voc", "coco", "cityscapes", "yolo-seg", "mmseg", "hf")
REAL_CHOICES = ("include", "exclude")
TOP_KEYS = ("source", "seed", "real", "generate", "split", "formats", "quality", "review")
QUALITY_KEYS = ("min_score", "min_clip", "clip", "segmenter", "min_segmenter")
STEP_KEYS = ("backend", "count", "balance", "options", "model")
PLAUSIBLE_OPTIONS = ("size", "min_area_share", "max_area_share", "max_stretch", "position", "ground_plane", "horizon")
COMPOSITE_OPTIONS = ("classes", "blending", "blend_size", "objects", "max_truncation", "max_overlap", "distractors",
                     "scale", "max_rotate", "max_translate", "backgrounds", "min_area", *PLAUSIBLE_OPTIONS,
                     "background_overlap", "stuff", "paste_stuff")  # fmt: skip
RECOMBINE_OPTIONS = ("mode", "classes", "scale", "max_rotate", "max_translate", "placement", "protect", "layer",
                     "ignore_border", "min_area", *PLAUSIBLE_OPTIONS, "background_overlap")  # fmt: skip
DIFFUSION_OPTIONS = ("prompt", "negative_prompt", "steps", "guidance_scale", "conditioning_scale", "width", "height")
GAN_OPTIONS = ("maps_from", "ema")
# render: path-traced 3D meshes (core.render); the ranges are RenderSettings fields, "meshes" a folder of mesh files
# named after the dataset's classes, "backgrounds" a background-only folder (default: the dataset's own images)
RENDER_OPTIONS = ("meshes", "backgrounds", "size", "samples", "objects", "object_size", "rotation", "max_truncation",
                  "min_visible", "camera_distance", "camera_elevation", "focal_mm", "lights", "light_intensity",
                  "ambient", "textures", "denoise")  # fmt: skip


def _fail(key: str, message: str) -> InvalidInput:
    return InvalidInput(f"recipe: {key}: {message}")


@dataclass(frozen=True)
class Step:
    """One generation step.

    Attributes:
        backend: one of :data:`BACKENDS`.
        count: how many samples, or ``None`` when ``balance`` plans them.
        balance: ``{"n_balance": N}`` or ``{"synthetic_share": S}`` (Che et al.'s plan), or ``None``.
        options: backend settings (see the ``*_OPTIONS`` tuples for the accepted keys).
        model: control model id for the diffusion backends; for ``gan``, the run folder (resolved against the
            recipe file's folder).
    """

    backend: str
    count: int | None = None
    balance: dict | None = None
    options: dict = field(default_factory=dict)
    model: str | None = None


@dataclass(frozen=True)
class Recipe:
    """A parsed, validated recipe (see the module docstring)."""

    source: str
    seed: int = 0
    real: str = "include"
    generate: tuple[Step, ...] = ()
    split: dict[str, float] = field(default_factory=lambda: {"train": 1.0})
    formats: tuple[str, ...] = ("voc",)
    quality: dict = field(default_factory=dict)
    review: bool = False

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["generate"] = [asdict(step) for step in self.generate]
        doc["formats"] = list(self.formats)
        return doc

    def digest(self) -> str:
        """16 hex digits identifying this recipe (its canonical JSON)."""
        return hashlib.sha1(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, doc: dict, base: Path | None = None) -> Recipe:
        """Validate a recipe document; ``source`` is resolved against ``base`` (the recipe file's folder).

        Raises:
            InvalidInput: naming the key and what it accepts.
        """
        if not isinstance(doc, dict):
            raise InvalidInput("recipe: the document must be a mapping with at least a 'source' key")
        unknown = sorted(set(doc) - set(TOP_KEYS))
        if unknown:
            raise _fail(unknown[0], f"unknown key; accepted: {', '.join(TOP_KEYS)}")
        if "source" not in doc or not isinstance(doc["source"], str) or not doc["source"].strip():
            raise _fail("source", "a dataset folder is required (a path, relative to the recipe file)")
        source = Path(doc["source"]).expanduser()
        if not source.is_absolute() and base is not None:
            source = base / source
        if not source.is_dir():
            raise _fail("source", f"{source} is not a folder")
        seed = doc.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise _fail("seed", f"a non-negative integer, got {seed!r}")
        real = doc.get("real", "include")
        if real not in REAL_CHOICES:
            raise _fail("real", f"one of {', '.join(REAL_CHOICES)}, got {real!r}")
        steps = doc.get("generate") or []
        if not isinstance(steps, list):
            raise _fail("generate", "a list of steps")
        parsed = tuple(_step(item, f"generate[{i}]", base) for i, item in enumerate(steps))
        for i in range(len(parsed)):
            _check_maps_from(parsed, i)
        split = _split(doc.get("split", {"train": 1.0}))
        formats = doc.get("formats", ["voc"])
        formats = [formats] if isinstance(formats, str) else formats
        if not isinstance(formats, list) or not formats or any(f not in FORMATS for f in formats):
            raise _fail("formats", f"a list of {', '.join(FORMATS)}, got {formats!r}")
        review = doc.get("review", False)
        if review is None:
            review = False
        if not isinstance(review, bool):
            raise _fail("review", f"true or false, got {review!r}")
        quality = _quality(doc.get("quality"), base)
        if real == "exclude" and not parsed:
            raise _fail("generate", "with real: exclude, at least one generation step is needed")
        return cls(str(source.resolve()), seed, real, parsed, split, tuple(dict.fromkeys(formats)), quality, review)

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read a recipe file (YAML or JSON)."""
        import yaml

        path = Path(path)
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise InvalidInput(f"cannot read recipe {path}: {exc}") from None
        return cls.from_dict(doc, base=path.parent)


def _step(item, key: str, base: Path | None = None) -> Step:
    if not isinstance(item, dict):
        raise _fail(key, "a mapping with a 'backend' key")
    unknown = sorted(set(item) - set(STEP_KEYS))
    if unknown:
        raise _fail(f"{key}.{unknown[0]}", f"unknown key; accepted: {', '.join(STEP_KEYS)}")
    backend = item.get("backend")
    if backend not in BACKENDS:
        raise _fail(f"{key}.backend", f"one of {', '.join(BACKENDS)}, got {backend!r}")
    count, balance = item.get("count"), item.get("balance")
    if (count is None) == (balance is None):
        raise _fail(key, "give exactly one of count (a number of samples) or balance ({n_balance: N} or "
                         "{synthetic_share: S})")  # fmt: skip
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 10_000_000):
        raise _fail(f"{key}.count", f"an integer 1..10000000, got {count!r}")
    if balance is not None:
        if not isinstance(balance, dict) or len(balance) != 1 or not set(balance) <= {"n_balance", "synthetic_share"}:
            raise _fail(f"{key}.balance", f"{{n_balance: N}} or {{synthetic_share: S}}, got {balance!r}")
    options = item.get("options") or {}
    accepted = {"composite": COMPOSITE_OPTIONS, "recombine": RECOMBINE_OPTIONS, "gan": GAN_OPTIONS,
                "render": RENDER_OPTIONS}.get(
        backend, DIFFUSION_OPTIONS
    )
    if not isinstance(options, dict):
        raise _fail(f"{key}.options", "a mapping")
    bad = sorted(set(options) - set(accepted))
    if bad:
        raise _fail(f"{key}.options.{bad[0]}", f"unknown for {backend}; accepted: {', '.join(accepted)}")
    model = item.get("model")
    if backend in ("controlnet", "t2i-adapter") and not model:
        raise _fail(f"{key}.model", f"the {backend} backend needs a model id (segstudio models lists them)")
    if backend == "gan":
        model = _gan_run(model, f"{key}.model", base)
        if "ema" in options and not isinstance(options["ema"], bool):
            raise _fail(f"{key}.options.ema", f"true or false, got {options['ema']!r}")
    if backend == "render":
        options = _render_options(options, key, base)
    return Step(backend, count, balance, dict(options), model)


def _render_options(options: dict, key: str, base: Path | None) -> dict:
    """A render step's options with its folders resolved against the recipe's folder and its ranges checked."""
    out = dict(options)
    for name in ("meshes", "backgrounds"):
        if name in out:
            if not isinstance(out[name], str) or not out[name].strip():
                raise _fail(f"{key}.options.{name}", f"a folder, got {out[name]!r}")
            path = Path(out[name]).expanduser()
            out[name] = str((base / path if not path.is_absolute() and base is not None else path).resolve())
    try:
        render_settings(out)
    except InvalidInput as exc:
        raise _fail(f"{key}.options", str(exc)) from None
    return out


def render_settings(options: dict):
    """The :class:`core.render.scene.RenderSettings` of a render step's options (``size`` a side or [w, h])."""
    from core.render.scene import RenderSettings

    doc = {k: v for k, v in options.items() if k not in ("meshes", "backgrounds")}
    if "size" in doc and isinstance(doc["size"], int | float):
        doc["size"] = [int(doc["size"]), int(doc["size"])]
    return RenderSettings.from_json(doc)


def _gan_run(model, key: str, base: Path | None) -> str:
    """A gan step's run folder, resolved against the recipe's folder (its contents are checked by the preflight)."""
    if not isinstance(model, str) or not model.strip():
        raise _fail(key, "the gan backend needs a training run folder (model: RUN, written by segstudio train "
                         f"--out RUN or the Train tab), got {model!r}")  # fmt: skip
    path = Path(model).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return str(path.resolve())


def _check_maps_from(steps: tuple[Step, ...], i: int) -> None:
    """``maps_from: N`` of a gan step names an earlier recombine step (1 = the first step), and the step gives a
    count (a balance plan picks dataset maps itself)."""
    step = steps[i]
    value = step.options.get("maps_from", "dataset")
    if value == "dataset":
        return
    key = f"generate[{i}].options.maps_from"
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= i:
        raise _fail(key, f"'dataset' or the number of an earlier recombine step (1..{i}; 1 = the first step), "
                         f"got {value!r}")  # fmt: skip
    if steps[value - 1].backend != "recombine":
        raise _fail(key, f"step {value} is a {steps[value - 1].backend} step; accepted: 'dataset' or a recombine step")
    if step.balance is not None:
        raise _fail(f"generate[{i}]", "with maps_from a recombine step, give count (a balance plan picks dataset "
                                      "maps by their classes)")  # fmt: skip


def _quality(quality, base: Path | None = None) -> dict:
    if quality is None:
        return {}
    if not isinstance(quality, dict):
        raise _fail("quality", f"a mapping such as {{min_score: 0.3}}, got {quality!r}")
    unknown = sorted(set(quality) - set(QUALITY_KEYS))
    if unknown:
        raise _fail(f"quality.{unknown[0]}", f"unknown key; accepted: {', '.join(QUALITY_KEYS)}")
    for key, low in (("min_score", 0.0), ("min_clip", -1.0), ("min_segmenter", 0.0)):
        value = quality.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= 1):
            raise _fail(f"quality.{key}", f"a number in [{low:g}, 1], got {value!r}")
    clip = quality.get("clip", quality.get("min_clip") is not None)
    if not isinstance(clip, bool):
        raise _fail("quality.clip", f"true or false, got {clip!r}")
    if quality.get("min_clip") is not None and not clip:
        raise _fail("quality.clip", "min_clip needs the CLIP score: leave clip out or set it to true")
    segmenter = quality.get("segmenter")
    if segmenter is not None:
        if not isinstance(segmenter, str) or not segmenter.strip():
            raise _fail("quality.segmenter", f"a segmenter run folder (segstudio train-segmenter --out RUN), got "
                                             f"{segmenter!r}")  # fmt: skip
        path = Path(segmenter).expanduser()
        segmenter = str((base / path if not path.is_absolute() and base is not None else path).resolve())
    if quality.get("min_segmenter") is not None and segmenter is None:
        raise _fail("quality.min_segmenter", "needs quality.segmenter: the run folder of a segmenter trained on the "
                                             "real data")  # fmt: skip
    return {k: v for k, v in {**quality, "clip": clip, "segmenter": segmenter}.items() if v is not None}


def _split(split) -> dict[str, float]:
    if not isinstance(split, dict) or not split:
        raise _fail("split", f"a mapping of split name to share, such as {{train: 0.8, val: 0.2}}, got {split!r}")
    shares = {}
    for name, share in split.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise _fail("split", f"split names are simple words, got {name!r}")
        if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 < share <= 1:
            raise _fail(f"split.{name}", f"a share in (0, 1], got {share!r}")
        shares[name] = float(share)
    if abs(sum(shares.values()) - 1.0) > 1e-6:
        raise _fail("split", f"shares must add up to 1, they add up to {sum(shares.values()):.4f}")
    return shares
