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

Estimates. A candidate's arena is about the larger of
- the suffix: the layer-by-layer plan of the nodes after the split (its input is the assembled
  split tensor), computed once per split point;
- the patch stage: the planner's in-place-aware lower bound (memory/planner.live_peak) of one
  patch alone with the whole image alive beside it (probe_graph); the patch used is the one with
  the largest windows. The planner can lay the assembled split tensor over image rows already
  consumed, or not: the optimistic estimate leaves the split tensor out, the conservative one
  counts it in full.
Both are cheap; the best few candidates by either estimate, and the cheapest in MACs among
those estimated within PEAK_TOLERANCE of the best, go through apply_patches + plan_memory, and
the exact arenas decide.

Ties. Arenas within PEAK_TOLERANCE (1%) of the smallest planned arena count as equal, and the
schedule that recomputes the fewest MACs among them wins: a few hundred bytes are not worth
recomputing half the network again (on mbv2-w0.35 at 128 px the very smallest arena needs +52%
MACs, one 0.6% larger needs +10%).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import TinycError
from ..ir import Graph
from ..passes.patch import (MAX_GRID, PatchSpec, apply_patches, patch_regions,
                            prefix_problem, probe_graph, recompute_macs)
from .planner import MemoryPlan, live_peak, plan_memory

EXACT_CANDIDATES = 3     # candidates planned for real (auto), by each ranking
BUDGET_TRIES = 12        # candidates planned for real, cheapest first, when fitting a budget
PEAK_TOLERANCE = 0.01    # arenas within 1% of the smallest are ties: fewest MACs wins


@dataclass
class Schedule:
    graph: Graph                 # what to plan and generate: the patched graph, or g itself
    plan: MemoryPlan
    spec: PatchSpec | None       # None: layer by layer
    info: dict = field(default_factory=dict)   # report.json "inference.patch"


@dataclass(order=True)
class Candidate:
    estimate: int                # optimistic estimate of the arena (bytes)
    extra_macs: int
    conservative: int = field(compare=False)   # estimate without overlay
    spec: PatchSpec = field(compare=False)


def _suffix_arena(g: Graph, split: int) -> int:
    split_out = g.nodes[split].outputs[0]
    meta = dict(g.meta)
    if "train" in meta:   # a training step: the rest keeps its backward pass and packed masks
        meta["train"] = dict(meta["train"], forward_nodes=meta["train"]["forward_nodes"] - split - 1)
    rest = Graph(g.tensors, g.nodes[split + 1:], [split_out], list(g.outputs), meta)
    if not rest.nodes:
        return g.tensors[split_out].nbytes
    return plan_memory(rest, orders=("size",)).arena_bytes


def _heaviest(g: Graph, axis_regions: dict, parts: int) -> int:
    """Grid row (or column) whose windows hold the most bytes summed over the prefix."""
    def weight(k):
        return sum((hi - lo) * g.tensors[t].shape[3] for t, ivs in axis_regions.items()
                   for lo, hi in [ivs[k]])
    return max(range(parts), key=weight)


def split_points(g: Graph, limit: int, max_split: int | None = None) -> list[int]:
    """Nodes (up to index max_split) whose prefix can run patch by patch and whose output is
    smaller than `limit`."""
    out = []
    last = len(g.nodes) - 1 if max_split is None else min(max_split, len(g.nodes) - 1)
    if last < 0:
        return []
    for s, node in enumerate(g.nodes[:last + 1]):
        if prefix_problem(g, s) is None and g.tensors[node.outputs[0]].nbytes < limit:
            out.append(s)
    return out


def candidates(g: Graph, limit: int, max_split: int | None = None) -> list[Candidate]:
    """Estimated patch schedules that might beat an arena of `limit` bytes."""
    found = []
    cache: dict = {}
    image = sum(g.tensors[t].nbytes for t in g.inputs)
    for s in split_points(g, limit, max_split):
        suffix = _suffix_arena(g, s)
        if max(suffix, image) >= limit:
            continue
        split_bytes = g.tensors[g.nodes[s].outputs[0]].nbytes
        _, h, w, _ = g.tensors[g.nodes[s].outputs[0]].shape
        for rows in range(1, min(MAX_GRID, h) + 1):
            for cols in range(1, min(MAX_GRID, w) + 1):
                if rows * cols == 1:
                    continue
                spec = PatchSpec(s, rows, cols)
                try:
                    reg = patch_regions(g, spec, cache)
                except TinycError:
                    continue   # a patch window would be empty (pure padding)
                i = _heaviest(g, reg.rows, rows)
                j = _heaviest(g, reg.cols, cols)
                stage = live_peak(probe_graph(g, reg, i, j, with_acc=False))
                if max(suffix, stage) < limit:
                    found.append(Candidate(max(suffix, stage), recompute_macs(g, spec, reg),
                                           max(suffix, stage + split_bytes), spec))
    return sorted(found)


def shortlist(cands: list[Candidate]) -> list[PatchSpec]:
    """The candidates worth planning for real: the best by the optimistic and by the
    conservative estimate, and the cheapest in MACs estimated within tolerance of the best."""
    if not cands:
        return []
    by_high = sorted(cands, key=lambda c: (c.conservative, c.extra_macs))
    near = sorted((c for c in cands if c.estimate <= cands[0].estimate * (1 + PEAK_TOLERANCE)),
                  key=lambda c: (c.extra_macs, c.estimate))
    picks = cands[:EXACT_CANDIDATES] + by_high[:EXACT_CANDIDATES] + near[:EXACT_CANDIDATES]
    return list(dict.fromkeys(c.spec for c in picks))


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


def training_max_split(g: Graph) -> int:
    """The last node a training step (passes/autodiff.py) may end its patched prefix at: before
    its first trained layer and before the producer of every tensor its backward pass (loss,
    gradients, updates) reads, so that the backward pass reads only tensors the patch schedule
    leaves exactly as layer by layer. -1: nothing can be patched (e.g. the first layer is
    trained, or the backward pass reads the input image)."""
    train = g.meta["train"]
    n_forward = train["forward_nodes"]
    trained = set(train.get("trainable", ()))
    produced_at = {t: i for i, n in enumerate(g.nodes[:n_forward]) for t in n.outputs}
    limit = n_forward
    for i, node in enumerate(g.nodes[:n_forward]):
        if node.name in trained:
            limit = min(limit, i)
            break
    for node in g.nodes[n_forward:]:
        for t in node.inputs:
            if t and not g.tensors[t].is_const and (t in g.inputs or t in produced_at):
                limit = min(limit, produced_at.get(t, 0))   # the image: before node 0
    return limit - 1


def _patched(g: Graph, spec: PatchSpec) -> Schedule:
    gp = apply_patches(g, spec)
    return Schedule(gp, plan_memory(gp), spec)


def choose_schedule(g: Graph, mode="auto", arena_budget: int | None = None,
                    max_split: int | None = None) -> Schedule:
    """The schedule to compile g with; see the module docstring. `mode`: "auto", "off" or a
    PatchSpec. `arena_budget`: bytes the arena may take (auto only). `max_split`: split nodes
    up to this index only (a training step can patch only its frozen prefix:
    training_max_split); a forced PatchSpec beyond it is refused."""
    base = Schedule(g, plan_memory(g), None)
    if mode == "off":
        base.info = _info(g, base.plan, base, "off", 0, None)
        return base
    if isinstance(mode, PatchSpec) and max_split is not None and mode.split > max_split:
        raise TinycError(f"--patch {mode}: a training step can patch only the frozen layers "
                         "before its first trained layer and before every tensor its backward "
                         + (f"pass reads: split at node {max_split} or earlier" if max_split >= 0
                            else "pass reads, and here there are none"))
    if isinstance(mode, PatchSpec):
        sched = _patched(g, mode)
        sched.info = _info(g, base.plan, sched, "forced", 1, None)
        return sched
    if mode != "auto":
        raise TinycError(f"unknown patch mode {mode!r}; use auto, off or ROWSxCOLS@NODE")

    if arena_budget is not None and base.plan.arena_bytes <= arena_budget:
        base.info = _info(g, base.plan, base, "auto", 0, arena_budget)
        return base
    cands = candidates(g, base.plan.arena_bytes, max_split)
    best = base
    if arena_budget is not None:
        for c in sorted((c for c in cands if c.estimate <= arena_budget),
                        key=lambda c: (c.extra_macs, c.estimate))[:BUDGET_TRIES]:
            sched = _patched(g, c.spec)
            if sched.plan.arena_bytes <= arena_budget:
                sched.info = _info(g, base.plan, sched, "auto", len(cands), arena_budget)
                return sched
    planned = [base] + [_patched(g, spec) for spec in shortlist(cands)]
    smallest = min(s.plan.arena_bytes for s in planned)
    ties = [s for s in planned if s.plan.arena_bytes <= smallest * (1 + PEAK_TOLERANCE)]
    best = min(ties, key=lambda s: (_overhead(s), s.plan.arena_bytes))
    if best.plan.arena_bytes >= base.plan.arena_bytes:
        best = base        # never larger than layer by layer (nor equal, with recomputation)
    best.info = _info(g, base.plan, best, "auto", len(cands), arena_budget)
    best.info["smallest_planned_bytes"] = smallest
    return best


def _overhead(s: Schedule) -> int:
    return 0 if s.spec is None else s.graph.meta["patch"]["overhead_macs"]
