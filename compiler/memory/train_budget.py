"""`--train auto --sram BYTES`: pick an update scheme that fits an SRAM budget.

The rule is deliberately simple (a proper search over layers and channel ratios comes later):
candidates form a chain where each one trains a superset of the previous one,
  1. the classifier only,
  2. + the biases of the last k conv layers, k = 1, 2, ... up to every conv layer ("bias-only"),
  3. + the weights of the last k conv layers, k = 1, 2, ... (full channels),
so their benefit (the parameters that can adapt) grows along the chain, and so does their cost,
the planned training.sram_bytes (arena + trained parameters in SRAM + stack reserve). tinyc
picks the last candidate that fits, found by bisection over the chain. Each candidate's arena is
that of the schedule the build will use: with `patched` (any --patch but off) the automatic
patch schedule of its frozen prefix (memory/schedule.py), else layer by layer.
"""
from __future__ import annotations

from ..errors import TinycError
from ..ir import Graph
from .planner import plan_memory, training_memory


def candidate_schemes(g: Graph) -> list[dict]:
    from ..passes.sparse_update import conv_layers
    n = len(conv_layers(g))
    chain = [{"name": "classifier only", "bias_last": 0, "weights": {}}]
    for k in range(1, n):   # the backward pass reaches further down with every step
        chain.append({"name": f"biases of the last {k} conv layers", "bias_last": k,
                      "weights": {}})
    chain.append({"name": "bias-only", "bias_last": n, "weights": {}})
    for k in range(1, n + 1):
        chain.append({"name": f"bias-only + weights of the last {k} conv layers", "bias_last": n,
                      "weights": {str(i): 1.0 for i in range(n - k, n)}})
    return chain


def choose_update_scheme(gq: Graph, sram_budget: int, stack_reserve: int, opts,
                         patched: bool = False, chain: list[dict] | None = None
                         ) -> tuple[Graph, dict]:
    """gq: the int8 graph (new head already in place). Returns the training graph of the chosen
    scheme and its training_memory() figures; raises if not even the classifier fits. `chain`:
    nested candidates, each training a superset of the one before (default: candidate_schemes;
    with the user's data, autotune.ranked_schemes)."""
    from ..passes.autodiff import build_training_graph
    from ..passes.sparse_update import resolve_scheme
    from .schedule import choose_schedule, training_max_split

    def memory(t: Graph) -> dict:
        if not patched:
            return training_memory(t, plan_memory(t), stack_reserve)
        sched = choose_schedule(t, "auto", None, training_max_split(t))
        return training_memory(sched.graph, sched.plan, stack_reserve)

    chain = chain or candidate_schemes(gq)
    cache: dict[int, tuple[Graph, dict]] = {}

    def cost(k: int) -> tuple[Graph, dict]:
        if k not in cache:
            scheme = resolve_scheme(gq, dict(chain[k]))
            t = build_training_graph(gq, scheme, opts)
            cache[k] = (t, memory(t))
        return cache[k]

    if cost(0)[1]["sram_bytes"] > sram_budget:
        raise TinycError(f"--train auto: even training only the classifier needs "
                         f"{cost(0)[1]['sram_bytes']:,} B of SRAM > the budget {sram_budget:,} B")
    lo, hi = 0, len(chain) - 1          # invariant: chain[lo] fits
    if cost(hi)[1]["sram_bytes"] <= sram_budget:
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cost(mid)[1]["sram_bytes"] <= sram_budget:
            lo = mid
        else:
            hi = mid
    t, mem = cost(lo)
    t.meta["train"]["scheme"] = f"auto: {chain[lo]['name']}"
    t.meta["train"]["scheme_spec"] = dict(chain[lo])
    mem = dict(mem, auto_candidates_planned=len(cache), auto_budget_bytes=sram_budget)
    return t, mem
