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
patch schedule of its frozen prefix (memory/schedule.py), else layer by layer. With the user's
data the chain is autotune.ranked_schemes', and a step over the budget can be stepped around
(choose_update_scheme's `extend`): the cost along a chain is not monotone (a deeper backward
may or may not let the patch schedule shrink the arena), so the first step that does not fit
need not be the last that could.
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


# --train auto with data steps around at most MAX_SKIPS over-budget steps (each costs a re-ranking
# and a bisection of its continuation with the planner, 3-12 s a plan on mcunet-5fps), and only
# while more than SKIP_ROOM of the budget is free: closer to it, what could still be added is
# small (on mcunet-5fps at 128 KB, four skips from 1.4% free added one bias and 1/8 of a layer's
# weights for 204 s of planning instead of 21-43 s).
MAX_SKIPS = 4
SKIP_ROOM = 0.05


def choose_update_scheme(gq: Graph, sram_budget: int, stack_reserve: int, opts,
                         patched: bool = False, chain: list[dict] | None = None,
                         extend=None) -> tuple[Graph, dict]:
    """gq: the int8 graph (new head already in place). Returns the training graph of the chosen
    scheme and its training_memory() figures; raises if not even the classifier fits. `chain`:
    nested candidates, each training a superset of the one before (default: candidate_schemes;
    with the user's data, autotune.ranked_schemes). `extend(scheme, step, too_big)`: the chain
    ranked on from `scheme` (step `step`) without the over-budget steps `too_big`; with it, a
    step that does not fit is stepped around (up to MAX_SKIPS times, while SKIP_ROOM of the
    budget is free) instead of ending the choice: a deep bias whose gradient map fills the
    budget no longer keeps out the weights ranked after it. The final chain is in the figures
    (auto_chain), with the steps skipped (auto_skipped)."""
    import json

    from ..passes.autodiff import build_training_graph
    from ..passes.sparse_update import resolve_scheme
    from .schedule import choose_schedule, training_max_split

    def memory(t: Graph) -> dict:
        if not patched:
            return training_memory(t, plan_memory(t), stack_reserve)
        sched = choose_schedule(t, "auto", None, training_max_split(t))
        return training_memory(sched.graph, sched.plan, stack_reserve)

    chain = chain or candidate_schemes(gq)
    cache: dict[str, tuple[Graph, dict]] = {}   # by scheme: the chain changes when stepping

    def cost(k: int) -> tuple[Graph, dict]:
        key = json.dumps([chain[k]["bias_last"], chain[k]["weights"]], sort_keys=True)
        if key not in cache:
            scheme = resolve_scheme(gq, dict(chain[k]))
            t = build_training_graph(gq, scheme, opts)
            cache[key] = (t, memory(t))
        return cache[key]

    def fits(k: int) -> bool:
        return cost(k)[1]["sram_bytes"] <= sram_budget

    def longest_fitting(lo: int) -> int:
        """The last step of the chain that fits, by bisection from step lo (which fits)."""
        hi = len(chain) - 1
        if hi == lo or fits(hi):
            return hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid
        return lo

    if not fits(0):
        raise TinycError(f"--train auto: even training only the classifier needs "
                         f"{cost(0)[1]['sram_bytes']:,} B of SRAM > the budget {sram_budget:,} B")
    lo = longest_fitting(0)
    too_big: list[tuple[dict, dict]] = []
    while (extend is not None and lo + 1 < len(chain) and len(too_big) < MAX_SKIPS
           and cost(lo)[1]["sram_bytes"] < (1 - SKIP_ROOM) * sram_budget):
        too_big.append((chain[lo], chain[lo + 1]))
        chain = chain[:lo + 1] + extend(chain[lo], lo, too_big)[1:]
        lo = longest_fitting(lo)
    t, mem = cost(lo)
    t.meta["train"]["scheme"] = f"auto: {chain[lo]['name']}"
    t.meta["train"]["scheme_spec"] = dict(chain[lo])
    mem = dict(mem, auto_candidates_planned=len(cache), auto_budget_bytes=sram_budget,
               auto_chain=chain, auto_skipped=[after for _, after in too_big])
    return t, mem
