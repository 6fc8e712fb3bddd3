"""Arena occupancy over the schedule: one rectangle per buffer (x: node steps, y: arena bytes)."""
from __future__ import annotations


def plot_arena(report: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    bufs = report["buffers"]
    steps = len(report["ops"])
    fig, ax = plt.subplots(figsize=(min(max(8, steps * 0.18), 24), 5))
    patched = [r["index"] for r in report["ops"] if r.get("patch")]
    if patched:
        ax.axvspan(-0.5, max(patched) + 0.5, color="tab:green", alpha=0.08,
                   label="patch stage")
    for b in bufs:
        colour = "tab:orange" if b["kind"] == "scratch" else "tab:blue"
        ax.add_patch(Rectangle((b["first"] - 0.45, b["offset"] / 1024), b["last"] - b["first"] + 0.9,
                               b["size"] / 1024, facecolor=colour, edgecolor="black",
                               linewidth=0.4, alpha=0.75))
    arena = report["inference"]["arena_bytes"] / 1024
    ax.axhline(arena, color="red", linewidth=1, label=f"arena {arena:.1f} KB")
    ax.set_xlim(-1, steps)
    ax.set_ylim(0, arena * 1.08 + 0.1)
    ax.set_xlabel("schedule step (node index)")
    ax.set_ylabel("arena offset (KB)")
    ax.set_title(f"{report['model']} on {report['board']}: activations (blue), scratch (orange)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
