"""Training losses: age as a label distribution over the 101 one-year bins, gender as smoothed BCE.

Targets are *soft* (an age distribution, a gender probability) so mixup can mix them linearly, and both losses
are linear in their targets: mixing targets is then exactly mixing the two samples' losses.

Why a Gaussian label distribution rather than a one-hot bin: neighbouring ages look alike, and labels (especially
UTKFace's) are noisy by a few years. Spreading the target over neighbours teaches the head an ordinal structure
and calibrated widths, which the app shows as an interval.

Why an optional L1 on the expected age (``age_l1``, as in DLDL-v2 / the mean-variance loss): the app reports
E[age] of the softmax, but cross-entropy alone does not optimise that number. Wide, skewed distributions pull
E[age] towards the training mean (measured: +3.3 years for people in their 20s, -3.5 for their 60s). Adding
``|E[age] - E_target[age]|`` trains the reported number itself. It is computed against the expected age of the
(possibly mixed) target, so with mixup it penalises the mixed label's mean.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from agegender.models import NUM_AGE_BINS

DECADES = 10  # 0-9, 10-19, …, 90+
MAX_BALANCE_WEIGHT = 10.0  # unclipped, the ~100 faces over 90 would weigh ~20x the mean


def age_decade(ages: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Decade index 0 … 9 (90+ is the last)."""
    if isinstance(ages, torch.Tensor):
        return torch.clamp(ages.long() // 10, 0, DECADES - 1)
    return np.clip(np.asarray(ages, dtype=np.int64) // 10, 0, DECADES - 1)


def decade_weights(ages: np.ndarray) -> torch.Tensor:
    """Per-decade sample weights ∝ 1 / frequency, clipped at ``MAX_BALANCE_WEIGHT`` and normalised so the mean
    weight over ``ages`` (the training set) is 1: the loss scale, hence the learning rate, stays comparable."""
    ages = np.asarray(ages)
    counts = np.bincount(age_decade(ages[ages >= 0]), minlength=DECADES).astype(np.float64)
    present = counts > 0
    weights = np.zeros(DECADES)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    weights = np.minimum(weights, MAX_BALANCE_WEIGHT)
    weights /= (weights * counts).sum() / counts.sum()
    return torch.tensor(weights, dtype=torch.float32)


class AgeGenderLoss(torch.nn.Module):
    """``loss = age_ce + age_l1 * |E[age] - target age| + gender_weight * gender_bce``, with optional per-sample
    (decade-balanced) weights. The age loss reported in logs includes the L1 term.

    ``targets(ages, genders)`` turns integer labels into soft targets; ``forward`` takes soft targets so that
    mixup can combine them first.
    """

    def __init__(self, age_sigma: float = 2.5, age_loss: str = "gaussian", gender_smoothing: float = 0.05,
                 gender_weight: float = 1.0, balance_weights: torch.Tensor | None = None, age_l1: float = 0.0,
                 distill_weight: float = 0.0, distill_gender_weight: float = 0.0):
        super().__init__()
        if distill_weight < 0 or distill_gender_weight < 0:
            raise ValueError(f"distillation weights must be >= 0, not {distill_weight}, {distill_gender_weight}")
        self.distill_weight = distill_weight
        self.distill_gender_weight = distill_gender_weight
        if age_l1 < 0:
            raise ValueError(f"age_l1 must be >= 0, not {age_l1}")
        if age_loss not in ("gaussian", "onehot"):
            raise ValueError(f"age_loss must be 'gaussian' or 'onehot', not {age_loss!r}")
        self.age_sigma = age_sigma
        self.age_loss = age_loss
        self.gender_smoothing = gender_smoothing
        self.gender_weight = gender_weight
        self.age_l1 = age_l1
        self.register_buffer("bins", torch.arange(NUM_AGE_BINS, dtype=torch.float32), persistent=False)
        self.register_buffer("balance", balance_weights, persistent=False)

    def age_targets(self, ages: torch.Tensor) -> torch.Tensor:
        """(B, 101) target distributions; ages over 100 go to the last bin ("100+"). A negative age means "no age
        label" (gender-only faces such as AFLW's): its target is all zeros, so its age loss is exactly 0 and, under
        mixup, a mixed pair's age loss is the labelled partner's, weighted by its λ."""
        labelled = (ages >= 0).float()[:, None]
        ages = ages.float().clamp(0, NUM_AGE_BINS - 1)
        if self.age_loss == "onehot":
            return F.one_hot(ages.round().long(), NUM_AGE_BINS).float() * labelled
        logits = -0.5 * ((self.bins[None, :] - ages[:, None]) / self.age_sigma) ** 2
        return torch.softmax(logits, dim=1) * labelled  # truncated at 0 and 100, renormalised

    def targets(self, ages: torch.Tensor, genders: torch.Tensor,
                balanced: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(age distributions (B, 101), smoothed P(female) (B,), sample weights (B,)).

        ``balanced`` (B,) bool: which samples take the decade weights (default: all). With only the degraded ones,
        the network can learn a flatter age prior for pictures that say little and keep the natural one for clean
        faces, where re-weighting every sample cost run 1 0.29 years of clean MAE (docs/wild-photos.md)."""
        gender = genders.float() * (1.0 - self.gender_smoothing) + 0.5 * self.gender_smoothing
        if self.balance is None:
            weight = torch.ones_like(gender)
        else:  # faces without an age label keep weight 1
            take = ages >= 0 if balanced is None else (ages >= 0) & balanced.bool()
            weight = torch.where(take, self.balance[age_decade(ages)], torch.ones_like(gender))
        return self.age_targets(ages), gender, weight

    def forward(self, age_logits: torch.Tensor, gender_logit: torch.Tensor, age_target: torch.Tensor,
                gender_target: torch.Tensor, weight: torch.Tensor,
                teacher: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, age loss, gender loss), batch means of weighted per-sample losses, computed in float32.

        Dividing by the batch size rather than the weight sum keeps this an unbiased estimate of the balanced
        loss over the training set (whose mean weight is 1). ``teacher`` (B, 101) or (B, 102): distillation
        targets, whose cross-entropy, times ``distill_weight``, joins the age loss (all-zero rows: none); column
        101, the teacher's P(female), is a soft gender target whose BCE, times ``distill_gender_weight``, joins the
        gender loss. A row's age mass (1, or λ under mixup, 0 without a teacher) weighs its gender term, so a face
        without teacher targets adds nothing."""
        log_probs = F.log_softmax(age_logits.float(), dim=1)
        age = -(age_target * log_probs).sum(1)
        if teacher is not None and self.distill_weight > 0:
            age = age - self.distill_weight * (teacher[:, :NUM_AGE_BINS].float() * log_probs).sum(1)
        if self.age_l1 > 0:
            # The target's mass is 1 for a labelled face, 0 without an age label, λ for a mixup partner of one.
            mass = age_target.sum(1)
            expected = log_probs.exp() @ self.bins
            age = age + self.age_l1 * mass * (expected - (age_target @ self.bins) / mass.clamp_min(1e-6)).abs()
        gender = F.binary_cross_entropy_with_logits(gender_logit.float(), gender_target, reduction="none")
        if teacher is not None and self.distill_gender_weight > 0:
            if teacher.shape[1] <= NUM_AGE_BINS:
                raise ValueError("gender distillation needs the teacher's P(female) in column 101")
            mass = teacher[:, :NUM_AGE_BINS].float().sum(1)
            p_female = (teacher[:, NUM_AGE_BINS].float() / mass.clamp_min(1e-6)).clamp(0, 1)
            gender = gender + self.distill_gender_weight * mass * F.binary_cross_entropy_with_logits(
                gender_logit.float(), p_female, reduction="none")
        age_loss = (age * weight).mean()
        gender_loss = (gender * weight).mean()
        return age_loss + self.gender_weight * gender_loss, age_loss, gender_loss
