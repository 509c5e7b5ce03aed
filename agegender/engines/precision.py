"""``precision="auto"``: run a bundled int8 graph only on a CPU where int8 is really faster, else float32.

Why not always int8, or never: onnxruntime's int8 kernels are only exact and reliably fast where the CPU has an
int8 dot-product instruction (x86 AVX-512 VNNI, AVX-VNNI or AMX; Arm's dot-product extension). Without one, its
u8s8 kernels saturate int16 pair sums: on AVX2 EPYCs the Lite0 graphs lost 0.20 years of validation MAE (session
17) and 0.36 points of gender (session 24), and onnxruntime's remedies failed too (7-bit weights: +0.09 years,
−0.36 points; uint8 weights: 16x slower). Speed there varies: several times *slower* than float32 on session 17's
EPYC (2.24 → 10.24 ms per view), 1.3–1.6x faster on session 24's Zen 3 (docs/performance.md). Cloud machines and
recent laptops mostly have VNNI; small shared ones often do not. So the choice is made per machine, in two steps:

1. :func:`int8_instructions` reads the CPU's flags (``/proc/cpuinfo`` on Linux). No dot-product instruction →
   float32, and the int8 graph is never even loaded (no start-up cost).
2. Otherwise a one-off probe (:func:`probe`) times both sessions on the same batch in alternation and keeps int8
   only if its *best* time beats float32's best by :data:`MIN_SPEEDUP`. The best of several runs, not the median:
   other work on a shared CPU only ever adds time, so the minimum is the least noisy estimate of what each graph
   costs. The result is cached per process and graph pair, so a second ``Estimator`` does not probe again.

``AGEGENDER_INT8=0`` or ``1`` overrides both steps (for benchmarks, and for users who know their machine).
"""

from __future__ import annotations

import os
import platform
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

MIN_SPEEDUP = 1.15
"""int8 must be at least this much faster on the probe to be chosen: below it, the probe's noise and the tiny
accuracy cost of int8 (≤ 0.03 years on validation, the bundling rule of ``train.quantize``) are not worth it."""
PROBE_BATCH, PROBE_ROUNDS = 8, 5
X86_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
ARM_INT8_FLAGS = ("asimddp",)  # the Armv8.2 dot-product extension (Linux name)


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``precision="auto"`` chose and why; shown by ``Estimator.info()`` and ``agegender info``."""

    precision: str
    reason: str
    float32_ms_per_view: float | None = None
    int8_ms_per_view: float | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The feature flags of the first CPU listed in ``cpuinfo`` (empty where the file does not exist)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / Arm
            return set(value.split())
    return set()


def int8_instructions(flags: set[str] | None = None) -> list[str]:
    """The int8 dot-product instructions this CPU has (empty: int8 will be slow here).

    Apple silicon has no /proc/cpuinfo but every one of its cores has the dot-product extension."""
    if flags is None:
        if platform.system() == "Darwin" and platform.machine() == "arm64":
            return ["asimddp"]
        flags = cpu_flags()
    return [f for f in X86_INT8_FLAGS + ARM_INT8_FLAGS if f in flags]


def best_ms_per_view(run: Callable[[np.ndarray], object], batch: np.ndarray) -> float:
    start = time.perf_counter()
    run(batch)
    return (time.perf_counter() - start) * 1000 / len(batch)


def probe(run_float32: Callable[[np.ndarray], object], run_int8: Callable[[np.ndarray], object],
          input_size: int, rounds: int = PROBE_ROUNDS) -> PrecisionChoice:
    """Time both graphs in alternation on one random batch and keep int8 only if it is clearly faster."""
    batch = np.random.default_rng(0).integers(0, 256, (PROBE_BATCH, input_size, input_size, 3), dtype=np.uint8)
    run_float32(batch), run_int8(batch)  # first runs allocate and pick kernels: not timed
    times: dict[str, list[float]] = {"float32": [], "int8": []}
    for _ in range(rounds):
        times["float32"].append(best_ms_per_view(run_float32, batch))
        times["int8"].append(best_ms_per_view(run_int8, batch))
    fp32, int8 = min(times["float32"]), min(times["int8"])
    faster = fp32 / int8 >= MIN_SPEEDUP
    reason = (f"int8 {fp32 / int8:.2f}x as fast as float32 on this CPU's probe "
              f"({'≥' if faster else '<'} {MIN_SPEEDUP}x)")
    return PrecisionChoice("int8" if faster else "float32", reason, round(fp32, 3), round(int8, 3))


def choose(int8_sha256: str, make_sessions: Callable[[], tuple[Callable, Callable]], input_size: int,
           flags: set[str] | None = None) -> PrecisionChoice:
    """The precision ``auto`` runs for a model that has a bundled int8 graph (``make_sessions`` builds the
    float32 and int8 runners only when a probe is needed)."""
    override = os.environ.get("AGEGENDER_INT8", "").strip()
    if override in ("0", "1"):
        return PrecisionChoice("int8" if override == "1" else "float32", f"AGEGENDER_INT8={override}")
    found = int8_instructions(flags)
    if not found:
        return PrecisionChoice("float32", "this CPU has no int8 dot-product instruction (VNNI, AMX or Arm dotprod)")
    return _probe_once(int8_sha256, make_sessions, input_size)


def _probe_once(int8_sha256: str, make_sessions, input_size: int) -> PrecisionChoice:
    # Keyed by the graph's hash only: make_sessions differs per call but builds the same two graphs.
    key = (int8_sha256, input_size)
    with _PROBE_LOCK:  # two estimators built at once (app pages) probe once, not side by side
        if key not in _PROBED:
            run_float32, run_int8 = make_sessions()
            _PROBED[key] = probe(run_float32, run_int8, input_size)
        return _PROBED[key]


_PROBED: dict[tuple[str, int], PrecisionChoice] = {}
_PROBE_LOCK = threading.Lock()
