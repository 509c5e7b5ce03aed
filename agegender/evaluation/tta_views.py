"""Which test-time views earn their cost, chosen on validation (issue 30):
``python -m agegender.evaluation.tta_views --model efficientnet_lite0``.

The default runs six views per face: the calibrated crop zoomed in 10 %, as is and zoomed out 10 %, each mirrored.
The scale views triple the network time for a tenth of a year. This runs every view of every validation face once
(UTKFace val chips framed as ``--crops`` frames them, All-Age-Faces val photos through the detector, main face),
keeps each view's own output, and then scores view policies offline on the same outputs:

* ``full``: all six views (today's default); ``flip``: the calibrated crop and its mirror (two views);
* ``adaptive k``: the two flip views, plus the four scale views only for a face whose original and mirrored views
  disagree by more than ``k`` years of expected age (the faces where one framing is unstable);
* ``adaptive-std s``: the same, triggered by the spread (std, years) of the flip-averaged age distribution;
* ``adaptive-alt-std s``: the same trigger, but two scale views instead of four (the tighter crop as it is and the
  looser one mirrored, weighted as the four would be: :mod:`agegender.views`, ``"outer_views": "alternate"``);
* ``..., gender m``: either std trigger, or a flip-averaged P(female) within ``m`` of 0.5 (``"trigger_gender_margin"``):
  the age trigger alone leaves the faces whose gender is a coin toss to the two flip views.

Each policy's pooled MAE (uncalibrated expected age; the calibration is fitted afterwards for whatever is chosen),
its gender accuracy and its mean number of views per face. The rule of the issue: the cheapest policy whose pooled
MAE is within 0.02 years of ``full``; since session 25 also within 0.1 points of its gender accuracy (the views are
the gender's TTA too). ``--degrade`` scores the degraded validation copy (issue 27: choices hold on both), and

    python -m agegender.evaluation.tta_views --choose reports/tta-views-M.json reports/tta-views-M-degraded.json [--install]

picks the policy the app can run (``full``, ``flip``, an ``adaptive-std`` or ``adaptive-alt-std`` trigger, with or
without the gender trigger) that is within 0.02 years and 0.1 gender points of ``full`` in *every* report, with the
fewest views on average, and ``--install`` writes it into the model's manifest entry (``"test_time_views"``),
which ``Estimator`` follows. The disagreement triggers are reported for the record only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from agegender.crops.align import crop_face
from agegender.crops.chips import main_face
from agegender.estimator import SCALE_TTA_CONTEXTS, Estimator
from agegender.evaluation.datasets import read_split
from agegender.evaluation.degrade import degrade
from agegender.groups import AGES
from agegender.io.images import load_image

CONTEXTS = SCALE_TTA_CONTEXTS  # (0.9, 1.0, 1.1): index 1 is the calibrated crop
THRESHOLDS_YEARS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
THRESHOLDS_STD = (4.0, 4.5, 5.0, 5.5, 6.0, 7.0, 8.0, 9.0, 10.0)
GENDER_MARGINS = (0.1, 0.2, 0.3)  # P(female) within this of 0.5 also triggers the scale views


def face_views(est: Estimator, sample, dataset: str, degrade_seed: int | None = None) -> np.ndarray | None:
    """(6, 101 + 1) outputs: rows 0-2 the contexts, 3-5 their mirrors; columns the age distribution, P(female).
    ``degrade_seed``: the face's degraded-validation copy instead (the same one ``agegender evaluate --degrade``
    scores), so a view policy is chosen on clean and degraded faces alike (issue 27)."""
    rgb = load_image(sample.path())
    if degrade_seed is not None:
        rgb = degrade(rgb, degrade_seed, Path(sample.file).name, "crops" if dataset == "utkface" else "photos")
    if dataset == "utkface":
        framed = est.frame_chips([rgb])[0]
        image, det = framed.image, framed.detection
    else:
        _, dets = est.detect(rgb)
        det = main_face(dets, rgb.shape) if dets else None
        if det is None:
            return None
        image = rgb
    crops = np.stack([crop_face(image, det, size=est.input_size, context=c) for c in CONTEXTS])
    batch = np.concatenate([crops, np.ascontiguousarray(crops[:, :, ::-1])])
    age_probs, p_female = est.engine.run(batch)
    return np.concatenate([age_probs, p_female[:, None]], axis=1)


def collect(est: Estimator, limit: int | None = None,
            degrade_seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every view's outputs of every validation face, with the faces' ages and genders (0 male, 1 female)."""
    outputs, ages, genders = [], [], []
    for dataset in ("utkface", "all_age_faces"):
        samples = read_split(dataset, "val")[:limit]
        started = time.perf_counter()
        for i, sample in enumerate(samples):
            views = face_views(est, sample, dataset, degrade_seed)
            if views is not None:
                outputs.append(views)
                ages.append(sample.age)
                genders.append(sample.gender)
            if i % 500 == 499:
                print(f"  {dataset}: {i + 1}/{len(samples)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return np.stack(outputs), np.asarray(ages, np.float64), np.asarray(genders, np.int64)


def expected(probs: np.ndarray) -> np.ndarray:
    return probs @ AGES


def score(outputs: np.ndarray, ages: np.ndarray, genders: np.ndarray | None = None) -> dict[str, Any]:
    """Every policy's MAE (and gender accuracy where ``genders`` are given) and views per face; the cheapest policy
    within 0.02 years (and 0.1 gender points) of ``full`` as ``choice``."""
    views = outputs[:, :, :-1], outputs[:, :, -1]  # (N, 6, 101) age distributions, (N, 6) P(female)
    full = [v.mean(1) for v in views]
    flip = [v[:, [1, 4]].mean(1) for v in views]
    # "alternate": the tighter crop (view 0) and the mirrored looser crop (view 5), the mirror pair counted once
    alternate = [(f + 2 * v[:, [0, 5]].mean(1)) / 3 for f, v in zip(flip, views)]
    flip_age = expected(flip[0])
    disagree = np.abs(expected(views[0][:, 1]) - expected(views[0][:, 4]))
    spread = np.sqrt(np.maximum(flip[0] @ AGES**2 - flip_age**2, 0))

    def row(more: np.ndarray, scaled: list[np.ndarray], extra_views: float) -> dict[str, float]:
        age, female = np.where(more[:, None], scaled[0], flip[0]), np.where(more, scaled[1], flip[1])
        out = {"mae": round(float(np.abs(expected(age) - ages).mean()), 4),
               "views_per_face": round(float(2.0 + extra_views * more.mean()), 3)}
        if genders is not None:
            out["gender_acc"] = round(float(((female >= 0.5) == (genders == 1)).mean()), 4)
        return out

    everyone, nobody = np.ones(len(ages), bool), np.zeros(len(ages), bool)
    policies: dict[str, Any] = {"full": row(everyone, full, 4.0), "flip": row(nobody, full, 4.0)}
    for k in THRESHOLDS_YEARS:
        policies[f"adaptive {k:g} y"] = row(disagree > k, full, 4.0)
    for s in THRESHOLDS_STD:
        policies[f"adaptive-std {s:g} y"] = row(spread > s, full, 4.0)
    for s in THRESHOLDS_STD:
        policies[f"adaptive-alt-std {s:g} y"] = row(spread > s, alternate, 2.0)
    coin_toss = np.abs(flip[1] - 0.5)
    for kind, scaled, extra in (("std", full, 4.0), ("alt-std", alternate, 2.0)):
        for s in THRESHOLDS_STD:
            for m in GENDER_MARGINS:
                policies[f"adaptive-{kind} {s:g} y, gender {m:g}"] = row((spread > s) | (coin_toss < m), scaled, extra)
    best, gender = policies["full"]["mae"], policies["full"].get("gender_acc")
    eligible = {name: p for name, p in policies.items()
                if p["mae"] <= best + 0.02 and (gender is None or p["gender_acc"] >= gender - 0.001)}
    choice = min(eligible, key=lambda name: (eligible[name]["views_per_face"], eligible[name]["mae"]))
    return {"faces": int(len(ages)), "policies": policies, "choice": choice}


def app_policy(name: str) -> dict[str, Any] | None:
    """The manifest form of a policy the app runs (:mod:`agegender.views`), or None for one it does not."""
    if name == "full":
        return {"scale_views": "all"}
    if name == "flip":
        return {"scale_views": "none"}
    kind, _, rest = name.partition(" ")
    if kind not in ("adaptive-std", "adaptive-alt-std"):
        return None
    trigger, _, gender = rest.partition(", gender ")
    policy: dict[str, Any] = {"scale_views": "adaptive", "trigger_std_years": float(trigger.split()[0])}
    if gender:
        policy["trigger_gender_margin"] = float(gender)
    if kind == "adaptive-alt-std":
        policy["outer_views"] = "alternate"
    return policy


def choose(reports: list[dict[str, Any]], tolerance: float = 0.02, gender_tolerance: float = 0.001) -> str:
    """The app-runnable policy within ``tolerance`` years of ``full``'s MAE and ``gender_tolerance`` of its gender
    accuracy (a fraction: 0.001 = 0.1 points) in every report, fewest mean views. A report without gender accuracy
    (those before session 22) is held to the MAE only."""
    names = [n for n in reports[0]["policies"] if app_policy(n) is not None]

    def close_enough(report: dict[str, Any], name: str) -> bool:
        policy, full = report["policies"][name], report["policies"]["full"]
        gender_ok = "gender_acc" not in full or policy["gender_acc"] >= full["gender_acc"] - gender_tolerance
        return policy["mae"] <= full["mae"] + tolerance and gender_ok

    ok = [n for n in names if all(n in r["policies"] and close_enough(r, n) for r in reports)]
    return min(ok, key=lambda n: (np.mean([r["policies"][n]["views_per_face"] for r in reports]), n))


RULE = ("the cheapest policy the app runs within 0.02 years of all six views' MAE and 0.1 points of their gender "
        "accuracy on every validation report")


def install(model: str, name: str, paths: list[Path], reports: list[dict[str, Any]], rule: str = RULE) -> str:
    """Write the chosen policy into ``model``'s manifest entry, with the validation numbers behind it."""
    from agegender.weights import model_entry, read_manifest, write_manifest

    found = model_entry(model)
    if found is None:
        raise SystemExit(f"no bundled weights for {model!r} in the manifest")
    manifest = read_manifest()
    manifest["files"][found[0]]["test_time_views"] = {
        **app_policy(name), "policy": name, "rule": rule,
        "validation": {_report_key(r):
                       {"mae": r["policies"][name]["mae"], "mae_all_views": r["policies"]["full"]["mae"],
                        **({"gender_acc": r["policies"][name]["gender_acc"],
                            "gender_acc_all_views": r["policies"]["full"]["gender_acc"]}
                           if "gender_acc" in r["policies"]["full"] else {}),
                        "views_per_face": r["policies"][name]["views_per_face"], "faces": r["faces"]}
                       for r in reports},
        "reports": [p.as_posix() for p in paths]}
    write_manifest(manifest)
    return found[0]


def _report_key(report: dict[str, Any]) -> str:
    """"clean", "degraded", with the precision the views ran in where the report says ("clean int8")."""
    kind = "degraded" if report.get("degrade_seed") is not None else "clean"
    return f"{kind} {report['precision']}" if report.get("precision") else kind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="backbone (default: the bundled default model)")
    parser.add_argument("--limit", type=int, default=None, help="first N faces of each validation split")
    parser.add_argument("--degrade", type=int, nargs="?", const=0, default=None, metavar="SEED",
                        help="score the degraded validation copy (agegender.evaluation.degrade, seed 0 by default)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON report (default reports/tta-views-MODEL[-degraded].json)")
    parser.add_argument("--outputs", type=Path, default=None, metavar="NPZ",
                        help="every view's outputs: read from this file where it exists (no network run, e.g. to "
                        "score new policies; the file's own model, degradation and precision are reported), else "
                        "collected and written there")
    parser.add_argument("--choose", type=Path, nargs="+", metavar="REPORT",
                        help="choose from these reports (no network run) instead")
    parser.add_argument("--install", action="store_true", help="with --choose: into the model's manifest entry")
    parser.add_argument("--keep", metavar="POLICY", help="with --choose --install: install this policy instead of "
                        "the rule's choice, with --why recorded as its rule (e.g. a policy kept for speed)")
    parser.add_argument("--why", default=None, help="with --keep: the reason recorded in the manifest")
    args = parser.parse_args(argv)
    if args.choose:
        reports = [json.loads(p.read_text()) for p in args.choose]
        name = choose(reports)
        print(f"{reports[0]['model']}: {name}")
        if args.keep:
            if app_policy(args.keep) is None or args.keep not in reports[0]["policies"] or not args.why:
                parser.error("--keep needs a policy the app runs, scored in the reports, and --why")
            for r in reports:
                p = r["policies"][args.keep]
                print(f"  kept {args.keep} ({_report_key(r)}): MAE {p['mae']:.4f} vs all views "
                      f"{r['policies']['full']['mae']:.4f}, {p['views_per_face']:.2f} views per face")
            name = args.keep
        if args.install:
            rule = args.why if args.keep else RULE  # a reason is recorded only for a policy kept by hand
            print(f"installed in {install(reports[0]['model'], name, args.choose, reports, rule)}")
        return 0
    if args.outputs is not None and args.outputs.exists():
        saved = np.load(args.outputs)
        outputs, ages, genders = saved["outputs"], saved["ages"], saved["genders"]
        meta = json.loads(str(saved["meta"]))
    else:
        est = Estimator(model=args.model, calibrate=False)
        try:
            outputs, ages, genders = collect(est, args.limit, args.degrade)
        finally:
            est.close()
        meta = {"model": est.model_name, "degrade_seed": args.degrade,
                "precision": (est.weights_info.get("precision_choice") or {}).get("precision", "float32")}
        if args.outputs is not None:
            args.outputs.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(args.outputs, outputs=outputs, ages=ages, genders=genders, meta=json.dumps(meta))
    result = {**meta, **score(outputs, ages, genders)}
    suffix = "" if meta["degrade_seed"] is None else "-degraded"
    out = args.out or Path(f"reports/tta-views-{meta['model']}{suffix}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    for name, p in result["policies"].items():
        print(f"{name:26s} MAE {p['mae']:.4f}  gender {p['gender_acc']:.2%}  views/face {p['views_per_face']:.2f}")
    print(f"choice: {result['choice']} ({out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
