"""Where per-op knowledge lives: the issue-15 yardsticks, measured on a source tree.

- branches on an op's name: lines of compiler/ matching `node.op ==` or `op in (`
  (the issue's grep);
- for each IR op, the compiler/ files (and templates) that name it as a string literal.

Usage: python bench/op_locality.py [SOURCE_ROOT]   (default: this checkout)
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

IR_OPS = ("conv2d", "fully_connected", "add", "avg_pool", "max_pool", "pad", "concat", "reshape",
          "softmax", "clamp", "requantize", "crop", "paste", "mul", "select_channels",
          "softmax_ce", "grad_mask", "conv2d_grad_input", "conv2d_update", "dw_pw_grad",
          "avg_pool_grad", "max_pool_grad", "pad_grad", "slice_grad", "grad_alias", "grad_add")
BRANCH = re.compile(r"node\.op ==|op in \(")


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    files = sorted((root / "compiler").rglob("*.py"))
    texts = {f.relative_to(root): f.read_text() for f in files}
    for t in sorted((root / "templates").rglob("*.j2")):
        texts[t.relative_to(root)] = t.read_text()
    branches = [(p, n) for p, s in texts.items() if p.suffix == ".py"
                for n, line in enumerate(s.splitlines(), 1) if BRANCH.search(line)]
    print(f"branches on an op's name (node.op == / op in (): {len(branches)} lines in "
          f"{len({p for p, _ in branches})} files")
    for p in sorted({p for p, _ in branches}):
        print(f"  {sum(1 for q, _ in branches if q == p):3d}  {p}")
    print("files naming each IR op (string literal in compiler/*.py or templates/*.j2):")
    counts = []
    for op in IR_OPS:
        lit = re.compile(r"""["']""" + re.escape(op) + r"""["']""")
        where = sorted(str(p) for p, s in texts.items() if lit.search(s))
        counts.append(len(where))
        print(f"  {op:18s} {len(where):2d}  {', '.join(where)}")
    print(f"mean files per op: {sum(counts) / len(counts):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
