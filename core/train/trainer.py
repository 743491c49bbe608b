"""Training runs: ``train(config, out_dir)`` writes a run folder and can resume it exactly.

Run folder::

    config.json                  the TrainConfig (steps updated on resume)
    log.jsonl                    one line per logged step: {"step", "seconds", "losses": {...}}
    grids/step_000100.png        fixed-noise samples: images beside their colourised label maps
    checkpoints/step_000100/     generator.safetensors, generator_ema.safetensors, critic.safetensors
                                 (the discriminator for label2image), state.pt (optimizers, grad scalers,
                                 torch / numpy / python RNG states)
    checkpoint.json              the latest complete checkpoint: step, files and their sha256, classes
    eval.json                    per-class colour statistics of the EMA generator at the latest checkpoint
                                 (FID / KID too at the last step; see :mod:`core.train.evaluate`)

Every file is written atomically and ``checkpoint.json`` last, so a crash or a cancel leaves the previous
checkpoint or the new one, never half of one. All randomness of step ``t`` (batch choice, noise, the
gradient penalty's mixing weights, LabelMix masks, DiffAugment's parameters) comes from generators seeded with
``(seed, t)``, and training runs with ``torch.use_deterministic_algorithms(True)``: on the CPU a run resumed
from step ``k`` ends bitwise equal to an uninterrupted one.

What the discriminator / critic sees goes through DiffAugment (``config.diffaugment``, :mod:`core.train.augment`):
real and fake alike, and the generator's loss through the same transforms. label2image runs the generator once
per step (the discriminator learns on its output detached, then the generator through the updated
discriminator) and scores real, fake and LabelMix images in one discriminator batch; pair scores real and fake
in one critic batch. Issue 13's speed figures: ``benchmarks/gan.py``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import Cancelled, InvalidInput
from core.io.atomic import atomic_write, atomic_write_text
from core.progress import CancelToken, ProgressFn, no_progress
from core.train.augment import DiffAugment, augment, augment_labels
from core.train.config import TrainConfig
from core.train.data import TrainData, load_train_data, one_hot
from core.train.losses import (
    gradient_penalty,
    labelmix_loss,
    labelmix_mask,
    oasis_fake_loss,
    oasis_real_loss,
    wgan_critic_loss,
    wgan_generator_loss,
)
from core.train.nets import build_networks

if TYPE_CHECKING:
    import torch
    from torch.nn import functional as F  # noqa: F401

CHECKPOINT_FILE = "checkpoint.json"
NET_FILES = {"generator": "generator.safetensors", "generator_ema": "generator_ema.safetensors",
             "critic": "critic.safetensors"}  # fmt: skip
STATE_FILE = "state.pt"
KEEP_CHECKPOINTS = 2
# Settings a resumed run must share with the run it continues (the rest, e.g. steps, may change).
FIXED_ON_RESUME = ("kind", "size", "batch", "seed", "width", "z_dim", "lr_g", "lr_d", "beta1", "beta2",
                   "n_critic", "gp_lambda", "labelmix_lambda", "ema_decay", "diffaugment")  # fmt: skip
# Random streams of a step: 0 noise, mixing weights and LabelMix maps; 1 the fixed sample noise; 2 DiffAugment.
AUGMENT_STREAM = 2


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed for ``(seed, step, stream)``: the randomness of one training step, independent of others."""
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def to_image_tensor(images: np.ndarray, device) -> torch.Tensor:
    """``B x H x W x 3 uint8`` -> ``B x 3 x H x W float32`` in ``[-1, 1]``."""
    import torch
    t = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """``B x 3 x H x W`` in ``[-1, 1]`` -> ``B x H x W x 3 uint8``."""
    import torch
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def present_mask(num_classes: int, present: list[int], device) -> torch.Tensor:
    """``C`` additive mask: 0 for the dataset's present classes, -1e4 for the others."""
    import torch
    mask = torch.full((num_classes,), -1e4, device=device)
    mask[torch.as_tensor(present, device=device)] = 0.0
    return mask


def pair_scores(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Class probabilities over the present classes (absent ones ~0): ``B x C x H x W`` float32."""
    import torch
    return torch.softmax(logits.float() + mask.view(1, -1, 1, 1), dim=1)


def pair_labels(logits: torch.Tensor, present: list[int]) -> torch.Tensor:
    """Argmax over the present classes only, as class indices: ``B x H x W`` uint8."""
    import torch
    idx = torch.as_tensor(present, device=logits.device)
    choice = logits[:, idx].argmax(dim=1)
    return idx[choice].to(torch.uint8)


def spatial_noise(z: torch.Tensor, size: int) -> torch.Tensor:
    """OASIS's 3D noise: ``B x z_dim`` broadcast to ``B x z_dim x size x size``."""
    return z[:, :, None, None].expand(-1, -1, size, size)


def _no_grad(method):
    """``torch.no_grad()`` as a decorator, without importing torch when this module is imported."""

    @functools.wraps(method)
    def run(*args, **kwargs):
        import torch

        with torch.no_grad():
            return method(*args, **kwargs)

    return run


@dataclass
class TrainResult:
    """What a finished run left: its folder, the step reached, the last losses and timing."""

    run_dir: Path
    step: int
    losses: dict = field(default_factory=dict)
    seconds: float = 0.0
    steps_per_second: float = 0.0
    resumed_from: int = 0


class _Run:
    """Networks, optimizers and data of one run, on one device."""

    def __init__(self, config: TrainConfig, data: TrainData):
        import torch

        from core.device import resolve_policy

        self.config, self.data = config, data
        policy = resolve_policy(config.device)
        self.device = torch.device(policy.device)
        self.amp = bool(config.amp and policy.is_cuda)
        self.num_classes = data.num_classes
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            g, d = build_networks(config.kind, config.size, self.num_classes, config.width, config.z_dim)
        self.g, self.d = g.to(self.device), d.to(self.device)
        self.g_ema = copy.deepcopy(self.g).eval()
        for p in self.g_ema.parameters():
            p.requires_grad_(False)
        betas = (config.beta1, config.beta2)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=config.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=config.lr_d, betas=betas)
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.mask = present_mask(self.num_classes, data.present, self.device)
        self.augment = DiffAugment(config.diffaugment)

    # ---- one step -------------------------------------------------------------------------

    def autocast(self):
        import torch
        return torch.autocast("cuda", dtype=torch.float16, enabled=self.amp)

    def _real(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        import torch
        images, labels = self.data.batch(index, self.config.batch, self.config.seed)
        real = to_image_tensor(images, self.device)
        onehot = torch.from_numpy(one_hot(labels, self.num_classes)).to(self.device)
        return real, onehot, torch.from_numpy(labels.astype(np.int64)).to(self.device)

    def _noise(self, gen: torch.Generator, batch: int) -> torch.Tensor:
        import torch
        return torch.randn(batch, self.config.z_dim, generator=gen).to(self.device)

    def _update(self, opt, scaler, loss) -> None:
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def step(self, step: int) -> dict:
        import torch
        gen = torch.Generator().manual_seed(step_seed(self.config.seed, step))
        aug = torch.Generator().manual_seed(step_seed(self.config.seed, step, AUGMENT_STREAM))
        if self.config.kind == "pair":
            losses = self._pair_step(step, gen, aug)
        else:
            losses = self._label2image_step(step, gen, aug)
        self._update_ema(step)
        return losses

    def _augment(self, x: torch.Tensor, aug: torch.Generator, labels: torch.Tensor | None = None, times: int = 1):
        """DiffAugment ``x`` (``times`` stacked copies of a batch share each sample's parameters) and move
        ``labels`` (``B x S x S``) alike. Returns ``(x, labels, moved)`` with ``moved`` the ``B x S x S`` bool map
        of pixels still in place (not moved in, not cut out), or ``None`` when augmentation is off."""
        import torch
        if not self.augment:
            return x, labels, None
        params = self.augment.draw(x.shape[0] // times, x.shape[-1], aug)
        out = augment(x, params.repeat(times) if times > 1 else params)
        if labels is None:
            return out, None, None
        kept = augment_labels(torch.zeros_like(labels), params) == 0
        return out, augment_labels(labels, params), kept

    def _pair_step(self, step: int, gen: torch.Generator, aug: torch.Generator) -> dict:
        import torch
        cfg, b = self.config, self.config.batch
        for k in range(cfg.n_critic):
            real, onehot, _ = self._real(step * cfg.n_critic + k)
            with torch.no_grad(), self.autocast():
                fake, logits = self.g(self._noise(gen, b))
            both = torch.cat([torch.cat([real, onehot], 1), torch.cat([fake.float(), pair_scores(logits, self.mask)], 1)])
            both = self._augment(both, aug)[0]  # real and fake alike, each sample its own parameters
            with self.autocast():
                scores = self.d(both[:, :3], both[:, 3:])
                wd = wgan_critic_loss(scores[:b], scores[b:])
            eps = torch.rand(b, generator=gen).to(self.device)
            gp = gradient_penalty(lambda x: self.d(x[:, :3], x[:, 3:]), both[:b], both[b:], eps)  # fp32
            loss_d = wd.float() + cfg.gp_lambda * gp
            self._update(self.opt_d, self.scaler_d, loss_d)
        for p in self.d.parameters():
            p.requires_grad_(False)
        with self.autocast():
            fake, logits = self.g(self._noise(gen, b))
            x = self._augment(torch.cat([fake, pair_scores(logits, self.mask).to(fake.dtype)], 1), aug)[0]
            loss_g = wgan_generator_loss(self.d(x[:, :3], x[:, 3:]))
        self._update(self.opt_g, self.scaler_g, loss_g.float())
        for p in self.d.parameters():
            p.requires_grad_(True)
        return {"critic": loss_d.item(), "wasserstein": -wd.item(), "gp": gp.item(), "generator": loss_g.item()}

    def _label2image_step(self, step: int, gen: torch.Generator, aug: torch.Generator) -> dict:
        """One OASIS step. The generator runs once: the discriminator learns on its output detached, then the
        generator learns through the updated discriminator on the same output (no second generator pass).
        The discriminator sees real, fake and (with LabelMix) mixed images in one batch, all three with the
        same DiffAugment parameters per sample, so the label map moves with them."""
        import torch
        cfg, b, s = self.config, self.config.batch, self.config.size
        real, onehot, labels = self._real(step)
        with self.autocast():
            fake = self.g(onehot, spatial_noise(self._noise(gen, b), s))
        pair, labels_d, valid = self._augment(torch.cat([real, fake.detach().to(real.dtype)]), aug, labels, times=2)
        real_d, fake_d = pair[:b], pair[b:]
        with self.autocast():
            inputs, mask = [real_d, fake_d], None
            if cfg.labelmix_lambda > 0:
                mask = labelmix_mask(labels_d, gen)
                inputs.append(mask * real_d + (1 - mask) * fake_d)
            out = self.d(torch.cat(inputs))
            loss_real = oasis_real_loss(out[:b], labels_d)
            loss_fake = oasis_fake_loss(out[b : 2 * b], valid)
            loss_d = loss_real + loss_fake
            loss_lm = torch.zeros((), device=self.device)
            if mask is not None:
                loss_lm = labelmix_loss(out[2 * b :], out[:b], out[b : 2 * b], mask)
                loss_d = loss_d + cfg.labelmix_lambda * loss_lm
        self._update(self.opt_d, self.scaler_d, loss_d.float())
        for p in self.d.parameters():
            p.requires_grad_(False)
        with self.autocast():
            fake_g, labels_g, _ = self._augment(fake, aug, labels)
            loss_g = oasis_real_loss(self.d(fake_g), labels_g)
        self._update(self.opt_g, self.scaler_g, loss_g.float())
        for p in self.d.parameters():
            p.requires_grad_(True)
        return {"d_real": loss_real.item(), "d_fake": loss_fake.item(), "labelmix": loss_lm.item(),
                "generator": loss_g.item()}  # fmt: skip

    @_no_grad
    def _update_ema(self, step: int) -> None:
        decay = min(self.config.ema_decay, (1 + step) / (10 + step))
        for pe, p in zip(self.g_ema.parameters(), self.g.parameters(), strict=True):
            pe.mul_(decay).add_(p.detach(), alpha=1 - decay)
        for be, b in zip(self.g_ema.buffers(), self.g.buffers(), strict=True):
            be.copy_(b)

    # ---- checkpoints ----------------------------------------------------------------------------

    def save(self, run_dir: Path, step: int) -> Path:
        import torch
        from safetensors.torch import save_file

        folder = run_dir / "checkpoints" / f"step_{step:06d}"
        nets = {"generator": self.g, "generator_ema": self.g_ema, "critic": self.d}
        files = {}
        for name, net in nets.items():
            tensors = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
            meta = {"kind": self.config.kind, "net": name, "step": str(step)}
            atomic_write(folder / NET_FILES[name], lambda tmp, t=tensors, m=meta: save_file(t, str(tmp), metadata=m))
            files[name] = {"file": f"{folder.name}/{NET_FILES[name]}", "sha256": sha256_file(folder / NET_FILES[name])}
        state = {
            "step": step,
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(), "scaler_d": self.scaler_d.state_dict(),
            "rng": _rng_state(),
        }  # fmt: skip
        atomic_write(folder / STATE_FILE, lambda tmp: torch.save(state, tmp))
        doc = {"step": step, "folder": f"checkpoints/{folder.name}", "nets": files,
               "state": {"file": f"{folder.name}/{STATE_FILE}", "sha256": sha256_file(folder / STATE_FILE)},
               "classes": self.data.classes.to_json(), "present": self.data.present,
               "config": self.config.to_json()}  # fmt: skip
        atomic_write_text(run_dir / CHECKPOINT_FILE, json.dumps(doc, indent=2) + "\n")
        older = sorted(p for p in (run_dir / "checkpoints").glob("step_*") if p != folder)
        for stale in older[: max(0, len(older) - (KEEP_CHECKPOINTS - 1))]:
            for f in stale.iterdir():
                f.unlink()
            stale.rmdir()
        return folder

    def load(self, run_dir: Path) -> int:
        import torch
        from safetensors.torch import load_file

        doc = read_checkpoint(run_dir)
        folder = run_dir / doc["folder"]
        for name, net in {"generator": self.g, "generator_ema": self.g_ema, "critic": self.d}.items():
            net.load_state_dict(load_file(str(folder / NET_FILES[name]), device=str(self.device)))
        state = torch.load(folder / STATE_FILE, map_location=self.device, weights_only=True)
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        self.scaler_d.load_state_dict(state["scaler_d"])
        _set_rng_state(state["rng"])
        return int(state["step"])

    # ---- samples ----------------------------------------------------------------------------------

    @_no_grad
    def sample_grid(self, fixed_maps: np.ndarray) -> np.ndarray:
        """Images beside their colourised label maps from the EMA generator with the run's fixed noise."""
        import torch

        from core.viz import colorize, grid

        cfg = self.config
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, 0, stream=1))
        z = self._noise(gen, cfg.samples)
        if cfg.kind == "pair":
            images, logits = self.g_ema(z)
            labels = pair_labels(logits, self.data.present).cpu().numpy()
        else:
            labels = fixed_maps
            onehot = torch.from_numpy(one_hot(labels, self.num_classes)).to(self.device)
            images = self.g_ema(onehot, spatial_noise(z, cfg.size))
        tiles = []
        for image, lab in zip(to_uint8_images(images), labels, strict=True):
            tiles += [image, colorize(lab, self.data.classes)]
        return grid(tiles, columns=min(8, len(tiles)), cell=max(64, cfg.size))

    @_no_grad
    def evaluate(self, run_dir: Path, step: int, fid: bool) -> dict:
        """Evaluate the EMA generator as :func:`core.train.evaluate.evaluate_run` would the checkpoint just
        written (``eval_samples`` samples, the run's seed) and write ``eval.json``; training state and the
        global RNGs are untouched."""
        from core.train.evaluate import evaluate_model, write_eval
        from core.train.generation import GanModel

        cfg = self.config
        sha = read_checkpoint(run_dir)["nets"]["generator_ema"]["sha256"]
        model = GanModel(run_dir.resolve(), cfg.kind, cfg.size, cfg.z_dim, self.data.classes, list(self.data.present),
                         step, sha, True, self.g_ema, str(self.device))  # fmt: skip
        doc = evaluate_model(model, self.data, n=cfg.eval_samples, seed=cfg.seed, fid=fid)
        write_eval(run_dir, doc)
        return doc


def _rng_state() -> dict:
    import torch
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos),
             int(has_gauss), float(cached)], "python": random.getstate()}  # fmt: skip
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import torch
    torch.set_rng_state(state["torch"].cpu())
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def read_checkpoint(run_dir: Path) -> dict:
    """The run's ``checkpoint.json``.

    Raises:
        InvalidInput: the folder holds no complete checkpoint.
    """
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise InvalidInput(f"{run_dir} holds no checkpoint ({CHECKPOINT_FILE} missing); train a run there first")
    return json.loads(path.read_text(encoding="utf-8"))


def _read_log(run_dir: Path, up_to: int) -> tuple[list[str], float]:
    """Log lines with ``step <= up_to`` and the seconds reached by the last of them."""
    from core.io.runlog import log_up_to

    return log_up_to(run_dir / "log.jsonl", up_to)


def _check_resume(old: TrainConfig, new: TrainConfig) -> None:
    changed = [k for k in FIXED_ON_RESUME if getattr(old, k) != getattr(new, k)]
    if changed:
        diffs = ", ".join(f"{k}: {getattr(old, k)!r} -> {getattr(new, k)!r}" for k in changed)
        raise InvalidInput(f"cannot resume with changed settings ({diffs}); only steps, intervals, device and amp "
                           f"may change; start a new run folder for other settings")  # fmt: skip


def train(
    config: TrainConfig,
    out_dir: str | Path,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    *,
    resume: bool = False,
    cache_dir: Path | None = None,
) -> TrainResult:
    """Train a GAN on a dataset and write its run folder (see the module docstring).

    Args:
        config: the settings; with ``resume``, the run's own config is used except ``steps``, the intervals,
            ``device`` and ``amp`` (other changes are refused).
        out_dir: the run folder (created when missing).
        progress: called with ``(step / steps, message)`` after every step.
        cancel: checked before every step; when set, a checkpoint of the current step is written and
            :class:`core.errors.Cancelled` raised (``resume`` continues from there).
        resume: continue the run in ``out_dir`` from its latest checkpoint (a folder without one starts fresh).
        cache_dir: the dataset's workspace folder (default: the store's).

    Raises:
        InvalidInput: ``out_dir`` already holds a run and ``resume`` is false; settings changed on resume; the
            dataset has no usable labelled sample.
        Cancelled: ``cancel`` was set.
    """
    import torch
    report = progress or no_progress
    run_dir = Path(out_dir)
    has_ckpt = (run_dir / CHECKPOINT_FILE).is_file()
    if (has_ckpt or (run_dir / "config.json").is_file()) and not resume:
        raise InvalidInput(
            f"{run_dir} already holds a training run; pass resume to continue it, or choose a new folder"
        )
    if has_ckpt:
        old = TrainConfig.from_json(json.loads((run_dir / "config.json").read_text(encoding="utf-8")))
        _check_resume(old, config)
        config = old.replace(steps=config.steps, sample_every=config.sample_every, log_every=config.log_every,
                             checkpoint_every=config.checkpoint_every, device=config.device, amp=config.amp,
                             samples=config.samples)  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", json.dumps(config.to_json(), indent=2) + "\n")

    data = load_train_data(config.data, config.size, cache_dir=cache_dir, cancel=cancel)
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory
    run = _Run(config, data)
    torch.use_deterministic_algorithms(True, warn_only=run.device.type != "cpu")
    if run.device.type != "cpu":
        from core.device import quiet_nondeterminism_warnings

        quiet_nondeterminism_warnings()
    # Deterministic mode also fills every new tensor with NaN, a tenth of a CPU step; nothing here reads
    # uninitialised memory, so that fill is off while training.
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        start = run.load(run_dir) if has_ckpt else 0
        if start > config.steps:
            raise InvalidInput(f"the run is at step {start}, past steps={config.steps}; ask for more steps to resume")
        log_lines, seconds0 = _read_log(run_dir, start)
        atomic_write_text(run_dir / "log.jsonl", "".join(line + "\n" for line in log_lines))
        fixed_maps = data.label_maps[: config.samples]
        if len(fixed_maps) < config.samples:  # fewer samples than grid tiles: repeat them
            fixed_maps = np.resize(fixed_maps, (config.samples, *fixed_maps.shape[1:]))
        began, losses, saved = time.perf_counter(), {}, start
        with open(run_dir / "log.jsonl", "a", encoding="utf-8") as log:
            for step in range(start, config.steps):
                if cancel is not None and cancel.cancelled:
                    if saved != step:
                        run.save(run_dir, step)
                    raise Cancelled(f"training was cancelled at step {step}; a checkpoint is in {run_dir} "
                                    f"(resume continues from step {step})")  # fmt: skip
                run.g.train()
                losses = run.step(step)
                done = step + 1
                elapsed = seconds0 + time.perf_counter() - began
                if not all(np.isfinite(v) for v in losses.values()):
                    if saved != step:
                        run.save(run_dir, step)
                    raise InvalidInput(f"training diverged at step {done} (losses {losses}); lower the learning "
                                       f"rates or resume from the checkpoint in {run_dir}")  # fmt: skip
                if done % config.log_every == 0 or done == config.steps:
                    log.write(json.dumps({"step": done, "seconds": round(elapsed, 4), "losses": losses}) + "\n")
                    log.flush()
                if config.sample_every and (done % config.sample_every == 0 or done == config.steps):
                    from core.io.images import save_image

                    save_image(run_dir / "grids" / f"step_{done:06d}.png", run.sample_grid(fixed_maps))
                if done % config.checkpoint_every == 0 or done == config.steps:
                    run.save(run_dir, done)
                    saved = done
                    if config.eval_samples:
                        run.evaluate(run_dir, done, fid=done == config.steps)
                rate = (done - start) / max(1e-9, time.perf_counter() - began)
                eta = (config.steps - done) / rate if rate > 0 else 0.0
                report(done / config.steps, f"step {done}/{config.steps}, {rate:.2f} steps/s, ETA {eta:.0f} s")
        wall = time.perf_counter() - began
        trained = config.steps - start
        return TrainResult(run_dir, config.steps, losses, seconds0 + wall, trained / wall if trained and wall > 0 else 0.0,
                           resumed_from=start)  # fmt: skip
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
        torch.utils.deterministic.fill_uninitialized_memory = previous_fill
