"""GAN training and generation speed (issue 13).

    python benchmarks/gan.py [--steps 1] [--quick] [--threads N] [--device auto|cpu|cuda]

1. Training steps per second at 128 x 128, batch 8, width 32 for both kinds, with each kind's defaults
   (TrainConfig.for_kind, DiffAugment included), next to the straightforward implementation this engine
   started from, measured in the same run on the same data and device, interleaved step by step:
   - label2image reference: 64 noise channels; every SPADE norm with its own conditioning conv on the
     one-hot + noise channels and its own 3 x 3 gamma and beta convs; a second generator pass for the
     generator's step; LabelMix with three extra discriminator passes; a concatenating U-Net decoder;
   - pair reference: upsample + 3 x 3 conv generator; real and fake scored in separate critic calls;
   - both: deterministic mode's NaN fill of new tensors left on.
   The ratio is reference seconds per step / ours. Wall time and process CPU time are both printed (CPU time
   is steadier on a shared machine).
2. Generation (EMA generator, eval mode, no grad, batch 16): images per second at 128 and 256 for both kinds,
   ours next to the reference networks.

On CUDA (when present) training runs with AMP (fp16 autocast), as train() does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.train.config import TrainConfig  # noqa: E402
from core.train.data import load_train_data  # noqa: E402
from core.train.losses import (  # noqa: E402
    gradient_penalty,
    oasis_fake_loss,
    oasis_real_loss,
    wgan_critic_loss,
    wgan_generator_loss,
)
from core.train.nets import _ch, _levels, network_classes  # noqa: E402
from core.train.toy import write_toy_dataset  # noqa: E402
from core.train.trainer import _Run, pair_scores, spatial_noise  # noqa: E402

SIZE, BATCH, WIDTH = 128, 8, 32
REFERENCE = {"label2image": {"z_dim": 64, "diffaugment": ""}, "pair": {"z_dim": 64, "diffaugment": ""}}


def reference_networks():
    """The networks as first written (issue 13's engine before the speed work), for the anchor."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Spade(nn.Module):
        def __init__(self, channels, cond, hidden):
            super().__init__()
            self.norm = nn.InstanceNorm2d(channels, affine=False)
            self.shared = nn.Sequential(nn.Conv2d(cond, hidden, 3, padding=1), nn.ReLU())
            self.gamma, self.beta = nn.Conv2d(hidden, channels, 3, padding=1), nn.Conv2d(hidden, channels, 3, padding=1)

        def forward(self, x, cond):
            h = self.shared(F.interpolate(cond, size=x.shape[-2:], mode="nearest"))
            return self.norm(x) * (1 + self.gamma(h)) + self.beta(h)

    class SpadeBlock(nn.Module):
        def __init__(self, cin, cout, cond, hidden):
            super().__init__()
            mid = min(cin, cout)
            self.norm1, self.conv1 = Spade(cin, cond, hidden), nn.Conv2d(cin, mid, 3, padding=1)
            self.norm2, self.conv2 = Spade(mid, cond, hidden), nn.Conv2d(mid, cout, 3, padding=1)
            self.skip = None
            if cin != cout:
                self.skip_norm, self.skip = Spade(cin, cond, hidden), nn.Conv2d(cin, cout, 1, bias=False)

        def forward(self, x, cond):
            s = x if self.skip is None else self.skip(self.skip_norm(x, cond))
            h = self.conv1(F.leaky_relu(self.norm1(x, cond), 0.2))
            return s + self.conv2(F.leaky_relu(self.norm2(h, cond), 0.2))

    class SpadeGenerator(nn.Module):
        def __init__(self, size, num_classes, width, z_dim):
            super().__init__()
            self.start, levels, cond = min(4, size), _levels(size, min(4, size)), num_classes + z_dim
            self.inp = nn.Conv2d(cond, _ch(width, 0, levels), 3, padding=1)
            self.blocks, cin = nn.ModuleList(), _ch(width, 0, levels)
            for level in range(levels + 1):
                cout = _ch(width, level, levels)
                self.blocks.append(SpadeBlock(cin, cout, cond, max(16, width)))
                cin = cout
            self.out = nn.Conv2d(cin, 3, 3, padding=1)

        def forward(self, onehot, noise):
            cond = torch.cat([onehot, noise], dim=1)
            x = self.inp(F.interpolate(cond, size=(self.start, self.start), mode="nearest"))
            for i, block in enumerate(self.blocks):
                x = block(x if i == 0 else F.interpolate(x, scale_factor=2, mode="nearest"), cond)
            return torch.tanh(self.out(F.leaky_relu(x, 0.2)))

    class SegDiscriminator(nn.Module):
        def __init__(self, size, num_classes, width):
            super().__init__()
            depth = max(1, min(3, _levels(size, 4)))
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.LeakyReLU(0.2))
            chans, cin, self.down, self.up = [width], width, nn.ModuleList(), nn.ModuleList()
            for level in range(depth):
                cout = width * min(8, 2 ** (level + 1))
                self.down.append(nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2)))
                cin = cout
                chans.append(cin)
            for level in reversed(range(depth)):
                self.up.append(nn.Sequential(nn.Conv2d(cin + chans[level], chans[level], 3, padding=1),
                                             nn.LeakyReLU(0.2)))  # fmt: skip
                cin = chans[level]
            self.head = nn.Conv2d(cin, num_classes + 1, 1)

        def forward(self, image):
            x = self.stem(image)
            skips = [x]
            for block in self.down:
                x = block(x)
                skips.append(x)
            skips.pop()
            for block in self.up:
                skip = skips.pop()
                x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip], dim=1))
            return self.head(x)

    class PairGenerator(nn.Module):
        def __init__(self, size, num_classes, width, z_dim):
            super().__init__()
            self.start, levels = min(4, size), _levels(size, min(4, size))
            self.c0 = _ch(width, 0, levels)
            self.project, self.bn0 = nn.Linear(z_dim, self.c0 * self.start**2), nn.BatchNorm2d(self.c0)
            blocks, cin = [], self.c0
            for level in range(1, levels + 1):
                cout = _ch(width, level, levels)
                blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1),
                           nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]  # fmt: skip
                cin = cout
            self.blocks, self.out = nn.Sequential(*blocks), nn.Conv2d(cin, 3 + num_classes, 3, padding=1)

        def forward(self, z):
            x = self.blocks(F.relu(self.bn0(self.project(z).view(z.shape[0], self.c0, self.start, self.start))))
            y = self.out(x)
            return torch.tanh(y[:, :3]), y[:, 3:]

    return {
        "SpadeGenerator": SpadeGenerator,
        "SegDiscriminator": SegDiscriminator,
        "PairGenerator": PairGenerator,
        "PairCritic": network_classes()["PairCritic"],
    }  # the critic did not change


class ReferenceRun(_Run):
    """The straightforward step on the reference networks (same data, batches, optimizers and EMA)."""

    def __init__(self, config: TrainConfig, data):
        import copy

        import torch

        super().__init__(config, data)
        ref = reference_networks()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            if config.kind == "pair":
                g = ref["PairGenerator"](config.size, self.num_classes, config.width, config.z_dim)
                d = ref["PairCritic"](config.size, self.num_classes, config.width)
            else:
                g = ref["SpadeGenerator"](config.size, self.num_classes, config.width, config.z_dim)
                d = ref["SegDiscriminator"](config.size, self.num_classes, config.width)
        self.g, self.d = g.to(self.device), d.to(self.device)
        self.g_ema = copy.deepcopy(self.g).eval()
        betas = (config.beta1, config.beta2)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=config.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=config.lr_d, betas=betas)

    def _pair_step(self, step, gen, aug):
        import torch

        cfg, b = self.config, self.config.batch
        for k in range(cfg.n_critic):
            real, onehot, _ = self._real(step * cfg.n_critic + k)
            with torch.no_grad(), self.autocast():
                fake, logits = self.g(self._noise(gen, b))
            fake, scores = fake.float(), pair_scores(logits, self.mask)
            with self.autocast():
                wd = wgan_critic_loss(self.d(real, onehot), self.d(fake, scores))
            eps = torch.rand(b, generator=gen).to(self.device)
            gp = gradient_penalty(self.d, (real, onehot), (fake, scores), eps)
            self._update(self.opt_d, self.scaler_d, wd.float() + cfg.gp_lambda * gp)
        for p in self.d.parameters():
            p.requires_grad_(False)
        with self.autocast():
            fake, logits = self.g(self._noise(gen, b))
            loss_g = wgan_generator_loss(self.d(fake, pair_scores(logits, self.mask)))
        self._update(self.opt_g, self.scaler_g, loss_g.float())
        for p in self.d.parameters():
            p.requires_grad_(True)
        return {"generator": loss_g.item()}

    def _label2image_step(self, step, gen, aug):
        import torch
        from torch.nn import functional as F

        cfg, b, s = self.config, self.config.batch, self.config.size
        real, onehot, labels = self._real(step)
        with torch.no_grad(), self.autocast():
            fake = self.g(onehot, spatial_noise(self._noise(gen, b), s))
        with self.autocast():
            loss_d = oasis_real_loss(self.d(real), labels) + oasis_fake_loss(self.d(fake))
            if cfg.labelmix_lambda > 0:
                pick = torch.randint(0, 2, (b, 256), generator=gen).to(labels.device)
                mask = torch.gather(pick, 1, labels.reshape(b, -1)).reshape(labels.shape).unsqueeze(1).to(real.dtype)
                out_mixed = self.d(mask * real + (1 - mask) * fake)
                target = mask * self.d(real) + (1 - mask) * self.d(fake)
                loss_d = loss_d + cfg.labelmix_lambda * F.mse_loss(out_mixed.float(), target.float())
        self._update(self.opt_d, self.scaler_d, loss_d.float())
        for p in self.d.parameters():
            p.requires_grad_(False)
        with self.autocast():
            fake = self.g(onehot, spatial_noise(self._noise(gen, b), s))
            loss_g = oasis_real_loss(self.d(fake), labels)
        self._update(self.opt_g, self.scaler_g, loss_g.float())
        for p in self.d.parameters():
            p.requires_grad_(True)
        return {"generator": loss_g.item()}


def _sync(run) -> None:
    import torch

    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)


def time_steps(runs: dict, steps: int) -> dict:
    """Seconds per step (median wall, median process CPU) of each run, one warm-up step each, then the runs'
    steps interleaved so that both see the same load."""
    import torch

    out = {name: ([], []) for name in runs}
    for step in range(steps + 1):
        for name, (run, fill) in runs.items():
            torch.utils.deterministic.fill_uninitialized_memory = fill
            wall, cpu = time.perf_counter(), time.process_time()
            run.g.train()
            run.step(step)
            _sync(run)
            if step:  # step 0 warms up
                out[name][0].append(time.perf_counter() - wall)
                out[name][1].append(time.process_time() - cpu)
    return {name: (statistics.median(w), statistics.median(c)) for name, (w, c) in out.items()}


def training_rows(data, root: str, steps: int, device: str = "auto") -> list[dict]:
    import torch

    rows = []
    previous = torch.are_deterministic_algorithms_enabled()
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)  # as train(): strict on the CPU, warn on CUDA
    try:
        for kind in ("label2image", "pair"):
            ours_cfg = TrainConfig.for_kind(kind, root, size=SIZE, batch=BATCH, width=WIDTH, device=device)
            ref_cfg = ours_cfg.replace(**REFERENCE[kind])
            runs = {"reference": (ReferenceRun(ref_cfg, data), True), "ours": (_Run(ours_cfg, data), False)}
            times = time_steps(runs, steps)
            (rw, rc), (ow, oc) = times["reference"], times["ours"]
            row = {"kind": kind, "device": str(runs["ours"][0].device), "amp": runs["ours"][0].amp,
                   "ref_s": rw, "ref_cpu_s": rc, "ours_s": ow, "ours_cpu_s": oc, "ratio": rw / ow,
                   "ratio_cpu": rc / oc, "settings": f"z_dim {ours_cfg.z_dim}, diffaugment '{ours_cfg.diffaugment}'"}  # fmt: skip
            rows.append(row)
            print(f"  measured {kind}: {row}", flush=True)
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.utils.deterministic.fill_uninitialized_memory = previous_fill
    return rows


def generation_rate(net, kind: str, size: int, num_classes: int, z_dim: int, device, seconds: float) -> float:
    """Images per second of a generator in eval mode, batch 16, fp32, no grad."""
    import torch

    net = net.to(device).eval()
    batch = 16

    def once(i: int) -> None:
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            if kind == "pair":
                net(torch.randn(batch, z_dim, generator=g).to(device))
            else:
                labels = torch.randint(0, num_classes, (batch, size, size), generator=g).to(device)
                onehot = torch.nn.functional.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()
                net(onehot, spatial_noise(torch.randn(batch, z_dim, generator=g).to(device), size))
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    once(0)
    count, start = 0, time.perf_counter()
    while count < 1 or time.perf_counter() - start < seconds:
        once(count + 1)
        count += 1
    return count * batch / (time.perf_counter() - start)


def generation_rows(sizes: tuple[int, ...], seconds: float, device) -> list[dict]:
    from core.train.nets import build_networks

    rows, ref, c = [], reference_networks(), 3
    for kind in ("label2image", "pair"):
        ours_z = TrainConfig.for_kind(kind, "x").z_dim
        for size in sizes:
            ours = build_networks(kind, size, c, WIDTH, ours_z)[0]
            old = (ref["PairGenerator"] if kind == "pair" else ref["SpadeGenerator"])(size, c, WIDTH, 64)
            r = generation_rate(old, kind, size, c, 64, device, seconds)
            o = generation_rate(ours, kind, size, c, ours_z, device, seconds)
            rows.append({"kind": kind, "size": size, "ref_ips": r, "ours_ips": o, "ratio": o / r})
            print(f"  measured generation {kind} {size}: {rows[-1]}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1, help="timed training steps per variant (after one warm-up)")
    parser.add_argument("--quick", action="store_true", help="1 timed step, generation at 128 only, 2 s each")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    args = parser.parse_args()
    import torch

    from core.device import resolve_policy

    if args.threads:
        torch.set_num_threads(args.threads)
    steps = 1 if args.quick else max(1, args.steps)
    device = torch.device(resolve_policy(args.device).device)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_toy_dataset(Path(tmp) / "toy", count=16, size=SIZE, num_classes=3, seed=0)
        data = load_train_data(root, SIZE, cache_dir=Path(tmp) / "ws")
        train = training_rows(data, str(root), steps, args.device)
    gen = generation_rows((128,) if args.quick else (128, 256), 2.0 if args.quick else 4.0, device)

    print(f"\nGAN training at {SIZE} x {SIZE}, batch {BATCH}, width {WIDTH}, on {train[0]['device']}"
          f"{' with AMP' if train[0]['amp'] else ' (fp32)'}, {torch.get_num_threads()} torch threads, "
          f"median of {steps} step(s) after a warm-up, one process:\n")  # fmt: skip
    print("| kind | our settings | reference s/step | ours s/step | ours steps/s | speed-up (wall) | "
          "reference CPU s | ours CPU s | speed-up (CPU time) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in train:
        print(f"| {r['kind']} | {r['settings']} | {r['ref_s']:.2f} | {r['ours_s']:.2f} | {1 / r['ours_s']:.3f} | "
              f"{r['ratio']:.1f}x | {r['ref_cpu_s']:.2f} | {r['ours_cpu_s']:.2f} | {r['ratio_cpu']:.1f}x |")  # fmt: skip
    print(f"\nGeneration on {device} (EMA generator, eval, batch 16, fp32), images per second:\n")
    print("| kind | size | reference | ours | ratio |")
    print("|---|---|---|---|---|")
    for r in gen:
        print(f"| {r['kind']} | {r['size']} | {r['ref_ips']:.1f} | {r['ours_ips']:.1f} | {r['ratio']:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
