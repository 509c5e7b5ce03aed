"""Model architectures: a backbone registry and the two-headed :class:`AgeGenderNet`."""

from agegender.models.net import NUM_AGE_BINS, AgeGenderNet, net_options
from agegender.models.factory import backbone_spec, create_backbone, list_backbones
from agegender.models.registry import NORMALIZATIONS, Normalization, register_backbone

__all__ = ["AgeGenderNet", "NUM_AGE_BINS", "NORMALIZATIONS", "Normalization", "net_options", "backbone_spec",
           "create_backbone", "list_backbones", "register_backbone"]
