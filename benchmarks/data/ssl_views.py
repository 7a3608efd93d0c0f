"""Two random views of a batch of images, made on the device in a few batched ops (BYOL / MoCo augmentations).

Per image and view: random resized crop (area scale in [min_scale, 1], aspect ratio in [3/4, 4/3]) done as one
affine `grid_sample`, horizontal flip (p=0.5), colour jitter (p=0.8: brightness 0.4, contrast 0.4, saturation 0.2,
and hue when `hue` > 0, in that fixed order; torchvision shuffles the order per image), grayscale (p=0.2), a Gaussian
blur when `blur_p` > 0 (sigma ~ U[0.1, 2] px, kernel about 10% of the side, reflect padding: torchvision's
gaussian_blur per image), and solarisation when `solarize_p` > 0 (BYOL's second view: 0.2). The usual CIFAR-size
recipes leave blur and hue out (blur hurts at 32 px); the official openmixup BYOL / MoCo v2 configs, which train at
224 px, keep both. Random numbers come from torch's generator of the input's device, which the engine seeds; an op
that is off draws none.

Doing this per batch on the device rather than per image in the loader keeps a GPU fed without loader workers and
costs little on CPU. The loader only has to deliver fixed-size uint8 images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


@dataclass(frozen=True)
class ViewConfig:
    """Augmentation strengths."""

    out_size: int  # side of the output crops in pixels
    min_scale: float = 0.2  # smallest crop area as a fraction of the image (0.08 ImageNet, 0.2 CIFAR recipes)
    jitter_p: float = 0.8  # probability of colour jitter
    brightness: float = 0.4  # brightness factor drawn from [1 - b, 1 + b]
    contrast: float = 0.4  # contrast factor drawn from [1 - c, 1 + c]
    saturation: float = 0.2  # saturation factor drawn from [1 - s, 1 + s]
    hue: float = 0.0  # hue shift drawn from [-hue, hue] (fraction of the colour circle; 0.1 in BYOL and MoCo v2)
    grayscale_p: float = 0.2  # probability of converting to grey
    blur_p: float = 0.0  # probability of a Gaussian blur (BYOL: 1.0 first view, 0.1 second; MoCo v2: 0.5)
    solarize_p: float = 0.0  # probability of solarisation (BYOL uses 0.2 on its second view)


def grey(x: torch.Tensor) -> torch.Tensor:
    """Luma [B, 1, H, W] of RGB (or the single channel itself) images in [0, 1]."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(_GREY_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def random_resized_crop(x: torch.Tensor, out_size: int, min_scale: float) -> torch.Tensor:
    """Per-image random crop (area fraction U[min_scale, 1], log-uniform aspect in [3/4, 4/3]) + flip, resized."""
    b = x.shape[0]
    dev = x.device
    area = torch.empty(b, device=dev).uniform_(min_scale, 1.0)
    log_ratio = torch.empty(b, device=dev).uniform_(math.log(3 / 4), math.log(4 / 3))
    # Crop width and height as fractions of the image side (clamped to the image).
    w = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)
    h = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
    cx = (torch.rand(b, device=dev) * 2 - 1) * (1 - w)  # crop centre in [-1, 1] coordinates, inside the image
    cy = (torch.rand(b, device=dev) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, [b, x.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _factor(b: int, strength: float, dev: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(b, 1, 1, 1, device=dev, dtype=dtype).uniform_(1 - strength, 1 + strength)


def colour_jitter(x: torch.Tensor, cfg: ViewConfig) -> torch.Tensor:
    """Brightness, contrast, saturation jitter on a random subset (p = cfg.jitter_p) of the batch."""
    b, dev, dt = x.shape[0], x.device, x.dtype
    y = (x * _factor(b, cfg.brightness, dev, dt)).clamp(0, 1)
    mean = grey(y).mean(dim=(1, 2, 3), keepdim=True)
    y = ((y - mean) * _factor(b, cfg.contrast, dev, dt) + mean).clamp(0, 1)
    g = grey(y)
    y = ((y - g) * _factor(b, cfg.saturation, dev, dt) + g).clamp(0, 1)
    if cfg.hue > 0 and x.shape[1] == 3:
        y = hue_shift(y, torch.empty(b, device=dev, dtype=dt).uniform_(-cfg.hue, cfg.hue))
    apply = (torch.rand(b, 1, 1, 1, device=dev) < cfg.jitter_p).to(dt)
    return apply * y + (1 - apply) * x


def hue_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """RGB images [B, 3, H, W] in [0, 1] with each image's hue rotated by shift[i] (torchvision's adjust_hue, batched
    with a factor per image, through its own RGB <-> HSV conversions)."""
    from torchvision.transforms._functional_tensor import _hsv2rgb, _rgb2hsv

    h, s, v = _rgb2hsv(x).unbind(dim=-3)
    return _hsv2rgb(torch.stack(((h + shift.view(-1, 1, 1)) % 1.0, s, v), dim=-3))


def gaussian_kernel_size(side: int) -> int:
    """The blur kernel: odd, about 10% of the image side (23 px at 224, BYOL's), at least 3."""
    return max(3, int(0.1 * side) // 2 * 2 + 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each image [B, C, H, W] blurred with its own sigma[i]: a separable kernel exp(-r^2 / (2 sigma^2)) / sum over
    r in [-k//2, k//2] (k = gaussian_kernel_size(W)), reflect padding, as torchvision's gaussian_blur."""
    b, c, height, width = x.shape
    k = gaussian_kernel_size(width)
    r = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kernel = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None].to(x.dtype) ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [B * C, k]
    y = F.pad(x.reshape(1, b * c, height, width), (k // 2,) * 4, mode="reflect")
    y = F.conv2d(y, kernel.view(b * c, 1, 1, k), groups=b * c)
    y = F.conv2d(y, kernel.view(b * c, 1, k, 1), groups=b * c)
    return y.view(b, c, height, width)


def augment(x: torch.Tensor, cfg: ViewConfig) -> torch.Tensor:
    """One random view of a batch of images in [0, 1] ([B, C, H, W] float) -> [B, C, out, out] in [0, 1]."""
    b, dev = x.shape[0], x.device
    x = random_resized_crop(x, cfg.out_size, cfg.min_scale)
    x = colour_jitter(x, cfg)
    to_grey = (torch.rand(b, 1, 1, 1, device=dev) < cfg.grayscale_p).to(x.dtype)
    x = to_grey * grey(x).expand_as(x) + (1 - to_grey) * x
    if cfg.blur_p > 0:
        sigma = torch.empty(b, device=dev).uniform_(0.1, 2.0)
        blur = (torch.rand(b, 1, 1, 1, device=dev) < cfg.blur_p).to(x.dtype)
        x = blur * gaussian_blur(x, sigma) + (1 - blur) * x
    if cfg.solarize_p > 0:
        solarize = (torch.rand(b, 1, 1, 1, device=dev) < cfg.solarize_p) & (x >= 0.5)
        x = torch.where(solarize, 1 - x, x)
    return x
