"""Make the fixed train/val/test splits (80/10/10) of each dataset and commit them as lists of file names.

* Files are grouped by content hash (sha256): byte-identical copies always land in the same split, and only one
  copy is kept. A group whose copies carry different labels is dropped entirely (we cannot know which is right).
* Groups are stratified by (age decade, gender) and shuffled with a fixed seed, so the split is reproducible.

    python -m train.splits            # writes train/splits/{set}_{train,val,test}.txt and summary.json
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

from agegender.evaluation.datasets import SETS, Sample, content_hash, list_samples

SPLITS = ("train", "val", "test")
FRACTIONS = (0.8, 0.1, 0.1)
OUT_DIR = Path(__file__).resolve().parent / "splits"


def dedupe(samples: list[Sample]) -> tuple[list[Sample], list[list[str]], int]:
    """(one sample per content hash, groups dropped for conflicting labels, number of duplicate files removed)."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[content_hash(s.path())].append(s)
    kept, conflicts, duplicates = [], [], 0
    for members in groups.values():
        labels = {(m.age, m.gender) for m in members}
        if len(labels) > 1:
            conflicts.append(sorted(m.file for m in members))
            continue
        members.sort(key=lambda m: m.file)
        kept.append(members[0])
        duplicates += len(members) - 1
    kept.sort(key=lambda s: s.file)
    return kept, conflicts, duplicates


def stratified_split(samples: list[Sample], seed: int = 0) -> dict[str, list[Sample]]:
    strata: dict[tuple[int, int], list[Sample]] = defaultdict(list)
    for s in samples:
        strata[(min(s.age // 10, 9), s.gender)].append(s)
    out: dict[str, list[Sample]] = {k: [] for k in SPLITS}
    rng = random.Random(seed)
    for key in sorted(strata):
        members = sorted(strata[key], key=lambda s: s.file)
        rng.shuffle(members)
        n = len(members)
        n_val = round(n * FRACTIONS[1])
        n_test = round(n * FRACTIONS[2])
        out["test"] += members[:n_test]
        out["val"] += members[n_test:n_test + n_val]
        out["train"] += members[n_test + n_val:]
    return {k: sorted(v, key=lambda s: s.file) for k, v in out.items()}


def label_counts(samples: list[Sample]) -> dict:
    ages = [s.age for s in samples]
    return {
        "n": len(samples),
        "female": sum(s.gender for s in samples),
        "male": sum(1 - s.gender for s in samples),
        "mean_age": round(sum(ages) / max(len(ages), 1), 2),
        "under_18": sum(a < 18 for a in ages),
        "by_decade": {f"{d * 10}-{d * 10 + 9}" if d < 9 else "90+": c
                      for d, c in sorted(Counter(min(a // 10, 9) for a in ages).items())},
        "by_race": {str(k): v for k, v in sorted(Counter(s.race for s in samples).items())},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"seed": args.seed, "fractions": dict(zip(SPLITS, FRACTIONS)), "sets": {}}
    for dataset in SETS:
        samples = list_samples(dataset)
        kept, conflicts, duplicates = dedupe(samples)
        splits = stratified_split(kept, args.seed)
        for name, members in splits.items():
            (args.out / f"{dataset}_{name}.txt").write_text("".join(s.file + "\n" for s in members))
        summary["sets"][dataset] = {
            "files": len(samples), "duplicate_copies_removed": duplicates,
            "conflicting_groups_dropped": len(conflicts), "conflicting_files_dropped": sum(map(len, conflicts)),
            "conflicts": conflicts,
            "splits": {name: label_counts(members) for name, members in splits.items()},
        }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for dataset, info in summary["sets"].items():
        print(dataset, {k: v for k, v in info.items() if k not in ("splits", "conflicts")},
              {k: v["n"] for k, v in info["splits"].items()})
    return summary


if __name__ == "__main__":
    main()
