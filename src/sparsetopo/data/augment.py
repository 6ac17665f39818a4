"""Training-time augmentation of a batch, as a pure function of a seed (so a resumed run draws the same).

- ``flip``: each image mirrored left-right with probability 1/2;
- ``crop-flip``: the CIFAR recipe of He et al. (2016): zero-pad 4 pixels on every side, take a random crop of
  the original size, then ``flip``.

Images are the normalised tensors a dataset holds (``N x C x H x W``); padding with zeros pads with the mean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

AUGMENTS = ("none", "flip", "crop-flip")
PAD = 4


def augment_batch(images: torch.Tensor, kind: str, seed: int) -> torch.Tensor:
    """``images`` augmented by ``kind`` (one of :data:`AUGMENTS`), drawn from ``seed`` alone."""
    if kind == "none":
        return images
    if kind not in AUGMENTS:
        raise ValueError(f"augmentation {kind!r}: choose one of {', '.join(AUGMENTS)}")
    import torch  # here, so that the options can name AUGMENTS without loading torch
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = images.shape
    out = images
    if kind == "crop-flip":
        padded = torch.nn.functional.pad(images, (PAD, PAD, PAD, PAD))
        dy = torch.randint(0, 2 * PAD + 1, (n,), generator=g).to(images.device)
        dx = torch.randint(0, 2 * PAD + 1, (n,), generator=g).to(images.device)
        rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
        batch = torch.arange(n, device=images.device)[:, None, None, None]
        channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
        out = padded[batch, channel, rows, cols]
    flip = (torch.rand(n, generator=g) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], out.flip(-1), out)
