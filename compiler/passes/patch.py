"""Patch-based scheduling of a network prefix (the idea of MCUNetV2, Lin et al. 2021).

The prefix is nodes[0 .. split]. Its last output, the *split tensor*, is cut into a grid of
rows x cols patches. Each patch of the split tensor is computed from its receptive-field window
of the input through every node of the prefix; only one patch's intermediate tensors exist at a
time, and the patch is pasted into the full-size split tensor. The rest of the network runs layer
by layer, unchanged.

The pass is a plain graph rewrite (`apply_patches`): the prefix is unrolled into ordinary IR
nodes on small *local* tensors, so the memory planner, the numpy reference and the code generator
handle the patched graph like any other (every unrolled node carries attrs["patch"] = (i, j)).
Two data-movement ops join the IR:
- `crop`  (attrs origin=(row, col)): the window of its input starting at origin, of its output's
  size. Used where an element-wise op (add, clamp, requantize, concat, pad) reads a smaller window
  of a tensor than that tensor's local region.
- `paste` (attrs origin=(row, col)): inputs [patch] or [patch, acc]; the output is acc (or, for
  the first patch, uninitialised memory) with the patch written at origin. The planner runs it in
  place over acc, so the split tensor is assembled in one full-size buffer.

Regions. For every tensor of the prefix and every patch, the region (rows [r0, r1), cols
[c0, c1) in the full tensor's coordinates) that the patch needs is found backwards from the
patch's window of the split tensor: a conv/pool output row range [a, b) needs input rows
[a*s - pad, (b-1)*s - pad + (k-1)*d + 1), clipped to the tensor (what falls outside is the
image's own padding); a tensor read by several nodes gets the hull of their needs. Rows and
columns are independent, so regions are computed per axis.

Local frames. A conv or pool on a patch reads its input's local buffer (or the full input image)
with pads shifted into the local frame: pad_top' = pad_top - (a*s - r0) where r0 is the first
row of the buffer. The shifted pads are zero or negative inside the image (a negative pad just
skips rows of a buffer that is larger than this node needs) and equal to the real padding only
where the window meets the image border. So padding is applied exactly at the image borders and
never at a patch-interior border, and every output value is computed from the very same input
values as layer by layer: the patched graph is bit-exact by construction.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from .. import ops
from ..errors import TinycError
from ..ir import Graph, Node, Tensor

# ops a prefix may contain (spatially local, one output), and those among them that read any
# window of their input buffer through (possibly negative) pads: the ops' traits
PATCHABLE_OPS = tuple(name for name, op in ops.REGISTRY.items() if op.patchable)
WINDOWED_OPS = tuple(name for name, op in ops.REGISTRY.items() if op.windowed)
MAX_GRID = 8


@dataclass(frozen=True)
class PatchSpec:
    split: int   # index (in graph.nodes) of the last node of the prefix
    rows: int    # grid rows over the split tensor's height
    cols: int    # grid columns over its width

    def __str__(self) -> str:
        return f"{self.rows}x{self.cols}@{self.split}"

    @property
    def patches(self) -> int:
        return self.rows * self.cols

    @staticmethod
    def parse(text: str) -> "PatchSpec":
        m = re.fullmatch(r"\s*(\d+)x(\d+)@(\d+)\s*", text)
        if not m:
            raise TinycError(f"--patch '{text}': expected auto, off or ROWSxCOLS@NODE "
                             "(e.g. 4x4@12: a 4x4 grid over the output of node 12)")
        rows, cols, split = (int(v) for v in m.groups())
        if rows < 1 or cols < 1:
            raise TinycError(f"--patch '{text}': the grid needs at least one row and one column")
        return PatchSpec(split, rows, cols)


Interval = tuple[int, int]   # [lo, hi)


def _window_params(g: Graph, node: Node, axis: int) -> tuple[int, int, int, int]:
    """(kernel, stride, pad before, dilation) of a conv or pool along axis 0 (H) or 1 (W)."""
    return ops.get(node).window(g, node, axis)


def input_interval(g: Graph, node: Node, out: Interval, axis: int, in_size: int) -> Interval:
    """The input rows (axis 0) or columns (axis 1) node needs for its outputs in `out`, clipped
    to the input tensor (positions outside it are padding)."""
    a, b = ops.get(node).input_interval(g, node, out, axis)
    return max(a, 0), min(b, in_size)


def _activation_inputs(g: Graph, node: Node) -> list[str]:
    return [t for t in node.inputs if t and not g.tensors[t].is_const]


def prefix_problem(g: Graph, split: int) -> str | None:
    """Why nodes[0..split] cannot run patch by patch, or None when they can."""
    if not 0 <= split < len(g.nodes):
        return f"node index {split} is out of range (the graph has {len(g.nodes)} nodes)"
    if len(g.inputs) != 1:
        return "the graph has more than one input"
    prefix = g.nodes[:split + 1]
    produced = {t for n in prefix for t in n.outputs}
    split_out = g.nodes[split].outputs[0]
    for i, n in enumerate(prefix):
        if not ops.get(n).patchable or len(n.outputs) != 1:
            return f"node {i} ({n.describe()}) is not a spatially local op"
        if len(g.tensors[n.outputs[0]].shape) != 4:
            return f"node {i} ({n.describe()}) has no spatial output"
    for n in g.nodes[split + 1:]:
        for t in _activation_inputs(g, n):
            if t != split_out and (t in produced or t in g.inputs):
                return (f"tensor '{t}' of the prefix is read after the split by {n.describe()}; "
                        "only the split node's output may leave the prefix")
    for t in g.outputs:
        if t in produced and t != split_out:
            return f"tensor '{t}' of the prefix is a graph output"
    return None


def split_bounds(size: int, parts: int) -> list[Interval]:
    """`parts` near-equal consecutive intervals covering [0, size)."""
    return [(k * size // parts, (k + 1) * size // parts) for k in range(parts)]


def axis_regions(g: Graph, split: int, parts: int, axis: int) -> dict[str, list[Interval]]:
    """For every activation the prefix reads or writes: its needed interval along `axis` for each
    of the `parts` grid rows (axis 0) or columns (axis 1). Raises TinycError when a patch would
    need an empty window of some tensor (a grid finer than the tensor, or a window made only of
    padding)."""
    split_out = g.nodes[split].outputs[0]
    size = g.tensors[split_out].shape[1 + axis]
    if parts > size:
        raise TinycError(f"a grid of {parts} along {'HW'[axis]} is finer than the split tensor "
                         f"'{split_out}' ({size} pixels)")
    need: dict[str, list[Interval]] = {split_out: split_bounds(size, parts)}
    for node in reversed(g.nodes[:split + 1]):
        outs = need.get(node.outputs[0])
        if outs is None:
            continue
        for x in _activation_inputs(g, node):
            in_size = g.tensors[x].shape[1 + axis]
            ivs = [input_interval(g, node, iv, axis, in_size) for iv in outs]
            if any(lo >= hi for lo, hi in ivs):
                raise TinycError(f"{node.describe()}: a patch would need an empty window of "
                                 f"'{x}' (its outputs there are pure padding); use a coarser grid")
            old = need.get(x)
            need[x] = ivs if old is None else [(min(a[0], b[0]), max(a[1], b[1]))
                                               for a, b in zip(old, ivs)]
    return need


@dataclass
class PatchRegions:
    """Needed rows/cols of every prefix tensor, per grid row / grid column."""
    spec: PatchSpec
    rows: dict[str, list[Interval]]
    cols: dict[str, list[Interval]]

    def region(self, t: str, i: int, j: int) -> tuple[Interval, Interval]:
        return self.rows[t][i], self.cols[t][j]


def patch_regions(g: Graph, spec: PatchSpec, cache: dict | None = None) -> PatchRegions:
    """Regions of every prefix tensor for every patch. `cache` (a dict the caller keeps for one
    graph) reuses the per-axis regions across grids that share a row or column count."""
    problem = prefix_problem(g, spec.split)
    if problem:
        raise TinycError(f"cannot patch the prefix ending at node {spec.split}: {problem}")
    cache = {} if cache is None else cache
    axes = []
    for axis, parts in ((0, spec.rows), (1, spec.cols)):
        key = (spec.split, parts, axis)
        if key not in cache:
            try:
                cache[key] = axis_regions(g, spec.split, parts, axis)
            except TinycError as e:
                cache[key] = e
        if isinstance(cache[key], TinycError):
            raise cache[key]
        axes.append(cache[key])
    return PatchRegions(spec, *axes)


def apply_patches(g: Graph, spec: PatchSpec) -> Graph:
    """The graph with nodes[0..split] unrolled patch by patch (row-major over the grid), followed
    by the rest of the nodes unchanged. g.meta["patch"] describes the schedule."""
    reg = patch_regions(g, spec)
    out = g.copy()
    split_out = g.nodes[spec.split].outputs[0]
    nodes: list[Node] = []
    acc = None
    for i in range(spec.rows):
        for j in range(spec.cols):
            last = i == spec.rows - 1 and j == spec.cols - 1
            dst = split_out if last else f"{split_out}#asm{i}.{j}"
            acc = unroll_patch(g, reg, i, j, out.tensors, nodes, acc, dst)
    out.nodes = nodes + [copy.deepcopy(n) for n in g.nodes[spec.split + 1:]]
    out.remove_unused_tensors()
    if "train" in out.meta:   # a training step: its forward pass got longer
        out.meta["train"] = dict(out.meta["train"], forward_nodes=out.meta["train"]["forward_nodes"]
                                 + len(nodes) - (spec.split + 1))
    base = sum(g.macs(n) for n in g.nodes)
    executed = sum(out.macs(n) for n in out.nodes)
    out.meta["patch"] = {
        "split_index": spec.split, "split_node": g.nodes[spec.split].name,
        "split_tensor": split_out, "split_shape": list(g.tensors[split_out].shape),
        "grid": [spec.rows, spec.cols], "patches": spec.patches,
        "prefix_nodes": spec.split + 1, "patched_nodes": len(nodes),
        "macs_layer_by_layer": base, "macs": executed,
        "overhead_macs": executed - base,
        "overhead_pct": 100.0 * (executed - base) / base if base else 0.0,
    }
    return out


def probe_graph(g: Graph, reg: PatchRegions, i: int, j: int, with_acc: bool = True) -> Graph:
    """Patch (i, j) alone, for memory estimates. Inputs: the image and (with_acc) the full-size
    split tensor; outputs: the paste and the image (later patches still read all of it, so it
    stays whole throughout). Without acc the paste only holds its own window: the estimate of a
    plan that lays the split tensor over image rows already consumed. Shares g's tensors."""
    split_out = g.nodes[reg.spec.split].outputs[0]
    tensors = dict(g.tensors)
    inputs = list(g.inputs)
    acc = None
    if with_acc:
        acc = f"{split_out}#acc"
        tensors[acc] = copy.copy(g.tensors[split_out])
        tensors[acc].name = acc
    nodes: list[Node] = []
    dst = f"{split_out}#probe"
    unroll_patch(g, reg, i, j, tensors, nodes, acc, dst)
    return Graph(tensors, nodes, inputs + ([acc] if acc else []), [dst] + inputs, dict(g.meta))


def unroll_patch(g: Graph, reg: PatchRegions, i: int, j: int, tensors: dict, nodes: list,
                 acc: str | None, dst: str) -> str:
    """Append to `nodes` (new tensors into `tensors`) the prefix computed on patch (i, j) and
    the paste of its split-tensor window over `acc` into `dst`; returns dst."""
    spec = reg.spec
    split_out = g.nodes[spec.split].outputs[0]
    tag = f"p{i}.{j}"
    # original tensor -> (local tensor name, its region); graph inputs are read in full
    local = {t: (t, ((0, g.tensors[t].shape[1]), (0, g.tensors[t].shape[2]))) for t in g.inputs}
    for k, node in enumerate(g.nodes[:spec.split + 1]):
        y = node.outputs[0]
        if y not in reg.rows:
            continue   # not needed by any patch (a dead branch)
        y_reg = reg.region(y, i, j)
        ins = []
        for x in node.inputs:
            if not x or g.tensors[x].is_const:
                ins.append((x, None))
                continue
            name, x_reg = local[x]
            want = tuple(input_interval(g, node, y_reg[ax], ax, g.tensors[x].shape[1 + ax])
                         for ax in (0, 1))
            if not ops.get(node).windowed and x_reg != want:   # windowed ops shift their pads
                name = _crop(tensors, nodes, g.tensors[x], name, x_reg, want, (i, j), k)
                x_reg = want
            ins.append((name, x_reg))
        attrs = dict(node.attrs, patch=(i, j))
        attrs.update(ops.get(node).patch_attrs(g, node, y_reg, ins[0][1]))
        name = f"{y}#{tag}"
        _add_tensor(tensors, g.tensors[y], name, y_reg)
        nodes.append(Node(f"{node.name}#{tag}", node.op, [v for v, _ in ins], [name], attrs,
                          node.source_op))
        local[y] = (name, y_reg)
    if dst not in tensors:
        tensors[dst] = copy.copy(g.tensors[split_out])
        tensors[dst].name = dst
    (r0, _), (c0, _) = reg.region(split_out, i, j)
    nodes.append(Node(f"{g.nodes[spec.split].name}#paste{tag}", "paste",
                      [local[split_out][0]] + ([acc] if acc else []), [dst],
                      {"origin": (r0, c0), "patch": (i, j), "q": {}}, "patch"))
    return dst


def _add_tensor(tensors: dict, like: Tensor, name: str, region) -> None:
    (r0, r1), (c0, c1) = region
    tensors[name] = Tensor(name, (1, r1 - r0, c1 - c0, like.shape[3]), like.dtype, None, like.q)


def _crop(tensors: dict, nodes: list, like: Tensor, src: str, src_reg, want, patch, k) -> str:
    tag = f"p{patch[0]}.{patch[1]}.{k}"
    name = f"{like.name}#{tag}.crop"
    _add_tensor(tensors, like, name, want)
    origin = (want[0][0] - src_reg[0][0], want[1][0] - src_reg[1][0])
    nodes.append(Node(f"{like.name}#crop{tag}", "crop", [src], [name],
                      {"origin": origin, "patch": patch, "q": {}}, "patch"))
    return name


def recompute_macs(g: Graph, spec: PatchSpec, reg: PatchRegions | None = None) -> int:
    """Extra MACs of the patch schedule over layer by layer (halo recomputation), from the
    regions alone (rows and columns are independent, so the sum over patches factorises)."""
    reg = reg or patch_regions(g, spec)
    extra = 0
    for node in g.nodes[:spec.split + 1]:
        y = node.outputs[0]
        if y not in reg.rows:
            continue
        per_pixel = g.macs(node) // (g.tensors[y].shape[1] * g.tensors[y].shape[2])
        rows = sum(b - a for a, b in reg.rows[y])
        cols = sum(b - a for a, b in reg.cols[y])
        extra += per_pixel * (rows * cols - g.tensors[y].shape[1] * g.tensors[y].shape[2])
    return extra
