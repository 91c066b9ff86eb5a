"""Cloak training: a dataset folder from ``extract-faces`` in, a run folder out (checkpoints, the
per-step loss log, the held-out list; next: ``export`` writes the generator to ONNX).

Run folder: ``config.json`` (the run's TrainConfig and GeneratorConfig), ``checkpoint.pt``
(both networks and optimizers, the step; replaced atomically), ``losses.jsonl`` (every loss term per
step) and ``held_out.json`` (the people it never saw).

Every step draws its batch and its augmentation from a generator seeded by (seed, step), so a
resumed run sees exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, InputError
from ..nets import CROP_SIZE
from ..nets.cloak import CloakGenerator, GeneratorConfig
from .extract import HELD_OUT, read_held_out, read_index
from .model import DetectorFeatures, PatchDiscriminator, RecognitionFeatures

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LOSSES = "losses.jsonl"
CONFIG = "config.json"


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator's loss terms (see the package docstring for why these values).

    Pixel values are scaled to 0..1 for the reconstruction term; feature terms are relative L1
    (divided by the mean magnitude of the target's features) so each depth counts about equally.
    """

    attract: float = 1.0  # low/mid recognizer features of the output pulled to the input's
    repel: float = 2.0  # hinge: descriptor distance to the input's pushed beyond ``margin``
    margin: float = 1.0  # dlib's same-person threshold is 0.6; aim well past it
    recon: float = 0.5  # L1 pixels, keeps colours and everything outside the face
    mask_l1: float = 0.05  # small masks: change only what identity needs
    mask_tv: float = 0.5  # smooth masks: no speckles, no hard seams
    adv: float = 0.05  # realism (hinge GAN, PatchGAN)
    landmarks: float = 0.0  # detector attractor: heatmap and 5-point maps of the output pulled to the input's
    chroma: float = 0.0  # colour kept: per-pixel chroma (RGB minus its grey) change, per edited pixel


@dataclass(frozen=True)
class TrainConfig:
    """One training run's schedule; defaults are the CPU-sized recipe of the package docstring."""

    steps: int = 20000
    batch: int = 16
    lr: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    seed: int = 0
    warmup: int = 200  # steps without the adversarial term: the discriminator must not win before faces exist
    checkpoint_every: int = 500
    weights: LossWeights = field(default_factory=LossWeights)
    threads: int = 0  # torch intra-op threads, 0 = torch's default

    def __post_init__(self) -> None:
        for name, value, ok in (
            ("--steps", self.steps, self.steps >= 1),
            ("--batch", self.batch, 1 <= self.batch <= 1024),
            ("--lr", self.lr, 0 < self.lr < 1),
            ("--checkpoint-every", self.checkpoint_every, self.checkpoint_every >= 1),
        ):
            if not ok:
                raise ConfigError(f"{name} {value!r} is out of range")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        values = dict(data)
        values["betas"] = tuple(values["betas"])
        values["weights"] = LossWeights(**values["weights"])
        return cls(**values)


# ---------------------------------------------------------------------------------------------
# Data


def augment(chip: np.ndarray, rng: np.random.Generator, size: int = CROP_SIZE) -> np.ndarray:
    """A randomly flipped, colour-jittered, slightly scaled/shifted/rotated chip resized to ``size``.

    Small on purpose: the renderer's chips are aligned by the same landmarks, so the generator only
    needs robustness to landmark jitter (a few pixels, a few degrees), not to arbitrary framing.
    One warp does the geometry and the resize; the border is replicated, never black.
    """
    src = chip.shape[0]
    scale = size / src * rng.uniform(0.95, 1.05)
    angle = rng.uniform(-4.0, 4.0)
    m = cv2.getRotationMatrix2D(((src - 1) / 2, (src - 1) / 2), angle, scale)
    m[:, 2] += (size - src) / 2 + rng.uniform(-0.03, 0.03, 2) * size
    out = cv2.warpAffine(chip, m, (size, size), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    img = out.astype(np.float32)
    gain = rng.uniform(0.9, 1.1)
    bias = rng.uniform(-10.0, 10.0)
    sat = rng.uniform(0.9, 1.1)
    grey = img.mean(axis=2, keepdims=True)
    img = (grey + (img - grey) * sat) * gain + bias
    return np.clip(img, 0, 255)


class ChipSet:
    """The chips of a dataset folder, read lazily (a full LFW set does not fit in memory twice)."""

    def __init__(self, data_dir: Path, entries: Sequence[dict[str, Any]] | None = None, cache: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.entries = list(entries) if entries is not None else read_index(self.data_dir)
        if not self.entries:
            raise InputError(f"{self.data_dir}: the dataset holds no chips (all held out or none found)")
        self._cache: dict[int, np.ndarray] | None = {} if cache and len(self.entries) <= 4096 else None

    def __len__(self) -> int:
        return len(self.entries)

    def chip(self, i: int) -> np.ndarray:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        path = self.data_dir / self.entries[i]["chip"]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"{path}: unreadable chip; re-run extract-faces")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if self._cache is not None:
            self._cache[i] = rgb
        return rgb

    def batch(self, step: int, size: int, seed: int, crop: int = CROP_SIZE) -> torch.Tensor:
        """[size,3,crop,crop] float 0..255: the batch of ``step``, the same on every (re)run."""
        rng = np.random.default_rng([seed, step])
        idx = rng.integers(0, len(self), size)
        imgs = np.stack([augment(self.chip(int(i)), rng, crop) for i in idx])
        return torch.from_numpy(np.ascontiguousarray(imgs.transpose(0, 3, 1, 2)))


# ---------------------------------------------------------------------------------------------
# Losses


def total_variation(m: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring mask pixels: penalizes speckle and hard edges."""
    return (m[:, :, 1:] - m[:, :, :-1]).abs().mean() + (m[:, :, :, 1:] - m[:, :, :, :-1]).abs().mean()


def landmark_loss(x_det: tuple[torch.Tensor, torch.Tensor], y_det: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Detector attractor: landmark maps compared where the input's heatmap says the face centre is
    (weights = the input heatmap normalized per chip), plus the heatmaps themselves (L1, same weights),
    so the output keeps its 5 points and stays a face. Landmarks are in units of the face box."""
    (hx, lx), (hy, ly) = x_det, y_det
    wgt = hx / (hx.sum(dim=(2, 3), keepdim=True) + 1e-6)
    per_map = (ly - lx).abs().mean(dim=1, keepdim=True) + (hy - hx).abs()
    return (per_map * wgt).sum(dim=(2, 3)).mean()


def chroma_change(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean change of per-pixel chroma (RGB minus the pixel's grey level, 0..1 units) per edited pixel.

    Why: the cheapest way to move dlib's descriptor is a saturated colour fringe across the eyes,
    which no face has; identity may change through shape and shading, not through rainbow pixels.
    Divided by the (detached) mask area, so a small edit is judged by its own pixels and the term
    gives the mask no reason to grow or shrink.
    """
    cx, cy = x - x.mean(dim=1, keepdim=True), y - y.mean(dim=1, keepdim=True)
    return (cy - cx).abs().sum() / (3.0 * mask.detach().sum() + 1.0) / 255.0


def generator_losses(
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    x_feats: Sequence[torch.Tensor],
    x_desc: torch.Tensor,
    recognizer: RecognitionFeatures,
    disc: PatchDiscriminator | None,
    w: LossWeights,
    detector: DetectorFeatures | None = None,
    x_det: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Every generator loss term, weighted, plus ``total`` (the sum).

    Attractor: relative L1 between the recognizer's low/mid features of output and input (pose,
    expression, lighting). Repeller: hinge on the descriptor distance, zero once the output is
    ``margin`` away from the input's identity, so it cannot push the face into a monster.
    """
    y_feats, y_desc = recognizer(y)
    assert y_desc is not None
    attract = sum(((a - b).abs().mean() / (b.abs().mean() + 1e-6) for a, b in zip(y_feats, x_feats)), torch.zeros(())) / len(x_feats)
    dist = (y_desc - x_desc).norm(dim=1)
    terms = {
        "attract": w.attract * attract,
        "repel": w.repel * F.relu(w.margin - dist).mean(),
        "recon": w.recon * (y - x).abs().mean() / 255.0,
        "mask_l1": w.mask_l1 * mask.mean(),
        "mask_tv": w.mask_tv * total_variation(mask),
    }
    if disc is not None and w.adv > 0:
        terms["adv"] = w.adv * -disc(y).mean()
    if w.chroma > 0:
        terms["chroma"] = w.chroma * chroma_change(x, y, mask)
    if detector is not None and x_det is not None and w.landmarks > 0:
        terms["landmarks"] = w.landmarks * landmark_loss(x_det, detector(y))
    terms["total"] = sum(terms.values(), torch.zeros(()))
    terms["id_distance"] = dist.mean().detach()  # logged, not optimized
    return terms


def discriminator_loss(disc: PatchDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss: real patches above +1, fakes below -1."""
    return F.relu(1.0 - disc(real)).mean() + F.relu(1.0 + disc(fake.detach())).mean()


# ---------------------------------------------------------------------------------------------
# Runs


def _atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, then rename: a crash mid-save never destroys the last checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _trim_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint's step: a resumed run rewrites them, never duplicates them."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] < step]
    path.write_text("".join(line + "\n" for line in lines))


@dataclass
class Trainer:
    """The models, optimizers and data of one run; ``run`` trains, ``save``/``load`` checkpoint it."""

    run_dir: Path
    data: ChipSet
    cfg: TrainConfig
    gcfg: GeneratorConfig
    recognizer: RecognitionFeatures
    step: int = 0
    detector: DetectorFeatures | None = None

    def __post_init__(self) -> None:
        if self.detector is None and self.cfg.weights.landmarks > 0:
            self.detector = DetectorFeatures()
        torch.manual_seed(self.cfg.seed)
        self.gen = CloakGenerator(self.gcfg)
        self.disc = PatchDiscriminator()
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=self.cfg.lr, betas=self.cfg.betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=self.cfg.lr_d, betas=self.cfg.betas)

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "generator": self.gen.state_dict(),
            "discriminator": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "generator_config": self.gcfg.to_json(),
            "train_config": self.cfg.to_json(),
        }

    def save(self) -> Path:
        path = self.run_dir / CHECKPOINT
        _atomic_save(self.state(), path)
        return path

    def load(self, path: Path) -> None:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        self.gen.load_state_dict(ckpt["generator"])
        self.disc.load_state_dict(ckpt["discriminator"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.opt_d.load_state_dict(ckpt["opt_d"])
        self.step = int(ckpt["step"])

    def train_step(self) -> dict[str, float]:
        """One generator and one discriminator update on the batch of ``self.step``."""
        cfg, w = self.cfg, self.cfg.weights
        x = self.data.batch(self.step, cfg.batch, cfg.seed, self.gcfg.size)
        with torch.no_grad():
            x_feats, x_desc = self.recognizer(x)
            x_det = self.detector(x) if self.detector is not None else None
        assert x_desc is not None
        use_adv = self.step >= cfg.warmup
        y, mask = self.gen(x, x_desc)
        for p in self.disc.parameters():
            p.requires_grad_(False)
        terms = generator_losses(x, y, mask, x_feats, x_desc, self.recognizer, self.disc if use_adv else None, w, self.detector, x_det)
        self.opt_g.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.opt_g.step()
        for p in self.disc.parameters():
            p.requires_grad_(True)
        d_loss = discriminator_loss(self.disc, x, y)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        out = {k: float(v.detach()) for k, v in terms.items()}
        out["d_loss"] = float(d_loss.detach())
        out["mask_mean"] = float(mask.detach().mean())
        return out

    def run(self, until: int, on_step: Callable[[int, dict[str, float]], None] | None = None) -> None:
        """Train up to step ``until`` (exclusive), logging every step, checkpointing periodically."""
        log_path = self.run_dir / LOSSES
        with open(log_path, "a") as fh:
            while self.step < until:
                t0 = time.perf_counter()
                losses = self.train_step()
                if not all(math.isfinite(v) for v in losses.values()):
                    raise FloatingPointError(f"step {self.step}: non-finite loss {losses}; lower --lr or resume from the checkpoint")
                record = {"step": self.step, **{k: round(v, 6) for k, v in losses.items()}, "seconds": round(time.perf_counter() - t0, 4)}
                fh.write(json.dumps(record) + "\n")
                fh.flush()
                self.step += 1
                if on_step:
                    on_step(self.step, record)
                if self.step % self.cfg.checkpoint_every == 0 or self.step == until:
                    self.save()


def train(
    data_dir: Path,
    run_dir: Path,
    cfg: TrainConfig | None = None,
    resume: bool = False,
    gcfg: GeneratorConfig | None = None,
    recognizer: RecognitionFeatures | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    init: Path | None = None,
) -> Trainer:
    """Train (or, with ``resume``, continue) the cloak on ``data_dir``, writing ``run_dir``.

    A fresh run refuses a folder that already has a checkpoint (it would be lost); a resumed run
    takes the architecture and seed from its checkpoint and runs until ``cfg.steps`` in total.
    ``init`` starts a fresh run (step 0, new optimizers, this run's loss weights) from the generator
    and discriminator weights of another run folder: a curriculum, e.g. adding a loss term to a
    generator whose mask is already open (a new term at step 0 can close the mask for good, since
    every term but the repeller is smallest when nothing is edited).
    """
    run_dir = Path(run_dir)
    ckpt = run_dir / CHECKPOINT
    cfg = cfg or TrainConfig()
    if resume:
        if not ckpt.is_file():
            raise InputError(f"{run_dir}: nothing to resume (no {CHECKPOINT}); drop --resume to start a run there")
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        gcfg = GeneratorConfig.from_json(saved["generator_config"])
        old = TrainConfig.from_json(saved["train_config"])
        cfg = TrainConfig(**{**asdict(old), "steps": cfg.steps, "weights": old.weights, "betas": old.betas})
    elif ckpt.is_file():
        raise InputError(f"{run_dir}: already holds a run ({CHECKPOINT}); use --resume to continue it or choose another folder")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    gcfg = gcfg or GeneratorConfig()
    trainer = Trainer(run_dir, ChipSet(data_dir), cfg, gcfg, recognizer or RecognitionFeatures())
    if init is not None and not resume:
        if not (Path(init) / CHECKPOINT).is_file():
            raise InputError(f"{init}: no {CHECKPOINT} to start from")
        start = torch.load(Path(init) / CHECKPOINT, map_location="cpu", weights_only=True)
        if GeneratorConfig.from_json(start["generator_config"]) != gcfg:
            raise ConfigError(f"{init}: its generator architecture differs from this run's; drop the init or match it")
        trainer.gen.load_state_dict(start["generator"])
        trainer.disc.load_state_dict(start["discriminator"])
        log.info("starting from the weights of %s (its step %d)", init, int(start["step"]))
    if resume:
        trainer.load(ckpt)
        _trim_log(run_dir / LOSSES, trainer.step)
        log.info("resuming %s at step %d", run_dir, trainer.step)
    else:
        (run_dir / LOSSES).unlink(missing_ok=True)
    config = {"train": cfg.to_json(), "generator": gcfg.to_json(), "data": str(Path(data_dir).resolve()), "chips": len(trainer.data)}
    if init is not None and not resume:
        config["init"] = str(Path(init).resolve())
    elif resume and (run_dir / CONFIG).is_file():
        config["init"] = json.loads((run_dir / CONFIG).read_text()).get("init")
    (run_dir / CONFIG).write_text(json.dumps(config, indent=1))
    if (Path(data_dir) / HELD_OUT).is_file():
        shutil.copyfile(Path(data_dir) / HELD_OUT, run_dir / HELD_OUT)
    else:
        (run_dir / HELD_OUT).write_text(json.dumps(read_held_out(data_dir) or {"rule": "none recorded by the dataset"}, indent=1))
    trainer.run(cfg.steps, on_step)
    return trainer


def load_generator(run_dir: Path) -> CloakGenerator:
    """The trained generator of a run folder (eval mode)."""
    ckpt_path = Path(run_dir) / CHECKPOINT
    if not ckpt_path.is_file():
        raise InputError(f"{run_dir}: no {CHECKPOINT}; train first with 'deid-edit train-cloak DATA -o {run_dir}'")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    gen = CloakGenerator(GeneratorConfig.from_json(ckpt["generator_config"]))
    gen.load_state_dict(ckpt["generator"])
    return gen.eval()
