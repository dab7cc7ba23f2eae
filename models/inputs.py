"""The networks' input, made on the device: uint8 images in, normalized float out.

Ray Data carries images as uint8 [N, H, W, 3], a quarter of float32's bytes through the object
store and the host-to-device copy; the normalization (``data_pipeline.preprocess.normalize``'s
mean and std, the same float32 operations in the same order, so the values are identical) runs
here, on the training device. The batch stays channels-last in memory, the layout the training
loop puts its models in: cuDNN's convolutions prefer it under autocast, and oneDNN's on the CPU
ran a default-preset training step 1.65x faster with it than contiguous NCHW (benchmarks/bench_step.py).
"""

from __future__ import annotations

import torch

from gmparse.data_pipeline.preprocess import IMAGE_MEAN, IMAGE_STD


def model_input(images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """A batch as the networks read it: uint8 [N, H, W, 3] -> normalized float32 [N, 3, H, W] on
    ``device`` (the batch's own device when None). Floating-point input is taken as already
    normalized [N, 3, H, W] and only moved."""
    x = images if device is None else images.to(device, non_blocking=True)
    if x.is_floating_point():
        return x
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 [N, H, W, 3] images, got {x.dtype} {tuple(x.shape)}")
    x = ((x.float() / 255.0) - IMAGE_MEAN) / IMAGE_STD
    return x.permute(0, 3, 1, 2)  # NCHW shape, channels-last strides


def random_hflip(x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image of a normalized batch [N, C, H, W] left-right with probability ``p`` (a new tensor).

    torchvision's ``RandomHorizontalFlip``, batched on the device. The zoo trains its GMs on
    mirrored real images too, so a GM's mirrored sample is another plausible sample of that GM.
    The draw is on the CPU (from ``generator``, else torch's global RNG, which the training loop
    seeds once per run, as for dropout), so CPU and GPU runs flip the same images; a run resumed
    from a checkpoint draws other flips than an uninterrupted one. The copy keeps the batch's
    memory layout (channels-last)."""
    idx = torch.nonzero(torch.rand(len(x), generator=generator) < p).squeeze(1).to(x.device)
    out = x.clone(memory_format=torch.preserve_format)
    out[idx] = x[idx].flip(3)
    return out
