"""ResNet-50 (bottleneck blocks 3-4-6-3), defined here instead of importing torchvision.

The PyPI torchvision wheels are CUDA builds that fail to import against the CPU torch we install
(``operator torchvision::nms does not exist``), and nothing the app imports may need them. Module and parameter
names follow torchvision exactly (``conv1``, ``bn1``, ``layer1.0.downsample.0`` …) so a torchvision
checkpoint loads with :func:`load_torchvision_state_dict`.

Two layouts, same parameters and names: ``"v1.5"`` (torchvision: a down-sampling block strides in its 3x3
convolution) and ``"v1"`` (He et al. 2016 and the MSRA Caffe release: it strides in the first 1x1 convolution and
in the shortcut). Weights trained in one layout are wrong in the other, and their shapes cannot tell, so the layout
is an option recorded with the weights (``backbone_options`` in the manifest), not a guess.
"""

from __future__ import annotations

import torch
from torch import nn

from agegender.models.registry import register_backbone

LAYOUTS = ("v1.5", "v1")


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 stride_in_1x1: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride if stride_in_1x1 else 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1 if stride_in_1x1 else stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision-compatible ResNet trunk; ``num_classes=0`` leaves out the ImageNet classifier; ``layout`` is
    ``"v1.5"`` (torchvision) or ``"v1"`` (MSRA: stride in the first 1x1 convolution)."""

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3), num_classes: int = 0,
                 layout: str = "v1.5"):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"ResNet layout must be one of {LAYOUTS}, not {layout!r}")
        self.layout = layout
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.num_features = 512 * Bottleneck.expansion
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each block: every residual block starts as identity, which makes training
        # from scratch (our only option offline) markedly more stable.
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, stride_in_1x1=self.layout == "v1")]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


def load_torchvision_state_dict(model: ResNet, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a torchvision ``resnet50`` state dict; its ``fc`` is dropped when ``model`` has no classifier."""
    if isinstance(model.fc, nn.Identity):
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    model.load_state_dict(state_dict, strict=True)


@register_backbone("resnet50", input_size=128,
                   description="ResNet-50 (v1.5 or v1 layout); ImageNet initialisation via train.init_weights")
def resnet50(pretrained: bool = False, input_size: int = 128, layout: str = "v1.5") -> ResNet:
    if pretrained:
        # ImageNet weights for ResNet-50 are a training-time choice of source (python -m train --init msra |
        # torchvision, see train/init_weights.py), not something the library downloads.
        raise ValueError("ResNet-50 has no package-bundled ImageNet weights: train with --init msra or "
                         "--init torchvision (train/init_weights.py)")
    return ResNet((3, 4, 6, 3), layout=layout)
