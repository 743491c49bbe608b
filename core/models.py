"""The model registry: where each model's weights live, whether they are there, and loading them.

A model id (``"sam-vit-base"``) names a :class:`ModelSpec`: its Hugging Face repository, the files
that must be present and how to load it. Weights are looked up, in order, in

1. ``$SEGSTUDIO_MODELS/<repo id>/`` (default ``~/.cache/segstudio/models/<repo id>/``), then
2. the Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``).

Nothing is downloaded unless downloads were allowed (``--allow-downloads`` or
``SEGSTUDIO_ALLOW_DOWNLOADS=1``); a missing model raises :class:`ModelUnavailable` whose message says
which files to put in which folder. Models load lazily on first use and a small LRU keeps the most
recently used ones; a failed load leaves the cache as it was.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.device import DevicePolicy, resolve_policy
from core.errors import InvalidInput, ModelUnavailable
from core.progress import ProgressFn, no_progress

# Each entry of ``required_files`` lists alternatives: one of them must exist.
FileRule = tuple[str, ...]
Loader = Callable[[Path, DevicePolicy], Any]

TRANSFORMERS_WEIGHTS: FileRule = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
DIFFUSERS_WEIGHTS: FileRule = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                               "diffusion_pytorch_model.fp16.safetensors")  # fmt: skip


def models_dir() -> Path:
    """The local models folder: ``$SEGSTUDIO_MODELS`` or ``~/.cache/segstudio/models``."""
    raw = os.environ.get("SEGSTUDIO_MODELS")
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "segstudio" / "models"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, as huggingface_hub resolves it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def downloads_allowed() -> bool:
    """True when ``SEGSTUDIO_ALLOW_DOWNLOADS`` is set to 1/true/yes."""
    return os.environ.get("SEGSTUDIO_ALLOW_DOWNLOADS", "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model.

    Attributes:
        id: the registry id used in the studio and on the command line.
        repo_id: the Hugging Face repository holding the weights (also the sub-folder of the models dir).
        task: what the model is for (``box-prompt``, ``edge-detector``, ``captioner``, ``controlnet``, ...).
        loader: ``"module:Class"`` whose ``from_pretrained(folder, **loader_kwargs)`` loads it,
            ``"module:function"`` or a callable, called as ``loader(folder, policy)``.
        required_files: file paths relative to the folder; each entry lists alternatives.
        loader_kwargs: extra keyword arguments for ``from_pretrained``.
        description: one line for people.
        download_size: rough size of the weights, for people.
        base: for ControlNets and T2I-Adapters, the registry id of the base diffusion model they attach to.
    """

    id: str
    repo_id: str
    task: str
    loader: str | Loader
    required_files: tuple[FileRule, ...]
    loader_kwargs: dict = field(default_factory=dict, hash=False, compare=False)
    description: str = ""
    download_size: str = ""
    base: str | None = None

    def file_list(self) -> str:
        """The required files as people read them: ``a, b (or c)``."""
        return ", ".join(
            rule[0] + (f" (or {' or '.join(rule[1:])})" if len(rule) > 1 else "") for rule in self.required_files
        )


@dataclass(frozen=True)
class ModelStatus:
    """Whether a model's weights are present, and where they are or belong.

    Attributes:
        spec: the model.
        available: every required file was found in ``folder``.
        folder: where the weights were found or, when missing, where to put them.
        missing: required files not found there (first alternative named).
        source: ``"models dir"``, ``"hf cache"`` or ``""`` when not found.
        loaded: the model is in the registry's in-memory cache now.
    """

    spec: ModelSpec
    available: bool
    folder: Path
    missing: tuple[str, ...]
    source: str
    loaded: bool = False

    @property
    def state(self) -> str:
        if self.loaded:
            return "loaded"
        if self.available:
            return "available"
        return "partial" if len(self.missing) < len(self.spec.required_files) else "missing"

    def install_message(self) -> str:
        """What to do to make the model available."""
        spec = self.spec
        return (
            f"model {spec.id!r} ({spec.repo_id}) is not installed: put {spec.file_list()} into {self.folder}/ "
            f"(for example with `hf download {spec.repo_id} --local-dir {self.folder}` on a machine "
            f"with internet access, then copy the folder here), or start SegStudio with --allow-downloads"
        )


def _missing_files(folder: Path, rules: tuple[FileRule, ...]) -> tuple[str, ...]:
    return tuple(rule[0] for rule in rules if not any((folder / name).is_file() for name in rule))


def _hf_snapshot(repo_id: str) -> Path | None:
    """The newest local snapshot folder of ``repo_id`` in the Hugging Face cache, if any."""
    repo_dir = hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        snapshot = repo_dir / "snapshots" / ref.read_text().strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = repo_dir / "snapshots"
    if snapshots.is_dir():
        folders = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        if folders:
            return folders[-1]
    return None


def _generic_load(spec: ModelSpec, folder: Path, policy: DevicePolicy) -> Any:
    """``Class.from_pretrained(folder)`` for a ``"module:Class"`` loader, moved to the policy's device."""
    module_name, _, class_name = str(spec.loader).partition(":")
    with warnings.catch_warnings():  # library import noise (optional extras, deprecations) is not ours to show
        warnings.simplefilter("ignore")
        cls = getattr(importlib.import_module(module_name), class_name)
    if not hasattr(cls, "from_pretrained"):  # a loader function of our own: loader(folder, policy)
        return cls(folder, policy)
    kwargs = dict(spec.loader_kwargs)
    if module_name.split(".")[0] in ("transformers", "diffusers"):
        kwargs.setdefault("local_files_only", True)
        kwargs.setdefault("dtype", policy.torch_dtype)  # load in the policy's dtype rather than cast afterwards
    model = cls.from_pretrained(str(folder), **kwargs)
    return move_to_policy(model, policy)


def move_to_policy(model: Any, policy: DevicePolicy) -> Any:
    """Move a torch module or diffusers pipeline to the policy's device and dtype; other objects
    (processors, detectors without ``.to``) are returned unchanged."""
    import torch

    if isinstance(model, torch.nn.Module):
        return model.to(device=policy.device, dtype=policy.torch_dtype).eval()
    if hasattr(model, "components") and hasattr(model, "to"):  # a diffusers pipeline
        return model.to(policy.device, policy.torch_dtype)
    if hasattr(model, "to") and callable(model.to):
        try:
            return model.to(policy.device)
        except TypeError:
            return model
    return model


class ModelRegistry:
    """Resolves model ids to local folders and keeps a small LRU of loaded models.

    Args:
        specs: the models to register.
        capacity: how many loaded models stay in memory.
        allow_downloads: fetch missing weights from the Hugging Face Hub (default: the
            ``SEGSTUDIO_ALLOW_DOWNLOADS`` environment variable).
    """

    def __init__(self, specs: list[ModelSpec] | None = None, capacity: int = 2, allow_downloads: bool | None = None):
        if capacity < 1:
            raise InvalidInput(f"model cache capacity must be at least 1, got {capacity}")
        self._specs: dict[str, ModelSpec] = {}
        self._loaded: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
        self._lock = threading.RLock()
        self.capacity = capacity
        self.allow_downloads = downloads_allowed() if allow_downloads is None else allow_downloads
        for spec in specs or []:
            self.register(spec)

    # ---- registration -------------------------------------------------------------------

    def register(self, spec: ModelSpec) -> None:
        """Add (or replace) a model."""
        if not spec.id or not spec.repo_id or not spec.required_files:
            raise InvalidInput(f"model spec {spec.id!r} needs an id, a repo_id and required_files")
        self._specs[spec.id] = spec

    def spec(self, model_id: str) -> ModelSpec:
        """The spec of a registered model.

        Raises:
            InvalidInput: naming the unknown id and listing the registered ones.
        """
        try:
            return self._specs[model_id]
        except KeyError:
            raise InvalidInput(f"unknown model {model_id!r}; registered: {', '.join(sorted(self._specs))}") from None

    def specs(self, task: str | None = None) -> list[ModelSpec]:
        """Registered models (of one task when given), in registration order."""
        return [s for s in self._specs.values() if task is None or s.task == task]

    # ---- resolution ---------------------------------------------------------------------

    def local_folder(self, model_id: str) -> Path:
        """Where the model's weights belong in the local models folder."""
        return models_dir() / self.spec(model_id).repo_id

    def status(self, model_id: str) -> ModelStatus:
        """Whether the model's files are present, and where (never touches the network)."""
        spec = self.spec(model_id)
        local = self.local_folder(model_id)
        local_missing = _missing_files(local, spec.required_files)
        loaded = any(key[0] == model_id for key in self._loaded)
        if not local_missing:
            return ModelStatus(spec, True, local, (), "models dir", loaded)
        snapshot = _hf_snapshot(spec.repo_id)
        if snapshot is not None and not _missing_files(snapshot, spec.required_files):
            return ModelStatus(spec, True, snapshot, (), "hf cache", loaded)
        return ModelStatus(spec, False, local, local_missing, "", loaded)

    def statuses(self) -> list[ModelStatus]:
        """The status of every registered model."""
        return [self.status(model_id) for model_id in self._specs]

    def require(self, model_id: str, progress: ProgressFn | None = None) -> Path:
        """The folder holding the model's weights, downloading them first when allowed.

        Raises:
            ModelUnavailable: with the install message when the weights are absent.
        """
        status = self.status(model_id)
        if status.available:
            return status.folder
        if not self.allow_downloads:
            raise ModelUnavailable(status.install_message())
        (progress or no_progress)(None, f"downloading {status.spec.repo_id}")
        self._download(status.spec, status.folder)
        status = self.status(model_id)
        if not status.available:
            raise ModelUnavailable(
                f"download of {status.spec.repo_id} finished but {', '.join(status.missing)} are still missing"
            )
        return status.folder

    @staticmethod
    def _download(spec: ModelSpec, folder: Path) -> None:
        from huggingface_hub import snapshot_download

        patterns = [name for rule in spec.required_files for name in rule]
        patterns += ["*.json", "*.txt", "*.model"]
        try:
            snapshot_download(spec.repo_id, local_dir=str(folder), allow_patterns=patterns)
        except Exception as exc:  # network, auth, missing repo: all mean "not available"
            raise ModelUnavailable(f"could not download {spec.repo_id} into {folder}: {exc}") from exc

    # ---- loading ------------------------------------------------------------------------

    def load(self, model_id: str, policy: DevicePolicy | None = None, progress: ProgressFn | None = None) -> Any:
        """The loaded model, from the in-memory cache or loaded now.

        Args:
            model_id: a registered id.
            policy: device and dtype (default :func:`core.device.resolve_policy`).
            progress: receives a message while loading.

        Raises:
            ModelUnavailable: the weights are missing, or present but unreadable.
        """
        policy = policy or resolve_policy()
        key = (model_id, policy.device, policy.dtype_name)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            spec = self.spec(model_id)
            folder = self.require(model_id, progress)
            (progress or no_progress)(None, f"loading {spec.id} from {folder}")
            try:
                model = spec.loader(folder, policy) if callable(spec.loader) else _generic_load(spec, folder, policy)
            except ModelUnavailable:
                raise
            except Exception as exc:  # corrupt or incompatible weights: report, keep the cache intact
                raise ModelUnavailable(
                    f"model {spec.id!r} could not be loaded from {folder}: {type(exc).__name__}: {exc}. "
                    f"Check that the folder holds {spec.file_list()} from {spec.repo_id}"
                ) from exc
            self._loaded[key] = model
            while len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
            return model

    def loaded_ids(self) -> list[str]:
        """Ids of the models in memory, least recently used first."""
        return [key[0] for key in self._loaded]

    def unload(self, model_id: str | None = None) -> None:
        """Drop one model (or all) from memory."""
        with self._lock:
            for key in [k for k in self._loaded if model_id is None or k[0] == model_id]:
                del self._loaded[key]


def _annotator(model_id: str, detector: str, files: tuple[str, ...], description: str, repo: str = "lllyasviel/Annotators",
               **kwargs: Any) -> ModelSpec:  # fmt: skip
    return ModelSpec(
        model_id, repo, "edge-detector", f"controlnet_aux:{detector}", tuple((f,) for f in files),
        loader_kwargs=kwargs, description=description,
    )  # fmt: skip


def _diffusers_component(model_id: str, repo: str, task: str, cls: str, description: str, size: str) -> ModelSpec:
    base = "sdxl" if "sdxl" in model_id else "sd15"
    return ModelSpec(model_id, repo, task, f"diffusers:{cls}", (("config.json",), DIFFUSERS_WEIGHTS),
                     description=description, download_size=size, base=base)  # fmt: skip


def _diffusers_pipeline(model_id: str, repo: str, cls: str, description: str, size: str,
                        text_encoders: tuple[str, ...] = ("",)) -> ModelSpec:  # fmt: skip
    rules: tuple[FileRule, ...] = (
        ("model_index.json",), ("unet/config.json",), tuple(f"unet/{n}" for n in DIFFUSERS_WEIGHTS),
        ("vae/config.json",), tuple(f"vae/{n}" for n in DIFFUSERS_WEIGHTS),
    )  # fmt: skip
    for suffix in text_encoders:
        rules += (
            (f"text_encoder{suffix}/config.json",), tuple(f"text_encoder{suffix}/{n}" for n in TRANSFORMERS_WEIGHTS),
            # transformers 5 saves CLIP tokenizers as tokenizer.json; the Hub repos hold vocab.json + merges.txt
            (f"tokenizer{suffix}/vocab.json", f"tokenizer{suffix}/tokenizer.json"),
            (f"tokenizer{suffix}/merges.txt", f"tokenizer{suffix}/tokenizer.json"),
        )  # fmt: skip
    return ModelSpec(model_id, repo, "diffusion-base", f"diffusers:{cls}", rules, description=description,
                     download_size=size)  # fmt: skip


def default_specs() -> list[ModelSpec]:
    """The models SegStudio knows out of the box."""
    return [
        ModelSpec(
            "sam-vit-base", "facebook/sam-vit-base", "box-prompt", "core.refine.sam:load_sam",
            (("config.json",), TRANSFORMERS_WEIGHTS, ("preprocessor_config.json", "processor_config.json")),
            description="Segment Anything (ViT-B): box prompt -> mask", download_size="375 MB",
        ),
        _annotator("hed", "HEDdetector", ("ControlNetHED.pth",), "HED soft edges (controlnet-aux)"),
        _annotator("pidinet", "PidiNetDetector", ("table5_pidinet.pth",), "PiDiNet sketch edges (controlnet-aux)"),
        _annotator("lineart", "LineartDetector", ("sk_model.pth", "sk_model2.pth"), "Learned line art (controlnet-aux)"),
        _annotator("teed", "TEEDdetector", ("5_model.pth",), "TEED tiny edge detector (controlnet-aux)",
                   repo="fal-ai/teed", filename="5_model.pth"),
        ModelSpec(
            "blip-captioner", "Salesforce/blip-image-captioning-base", "captioner", "core.priors.prompts:load_captioner",
            (("config.json",), TRANSFORMERS_WEIGHTS, ("preprocessor_config.json", "processor_config.json"),
             ("tokenizer_config.json",)),
            description="BLIP image captioning (base); any image-to-text model works in its place", download_size="990 MB",
        ),
        ModelSpec(
            "clip-vit-b32", "openai/clip-vit-base-patch32", "image-text-score", "core.export.quality:load_clip",
            (("config.json",), TRANSFORMERS_WEIGHTS, ("preprocessor_config.json", "processor_config.json"),
             ("tokenizer_config.json",)),
            description="CLIP ViT-B/32: image-text score of generated samples (export quality)", download_size="600 MB",
        ),
        _diffusers_pipeline("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "StableDiffusionPipeline",
                            "Stable Diffusion 1.5 base model", "4 GB"),
        _diffusers_component("controlnet-sd15-seg", "lllyasviel/control_v11p_sd15_seg", "controlnet", "ControlNetModel",
                             "ControlNet 1.1 segmentation (ADE20K colours), SD 1.5", "1.4 GB"),
        _diffusers_component("controlnet-sd15-softedge", "lllyasviel/control_v11p_sd15_softedge", "controlnet",
                             "ControlNetModel", "ControlNet 1.1 soft edge (HED / PiDiNet), SD 1.5", "1.4 GB"),
        _diffusers_component("controlnet-sd15-lineart", "lllyasviel/control_v11p_sd15_lineart", "controlnet",
                             "ControlNetModel", "ControlNet 1.1 line art, SD 1.5", "1.4 GB"),
        _diffusers_component("controlnet-sd15-canny", "lllyasviel/control_v11p_sd15_canny", "controlnet",
                             "ControlNetModel", "ControlNet 1.1 Canny edges, SD 1.5", "1.4 GB"),
        _diffusers_component("t2i-adapter-sd15-sketch", "TencentARC/t2iadapter_sketch_sd15v2", "t2i-adapter",
                             "T2IAdapter", "T2I-Adapter sketch, SD 1.5", "300 MB"),
        _diffusers_pipeline("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", "StableDiffusionXLPipeline",
                            "Stable Diffusion XL base 1.0", "7 GB", text_encoders=("", "_2")),
        _diffusers_component("t2i-adapter-sdxl-lineart", "TencentARC/t2i-adapter-lineart-sdxl-1.0", "t2i-adapter",
                             "T2IAdapter", "T2I-Adapter line art, SDXL", "160 MB"),
        _diffusers_component("controlnet-sdxl-canny", "diffusers/controlnet-canny-sdxl-1.0", "controlnet",
                             "ControlNetModel", "ControlNet Canny, SDXL", "2.5 GB"),
    ]  # fmt: skip


_default_registry: ModelRegistry | None = None
_default_lock = threading.Lock()


def default_registry() -> ModelRegistry:
    """The process-wide registry holding :func:`default_specs`."""
    global _default_registry
    with _default_lock:
        if _default_registry is None:
            _default_registry = ModelRegistry(default_specs())
        return _default_registry
