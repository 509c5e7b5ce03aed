"""``--freeze PARTS --freeze-epochs E``: the named parts (e.g. the ImageNet stages) stay fixed for the first steps.

Why: a fresh layer4 and fresh heads send random gradients into the pretrained stages at the start; frozen for
half an epoch, they settle first. On a CPU those steps also skip the backward pass through the frozen stages.
"""

from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from .parts import matched_part


class StageFreezer:
    """Freezes the parameters and BatchNorms of ``parts`` for ``steps`` optimizer steps.

    Single process: frozen parameters stop requiring gradients. Under DDP, whose reducer is built for a fixed set
    of trainable parameters, they keep requiring them and :meth:`drop_gradients` removes their gradients before
    each optimizer step instead (the same updates: AdamW skips parameters without a gradient, weight decay too).
    """

    def __init__(self, net: nn.Module, parts: Sequence[str] | None, steps: int, ddp: bool):
        self.parts = list(parts or [])
        self.steps = steps if self.parts else 0
        self.ddp = ddp
        self.params = [p for n, p in net.named_parameters() if matched_part(n, self.parts)]
        self.norms = [m for n, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                      and matched_part(n + ".weight", self.parts)]
        if self.parts and not self.params:
            raise SystemExit(f"--freeze: no parameter matches {', '.join(self.parts)}")
        self.frozen = False

    def set(self, frozen: bool) -> None:
        if frozen == self.frozen and not frozen:
            return
        if not self.ddp:
            for p in self.params:
                p.requires_grad_(not frozen)
        self.frozen = frozen

    def before_step(self, step: int, log: Callable[[str], None]) -> None:
        """Unfreeze once ``step`` reaches the end of the frozen period; while frozen, keep the frozen stages'
        BatchNorms in eval mode (their ImageNet statistics; validation puts the model back in train mode)."""
        if self.frozen and step >= self.steps:
            self.set(False)
            log(f"step {step}: unfroze {', '.join(self.parts)}")
        for m in self.norms if self.frozen else ():
            m.eval()

    def drop_gradients(self) -> None:
        if self.frozen and self.ddp:
            for p in self.params:
                p.grad = None
