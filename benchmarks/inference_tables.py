"""The Markdown tables of ``bench_inference.py``'s result (kept apart so the benchmark stays about measuring)."""

from __future__ import annotations


def table(rows: list[dict], columns: list[str]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(out)


def markdown(result: dict) -> str:
    parts = [f"Machine: {result['machine']}; median of {result['repeats']} runs after {result['warmup']} warm-up "
             f"runs; load N = {result['load']} busy processes of the benchmark's own.\n"]
    parts.append("precision=\"auto\" on this machine: " + "; ".join(
        f"{k}: {v.get('precision', '?')} ({v.get('reason', v.get('skipped', ''))})"
        for k, v in result.get("auto_precision", {}).items()))
    parts.append(table(result["models"], ["load", "loadavg", "backbone", "engine", "precision", "ms_per_view_batch1",
                                          "ms_per_view_batch8", "ms_per_face_batch8_default_tta"]))
    parts.append(table(result["threads"], ["load", "loadavg", "case", "ms_per_view_batch8"]))
    parts.append(table(result["detector"], ["load", "loadavg", "mode", "image", "size", "faces", "ms"]))
    peer = {(r["load"], r["image"]): r for r in result["peer"]}
    for r in result["pipeline"]:
        p = peer.get((r["load"], r["image"]))
        r["peer_ms_image"] = p["ms_image"] if p else "n/a"
        r["peer_faces"] = p["faces"] if p else "n/a"
        r["ratio_ours_peer"] = round(r["ms_image"] / p["ms_image"], 2) if p else "n/a"
    parts.append(table(result["pipeline"], ["load", "loadavg", "engine", "image", "size", "faces", "ms_image",
                                            "ms_image_flip_only", "ms_image_all_views", "ms_image_one_worker_per_core",
                                            "peer_faces", "peer_ms_image",
                                            "ratio_ours_peer"]))
    for r in result["consensus"]:  # the age check (both models) against the peer on the same photo
        p = peer.get((r["load"], r["image"]))
        r["ratio_panel_peer"] = round(r["ms_panel"] / p["ms_image"], 2) if p else "n/a"
    parts.append(table(result["consensus"], ["load", "loadavg", "image", "faces", "ms_single", "ms_panel",
                                             "ms_panel_all_views", "ms_panel_one_worker_per_core",
                                             "ratio_panel_single", "ratio_panel_peer"]))
    parts.append("Timed in rotation, call by call (benchmarks/paired.py; the ratios the speed bars read):\n\n" + table(
        result.get("paired", []), ["load", "loadavg", "image", "ms_ours", "ms_panel", "ms_peer", "ratio_ours_peer",
                                   "ratio_panel_peer", "cpu_ms_ours", "cpu_ms_panel", "cpu_ms_peer"]))
    parts.append(table(result["startup"], ["load", "loadavg", "case", "s"]))
    parts.append(f"Peak RSS {result['peak_rss_mb']:.0f} MB (both backbones in both engines, all detectors, the "
                 f"peer).")
    return "\n\n".join(parts)
