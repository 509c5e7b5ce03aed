"""Model architectures: a backbone registry and the two-headed :class:`AgeGenderNet`."""

from .net import NUM_AGE_BINS, AgeGenderNet, net_options
from .registry import NORMALIZATIONS, Normalization, backbone_spec, create_backbone, list_backbones, register_backbone

__all__ = ["AgeGenderNet", "NUM_AGE_BINS", "NORMALIZATIONS", "Normalization", "net_options", "backbone_spec",
           "create_backbone", "list_backbones", "register_backbone"]
