"""A timm backbone with a light FPN-style segmentation head (in the spirit of Semantic FPN, sized down).

Every chosen backbone stage is projected to `width` channels by a 1x1 conv, upsampled to the finest chosen
stage and summed; one 3x3 conv-BN-ReLU and a 1x1 classifier follow, and the logits are upsampled bilinearly to
the input size. Including the stride-2 and stride-4 stages keeps small objects resolvable at CPU input sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FPNSegmenter(nn.Module):
    def __init__(self, backbone: str, num_classes: int, out_indices: tuple[int, ...] = (0, 1, 2, 3),
                 width: int = 64):
        super().__init__()
        import timm

        if not timm.is_model(backbone):
            raise ValueError(f"{backbone!r} is not a timm model name (see timm.list_models())")
        # Random init: timm never downloads unless pretrained=True.
        self.backbone = timm.create_model(
            backbone, pretrained=False, features_only=True, out_indices=out_indices
        )
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in self.backbone.feature_info.channels())
        self.head = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        size = features[0].shape[-2:]
        fused = sum(
            F.interpolate(lateral(f), size=size, mode="bilinear", align_corners=False)
            for lateral, f in zip(self.lateral, features)
        )
        return F.interpolate(self.head(fused), size=x.shape[-2:], mode="bilinear", align_corners=False)
