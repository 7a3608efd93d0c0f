"""Sliding-window ("slide") inference for semantic segmentation, as mmsegmentation's test mode does it.

A `crop` x `crop` window moves over the image in steps of `stride`; along each axis the last window is pushed
back to end at the image border, so windows may overlap more there. An image side not longer than `crop` gets
one window covering it whole. The class scores of overlapping windows are averaged pixel by pixel: the sum of
the window logits divided by how many windows cover the pixel (`window_count`).

mmseg's ADE20K test: shorter side rescaled to 512 (longer side at most 2048), crop 512, stride 341.
"""

from __future__ import annotations

from typing import Callable

import torch


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """First index of each window along one axis of length `size`."""
    if crop < 1 or stride < 1:
        raise ValueError(f"crop and stride must be >= 1, got crop={crop}, stride={stride}")
    if stride > crop:
        raise ValueError(f"stride={stride} > crop={crop} would leave pixels outside every window")
    if size <= crop:
        return [0]
    steps = -(-(size - crop) // stride)  # ceil: enough steps for the last window to reach the border
    return [min(i * stride, size - crop) for i in range(steps + 1)]


def windows(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) of every window, row by row."""
    return [
        (top, left, min(top + crop, height), min(left + crop, width))
        for top in window_starts(height, crop, stride)
        for left in window_starts(width, crop, stride)
    ]


def window_count(height: int, width: int, crop: int, stride: int) -> torch.Tensor:
    """[height, width] int64: how many windows cover each pixel (never 0)."""
    count = torch.zeros(height, width, dtype=torch.int64)
    for top, left, bottom, right in windows(height, width, crop, stride):
        count[top:bottom, left:right] += 1
    return count


def sliding_window_logits(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    crop: int,
    stride: int,
    batch_size: int = 1,
) -> torch.Tensor:
    """[B, K, H, W] class scores of [B, C, H, W] images, averaged over the windows covering each pixel.

    `forward` maps window batches [N, C, h, w] to scores [N, K, h, w] at the window's size. Up to `batch_size`
    windows (of all B images) go through `forward` at once; every window of an image has the same size.
    """
    n_images, _, height, width = images.shape
    boxes = windows(height, width, crop, stride)
    per_call = max(1, batch_size // n_images)
    total = None
    for first in range(0, len(boxes), per_call):
        chunk = boxes[first : first + per_call]
        crops = torch.cat([images[:, :, t:b, l:r] for t, l, b, r in chunk])
        scores = forward(crops)
        if total is None:
            total = scores.new_zeros(n_images, scores.shape[1], height, width, dtype=torch.float32)
        for (t, l, b, r), window_scores in zip(chunk, scores.split(n_images)):
            total[:, :, t:b, l:r] += window_scores.float()
    count = window_count(height, width, crop, stride).to(total.device)
    return total / count
