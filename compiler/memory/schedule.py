"""Choosing the inference schedule: layer by layer, or a prefix run patch by patch.

`choose_schedule(g, mode)`:
- mode "off": layer by layer.
- mode PatchSpec (`--patch 4x4@12`): that schedule, whatever it costs.
- mode "auto": every split point whose prefix can be patched (passes/patch.py) and every grid
  from 1x2 / 2x1 up to MAX_GRID x MAX_GRID (non-square included) is estimated; the most
  promising are planned for real and the smallest arena wins (ties: fewer MACs). The result is
  never larger than the layer-by-layer arena: when no patch schedule is strictly smaller, the
  schedule stays layer by layer.
- with `arena_budget` (`--sram`): the schedule with the fewest MACs whose arena fits the budget
  (layer by layer first, since it recomputes nothing); when nothing fits, the smallest arena.

Estimates. A candidate's arena is at least the larger of
- the suffix: the layer-by-layer plan of the nodes after the split (its input is the assembled
  split tensor), computed once per split point;
- the patch stage: the planner's in-place-aware lower bound (memory/planner.live_peak) of one
  patch alone, with the image and the full-size split tensor alive beside it (probe_graph). The
  patch used is the one with the largest windows.
Both are cheap; only the best few candidates go through apply_patches + plan_memory, and the
exact arenas decide.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import TinycError
from ..ir import Graph
from ..passes.patch import (MAX_GRID, PatchRegions, PatchSpec, apply_patches, patch_regions,
                            prefix_problem, probe_graph, recompute_macs)
from .planner import MemoryPlan, live_peak, plan_memory

EXACT_CANDIDATES = 4     # candidates planned for real (auto)
BUDGET_TRIES = 12        # candidates planned for real, cheapest first, when fitting a budget


@dataclass
class Schedule:
    graph: Graph                 # what to plan and generate: the patched graph, or g itself
    plan: MemoryPlan
    spec: PatchSpec | None       # None: layer by layer
    info: dict = field(default_factory=dict)   # report.json "inference.patch"


@dataclass(order=True)
class Candidate:
    estimate: int                # lower-bound estimate of the arena (bytes)
    extra_macs: int
    spec: PatchSpec = field(compare=False)


def _suffix_arena(g: Graph, split: int) -> int:
    split_out = g.nodes[split].outputs[0]
    rest = Graph(g.tensors, g.nodes[split + 1:], [split_out], list(g.outputs))
    if not rest.nodes:
        return g.tensors[split_out].nbytes
    return plan_memory(rest, orders=("size",)).arena_bytes


def _heaviest(reg: PatchRegions, g: Graph, axis_regions: dict, parts: int) -> int:
    """Grid row (or column) whose windows hold the most bytes summed over the prefix."""
    def weight(k):
        return sum((hi - lo) * g.tensors[t].shape[3] for t, ivs in axis_regions.items()
                   for lo, hi in [ivs[k]])
    return max(range(parts), key=weight)


def split_points(g: Graph, limit: int) -> list[int]:
    """Nodes whose prefix can run patch by patch and whose output is smaller than `limit`."""
    out = []
    for s, node in enumerate(g.nodes):
        if prefix_problem(g, s) is None and g.tensors[node.outputs[0]].nbytes < limit:
            out.append(s)
    return out


def candidates(g: Graph, limit: int) -> list[Candidate]:
    """Estimated patch schedules that might beat an arena of `limit` bytes."""
    found = []
    for s in split_points(g, limit):
        suffix = _suffix_arena(g, s)
        if suffix >= limit:
            continue
        _, h, w, _ = g.tensors[g.nodes[s].outputs[0]].shape
        for rows in range(1, min(MAX_GRID, h) + 1):
            for cols in range(1, min(MAX_GRID, w) + 1):
                if rows * cols == 1:
                    continue
                spec = PatchSpec(s, rows, cols)
                try:
                    reg = patch_regions(g, spec)
                except TinycError:
                    continue   # a patch window would be empty (pure padding)
                i = _heaviest(reg, g, reg.rows, rows)
                j = _heaviest(reg, g, reg.cols, cols)
                est = max(suffix, live_peak(probe_graph(g, reg, i, j)))
                if est < limit:
                    found.append(Candidate(est, recompute_macs(g, spec, reg), spec))
    return sorted(found)


def _info(g: Graph, base: MemoryPlan, sched: Schedule, mode: str, considered: int,
          budget: int | None) -> dict:
    total = sum(g.macs(n) for n in g.nodes)
    info = {"mode": mode, "enabled": sched.spec is not None,
            "peak_bytes": sched.plan.arena_bytes,
            "peak_layer_by_layer_bytes": base.arena_bytes,
            "candidates_considered": considered}
    if sched.spec is None:
        info.update(split_index=None, split_node=None, grid=[1, 1], patches=1,
                    overhead_macs=0, overhead_pct=0.0, macs=total)
    else:
        meta = sched.graph.meta["patch"]
        info.update({k: meta[k] for k in ("split_index", "split_node", "split_tensor",
                                          "split_shape", "grid", "patches", "overhead_macs",
                                          "macs")})
        info["overhead_pct"] = 100.0 * meta["overhead_macs"] / total if total else 0.0
    if budget is not None:
        info["arena_budget_bytes"] = budget
        info["fits_budget"] = sched.plan.arena_bytes <= budget
    return info


def _patched(g: Graph, spec: PatchSpec) -> Schedule:
    gp = apply_patches(g, spec)
    return Schedule(gp, plan_memory(gp), spec)


def choose_schedule(g: Graph, mode="auto", arena_budget: int | None = None) -> Schedule:
    """The schedule to compile g with; see the module docstring. `mode`: "auto", "off" or a
    PatchSpec. `arena_budget`: bytes the arena may take (auto only)."""
    base = Schedule(g, plan_memory(g), None)
    if mode == "off":
        base.info = _info(g, base.plan, base, "off", 0, None)
        return base
    if isinstance(mode, PatchSpec):
        sched = _patched(g, mode)
        sched.info = _info(g, base.plan, sched, "forced", 1, None)
        return sched
    if mode != "auto":
        raise TinycError(f"unknown patch mode {mode!r}; use auto, off or ROWSxCOLS@NODE")

    if arena_budget is not None and base.plan.arena_bytes <= arena_budget:
        base.info = _info(g, base.plan, base, "auto", 0, arena_budget)
        return base
    cands = candidates(g, base.plan.arena_bytes)
    best = base
    if arena_budget is not None:
        for c in sorted((c for c in cands if c.estimate <= arena_budget),
                        key=lambda c: (c.extra_macs, c.estimate))[:BUDGET_TRIES]:
            sched = _patched(g, c.spec)
            if sched.plan.arena_bytes <= arena_budget:
                sched.info = _info(g, base.plan, sched, "auto", len(cands), arena_budget)
                return sched
    for c in cands[:EXACT_CANDIDATES]:
        sched = _patched(g, c.spec)
        key = (sched.plan.arena_bytes, sched.graph.meta["patch"]["overhead_macs"])
        if key < (best.plan.arena_bytes, _overhead(best)):
            best = sched
    best.info = _info(g, base.plan, best, "auto", len(cands), arena_budget)
    return best


def _overhead(s: Schedule) -> int:
    return 0 if s.spec is None else s.graph.meta["patch"]["overhead_macs"]
