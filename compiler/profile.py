"""The per-layer profile of a firmware built with --profile: what `tinyc emulate --qemu
--profile` prints and writes to OUT/profile.json.

The demo firmware times every layer of its first sample (a training build's: of its first
step) with the board's counter (templates/firmware/profile.c.j2) and prints "profile <layer>
<count>"; the counts are instructions under QEMU (-icount shift=0: 40-instruction resolution)
and cycles on a board. The report names each layer: its op, and for a training step its phase
(forward, backward, update; backward+update for a fused block).
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .errors import TinycError

PROFILE_FILE = "profile.json"


def profile_rows(report: dict, counts: dict[int, int], training: bool) -> list[dict]:
    """One row per layer that ran: index, name, op, phase, MACs, count, share of the total."""
    nodes = report["training"]["nodes"] if training else report["ops"]
    by_index = {n["index"]: n for n in nodes}
    unknown = sorted(set(counts) - set(by_index))
    if unknown:
        raise TinycError(f"the firmware profiled layer {unknown[0]}, which the report does not "
                         "have: the firmware and report.json are from different builds; rebuild")
    total = sum(counts.values()) or 1
    rows = []
    for i in sorted(counts):
        n = by_index[i]
        rows.append({"index": i, "name": n["name"], "op": n["op"],
                     "layer_type": n.get("layer_type", n["op"]),
                     "phase": n.get("phase", "forward"), "macs": n.get("macs", 0),
                     "count": counts[i], "share": counts[i] / total})
    return rows


def totals(rows: list[dict], key: str) -> list[dict]:
    """Rows summed by `key` (layer_type or phase), largest first."""
    acc: dict[str, dict] = defaultdict(lambda: {"layers": 0, "macs": 0, "count": 0})
    for r in rows:
        a = acc[r[key]]
        a["layers"] += 1
        a["macs"] += r["macs"]
        a["count"] += r["count"]
    total = sum(r["count"] for r in rows) or 1
    return [{key: k, **a, "share": a["count"] / total}
            for k, a in sorted(acc.items(), key=lambda kv: -kv[1]["count"])]


def summary(report: dict, counts: dict[int, int], unit: str, training: bool,
            whole: int | None) -> dict:
    rows = profile_rows(report, counts, training)
    return {"unit": unit, "what": "training step" if training else "inference",
            "whole": whole, "layers": rows, "by_layer_type": totals(rows, "layer_type"),
            "by_phase": totals(rows, "phase")}


def format_summary(s: dict, top: int = 15) -> str:
    unit = s["unit"]
    per_mac = (lambda r: f"{r['count'] / r['macs']:8.2f}" if r["macs"] else f"{'-':>8}")
    lines = [f"profile of one {s['what']} ({unit}; OUT/{PROFILE_FILE} has every layer):"]
    if s["whole"]:
        lines.append(f"  whole {s['what']}: {s['whole']:,}; the layers: "
                     f"{sum(r['count'] for r in s['layers']):,} (the rest: the profile marks)")
    if s["what"] == "training step":
        lines.append("  by phase:")
        for r in s["by_phase"]:
            lines.append(f"    {r['phase']:<24} {r['count']:>14,} {r['share'] * 100:5.1f}%  "
                         f"{r['layers']} layers")
    lines.append(f"  by layer type:{'':<12}{unit:>14}  share  per MAC  layers")
    for r in s["by_layer_type"]:
        lines.append(f"    {r['layer_type']:<24} {r['count']:>14,} {r['share'] * 100:5.1f}% "
                     f"{per_mac(r)}  {r['layers']}")
    heavy = sorted(s["layers"], key=lambda r: -r["count"])[:top]
    lines.append(f"  the {len(heavy)} costliest layers:")
    for r in heavy:
        lines.append(f"    {r['index']:>4} {r['layer_type']:<24} {r['count']:>14,} "
                     f"{r['share'] * 100:5.1f}% {per_mac(r)}  {r['name'][:48]}")
    return "\n".join(lines)


def write_summary(out, s: dict) -> Path:
    path = Path(out) / PROFILE_FILE
    path.write_text(json.dumps(s, indent=1) + "\n")
    return path
