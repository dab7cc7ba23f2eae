"""Build, briefly train, gate and sample one zoo GM (one call per Ray task upstream)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from gmparse.data_pipeline.realism import RealismReference
from gmparse.data_pipeline.schema import GMLabels

from .config import ZooTrainConfig
from .families import build_family
from .introspect import measure_architecture
from .quality import QualityReference, gate_figures, gate_passes
from .specs import GMSpec


@dataclass
class GMResult:
    """One GM's images, measured labels and gate record."""

    spec: GMSpec
    images: np.ndarray  # uint8 [n_images, S, S, 3]
    labels: GMLabels
    quality: dict[str, float] = field(default_factory=dict)
    passed: bool = False
    attempts: int = 0  # gate evaluations, over all builds
    steps: int = 0  # training steps of the kept build
    train_seconds: float = 0.0  # CPU time of the whole call (this thread; ~ wall on an idle core)
    build_seed: int = 0  # the seed of the kept build (spec.seed unless rebuilt)
    untrained: np.ndarray | None = None  # the kept build's samples before training (the realism ceiling)
    #: this thread's CPU seconds by phase (train, gate_sample, gate, sample, introspect, setup), over all builds
    phase_seconds: dict[str, float] = field(default_factory=dict)


def _to_tensor(crops: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2))).float() / 127.5 - 1.0


def _derived_seed(seed: int, k: int) -> int:
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


class GMBudgetExceeded(RuntimeError):
    """A GM ran past ``ZooTrainConfig.max_seconds``: a guard against a runaway GM, never a budget.

    Budgets are steps, so what a GM is does not depend on the machine; a GM that hits the guard
    is not kept or rejected but fails, and its build stops with this message (see ``make_gm``)."""


def _check_guard(t0: float, cfg: ZooTrainConfig, spec: GMSpec, phase: str) -> None:
    """Raise :class:`GMBudgetExceeded` when this thread's CPU time since ``t0`` is past the guard
    (CPU time, so a GM waiting on a busy machine's scheduler is not counted)."""
    if cfg.max_seconds is not None and time.thread_time() - t0 > cfg.max_seconds:
        raise GMBudgetExceeded(
            f"{spec.gm_id} used more than {cfg.max_seconds:g} CPU-seconds ({phase}); its budget is "
            "counted in steps, so this is a guard against a runaway GM: raise it (--max-gm-seconds) "
            "and run the build again (it resumes, and the GM is the same on any machine)")


def make_gm(spec: GMSpec, real_crops: np.ndarray, n_images: int, cfg: ZooTrainConfig,
            device: torch.device | str = "cpu") -> GMResult:
    """Train ``spec``'s GM on ``real_crops`` (uint8 [N, S, S, 3], S = spec.image_size) until
    its samples pass the quality gate (or retries run out); return ``n_images`` samples.

    Single-threaded and deterministic given ``spec.seed``. On a GPU (``device="cuda"``) the
    network trains and samples there; batches, latents and sampling noise are still drawn on
    the CPU from the same seeds (training noise inside a step on the GPU), and GPU kernels
    round differently, so a GPU-built GM is not bitwise the CPU-built one (its architecture,
    and so its labels, are the same).
    """
    real_crops = np.asarray(real_crops)
    s = spec.image_size
    if real_crops.dtype != np.uint8 or real_crops.ndim != 4 or real_crops.shape[1:] != (s, s, 3):
        raise ValueError(f"real_crops must be uint8 [N, {s}, {s}, 3], got {real_crops.dtype} {real_crops.shape}")
    if len(real_crops) < 2:
        raise ValueError("need at least 2 real crops")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.thread_time()
    phases: dict[str, float] = dict.fromkeys(("setup", "train", "gate_sample", "gate", "sample", "introspect"), 0.0)

    def lap(phase: str, since: float) -> float:
        now = time.thread_time()
        phases[phase] += now - since
        return now

    try:
        real = _to_tensor(real_crops).to(device)
        n_gate = min(cfg.gate_images, len(real_crops))
        gate_rng = np.random.default_rng(spec.seed)
        reference = QualityReference(real_crops[gate_rng.choice(len(real_crops), n_gate, replace=False)])
        realism = RealismReference(real_crops, seed=spec.seed) if cfg.max_swd is not None else None
        attempts = 0
        for rebuild in range(cfg.max_rebuilds + 1):
            tb = t0 if rebuild == 0 else time.thread_time()
            seed = spec.seed if rebuild == 0 else _derived_seed(spec.seed, rebuild)
            torch.manual_seed(seed)
            batch_gen = torch.Generator().manual_seed(seed + 1)
            gm = build_family(spec, cfg).to(device)
            tg = lap("setup", tb)
            untrained = gm.sample(n_gate, real, torch.Generator().manual_seed(seed + 2))
            lap("gate_sample", tg)
            steps = 0
            for retry in range(cfg.max_retries + 1):
                n_steps = cfg.family_steps(spec.family, retry=retry > 0)
                ts = time.thread_time()
                for _ in range(n_steps):
                    idx = torch.randint(len(real), (cfg.batch_size,), generator=batch_gen).to(device)
                    batch = real[idx]
                    flip = (torch.rand(len(idx), generator=batch_gen) < 0.5).to(device)
                    gm.train_step(torch.where(flip[:, None, None, None], batch.flip(3), batch))
                    gm.n_steps += 1
                    steps += 1
                    _check_guard(t0, cfg, spec, f"training step {steps}")
                attempts += 1
                tg = lap("train", ts)
                samples = gm.sample(n_gate, real, torch.Generator().manual_seed(seed + 2))
                tq = lap("gate_sample", tg)
                quality = gate_figures(samples, reference, untrained, realism)
                lap("gate", tq)
                passed = gate_passes(quality, cfg)
                if passed:
                    break
            if passed:
                break
        ti = time.thread_time()
        images = gm.sample(n_images, real, torch.Generator().manual_seed(seed + 3))
        ti = lap("sample", ti)
        _check_guard(t0, cfg, spec, "sampling")
        labels = measure_architecture(gm.net, spec.loss_types)
        lap("introspect", ti)
    finally:
        torch.set_num_threads(threads)
    return GMResult(
        spec=spec, images=images, labels=labels, quality=quality, passed=passed, attempts=attempts,
        steps=steps, train_seconds=time.thread_time() - t0, build_seed=seed, untrained=untrained,
        phase_seconds={k: round(v, 4) for k, v in phases.items()},
    )  # fmt: skip
