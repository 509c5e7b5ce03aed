"""Parts of the network by name, for per-part learning rates (``--lr-mult``) and frozen stages (``--freeze``).

Transfer learning treats the network's parts differently: the ImageNet stages already compute useful features and
should move slowly (early, generic ones slowest), while the fresh layer4 and heads need the full learning rate.
A part is an alias (``stem``, ``layer1`` … ``layer4``, ``heads``) or any parameter-name prefix
(``backbone.layer3.5``), matched on whole name components, with or without the leading ``backbone.``.
"""

from __future__ import annotations

from typing import Iterable

from torch import nn

PART_ALIASES = {"stem": ("backbone.conv1.", "backbone.bn1."), "heads": ("age_head.", "gender_head."),
                **{f"layer{i}": (f"backbone.layer{i}.",) for i in range(1, 5)}}


def part_prefixes(part: str) -> tuple[str, ...]:
    """Parameter-name prefixes of a ``--lr-mult``/``--freeze`` part: an alias (stem, layer1-4, heads) or a prefix."""
    return PART_ALIASES.get(part, (part,))


def matched_part(name: str, parts: Iterable[str]) -> str | None:
    """The part whose prefix matches parameter ``name`` longest (``None``: no part matches). A prefix matches
    whole name components, with or without the leading ``backbone.``."""
    best, length = None, -1
    for part in parts:
        for prefix in part_prefixes(part):
            prefix = prefix if prefix.endswith(".") else prefix + "."
            for candidate in (prefix, "backbone." + prefix):
                if (name + ".").startswith(candidate) and len(candidate) > length:
                    best, length = part, len(candidate)
    return best


def param_groups(model: nn.Module, weight_decay: float, lr: float = 1.0,
                 lr_mult: dict[str, float] | None = None) -> list[dict]:
    """One group per (learning-rate factor, decay): no weight decay on biases and normalisation parameters
    (1-D tensors), since decaying them only hurts; ``lr_mult`` gives pretrained stages a smaller learning rate
    than the fresh layer4 and heads (transfer learning keeps what ImageNet taught the early layers)."""
    lr_mult = lr_mult or {}
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    unmatched = set(lr_mult)
    for name, p in model.named_parameters():
        part = matched_part(name, lr_mult)
        unmatched.discard(part)
        groups.setdefault((lr_mult.get(part, 1.0), p.ndim > 1), []).append(p)
    if unmatched:
        raise SystemExit(f"--lr-mult: no parameter matches {', '.join(sorted(unmatched))}")
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0, "lr": lr * mult, "lr_mult": mult}
            for (mult, decay), params in sorted(groups.items(), key=lambda kv: (-kv[0][0], not kv[0][1]))]
