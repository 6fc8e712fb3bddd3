"""Worst-case stack depth of a firmware, from GCC's call-graph information.

env:tinyc compiles with -fcallgraph-info=su: next to each object GCC writes a .ci file (VCG
graph) with every function it emitted, its frame size ("N bytes (static)") and its calls. The
deepest path from the reset handler, plus one interrupt on top of it, bounds the stack the
firmware can use:

    worst case = max over call paths from tinyc_reset_handler of the sum of the frames
               + an exception frame (8 words, 26 with the FPU's lazily stacked context, plus
                 alignment) + the deepest interrupt handler (SysTick; USB on the USB consoles)

Functions without call-graph information (newlib's memcpy, logf, libgcc's helpers) count as
LIBRARY_BYTES each, a generous bound for these leaf routines. A frame of dynamic size (alloca,
variable-length arrays) or a recursive cycle makes the bound unknown: the result says so and
the firmware is then checked only by running it (painted stack, MPU guard).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

LIBRARY_BYTES = 128
EXCEPTION_FRAME_BYTES = {True: 26 * 4 + 4, False: 8 * 4 + 4}   # FPU context or not, + alignment
ROOT = "tinyc_reset_handler"
# the interrupts the firmware enables (faults exit): SysTick, and the USB controller's on boards
# with a USB console; all at the same priority, so one never preempts another
HANDLERS = ("tinyc_systick_handler", "tinyc_usb_irq_handler")

NODE_RE = re.compile(r'node: \{ title: "([^"]+)" label: "([^"]*)"(.*)\}')
EDGE_RE = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')
SIZE_RE = re.compile(r"\\n(\d+) bytes \(([\w,]+)\)")


@dataclass
class StackBound:
    """The worst case (bytes), the deepest call chain, and why it may be unknown."""
    bytes: int | None
    chain: list[str] = field(default_factory=list)
    interrupt_bytes: int = 0
    unknown: str | None = None
    library_calls: list[str] = field(default_factory=list)
    functions: int = 0

    def chain_text(self, limit: int = 12) -> str:
        shown = self.chain if len(self.chain) <= limit else self.chain[:limit] + ["..."]
        return " -> ".join(shown)


class CallGraph:
    def __init__(self):
        self.frame: dict[str, int] = {}          # defined function -> frame bytes
        self.dynamic: set[str] = set()
        self.calls: dict[str, set[str]] = {}
        self.global_names: dict[str, str] = {}   # plain name -> title of its definition

    @classmethod
    def read(cls, build_dir) -> "CallGraph":
        g = cls()
        files = sorted(Path(build_dir).rglob("*.ci"))
        for path in files:
            for line in path.read_text(errors="replace").splitlines():
                m = NODE_RE.match(line.strip())
                if m:
                    title, label = m.group(1), m.group(2)
                    size = SIZE_RE.search(label)
                    if size:   # a function defined in this unit (external ones have no size)
                        g.frame[title] = int(size.group(1))
                        if "dynamic" in size.group(2) and "bounded" not in size.group(2):
                            g.dynamic.add(title)
                        g.calls.setdefault(title, set())
                        if ":" not in title:
                            g.global_names[title] = title
                    continue
                m = EDGE_RE.match(line.strip())
                if m:
                    g.calls.setdefault(m.group(1), set()).add(m.group(2))
        return g

    def resolve(self, name: str) -> str | None:
        """A call's target -> the title of its definition (None: no call-graph info)."""
        if name in self.frame:
            return name
        return self.global_names.get(name)

    def deepest(self, root: str) -> tuple[int, list[str], str | None, list[str]]:
        """(bytes, chain, reason the bound is unknown, library functions met) from root."""
        memo: dict[str, tuple[int, list[str]]] = {}
        unknown: list[str] = []
        library: set[str] = set()
        on_path: set[str] = set()

        def visit(f: str) -> tuple[int, list[str]]:
            if f in memo:
                return memo[f]
            if f in on_path:
                unknown.append(f"recursion through {f}")
                return 0, [f + " (recursive)"]
            if f in self.dynamic:
                unknown.append(f"{f} has a frame of dynamic size")
            on_path.add(f)
            best, chain = 0, []
            for callee in sorted(self.calls.get(f, ())):
                target = self.resolve(callee)
                if target is None:
                    library.add(callee)
                    depth, sub = LIBRARY_BYTES, [f"{callee} (library, {LIBRARY_BYTES} B allowed)"]
                else:
                    depth, sub = visit(target)
                if depth > best:
                    best, chain = depth, sub
            on_path.discard(f)
            memo[f] = (self.frame.get(f, 0) + best, [_short(f)] + chain)
            return memo[f]

        total, chain = visit(root)
        return total, chain, "; ".join(dict.fromkeys(unknown)) or None, sorted(library)


def _short(title: str) -> str:
    return title.rsplit(":", 1)[-1]


def worst_case_stack(build_dir, has_fpu: bool, root: str = ROOT) -> StackBound:
    """The firmware's worst-case stack from the .ci files under build_dir (module docstring)."""
    g = CallGraph.read(build_dir)
    if g.resolve(root) is None:
        return StackBound(None, unknown=f"no call-graph information for {root} in {build_dir} "
                                        "(compiled without -fcallgraph-info=su?)")
    total, chain, unknown, library = g.deepest(g.resolve(root))
    irq = 0
    for h in HANDLERS:
        if g.resolve(h):
            depth, _, handler_unknown, _ = g.deepest(g.resolve(h))
            irq = max(irq, depth)
            if handler_unknown:   # an interrupt handler's recursion makes the bound unknown too
                unknown = "; ".join(filter(None, (unknown, handler_unknown)))
    irq += EXCEPTION_FRAME_BYTES[has_fpu]
    return StackBound(None if unknown else total + irq, chain, irq, unknown, library,
                      len(g.frame))


def function_stack(build_dir, name: str) -> StackBound:
    """The deepest stack of one function and its callees (no interrupt, no callers)."""
    g = CallGraph.read(build_dir)
    if g.resolve(name) is None:
        return StackBound(None, unknown=f"no call-graph information for {name}")
    total, chain, unknown, library = g.deepest(g.resolve(name))
    return StackBound(None if unknown else total, chain, 0, unknown, library, len(g.frame))
