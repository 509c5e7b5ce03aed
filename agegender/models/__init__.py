"""Model architectures: a backbone registry and the two-headed :class:`AgeGenderNet`."""

from .net import NUM_AGE_BINS, AgeGenderNet
from .registry import backbone_spec, create_backbone, list_backbones, register_backbone

__all__ = ["AgeGenderNet", "NUM_AGE_BINS", "backbone_spec", "create_backbone", "list_backbones", "register_backbone"]
