"""The demo's output: a table of accuracy vs number of labels, and the learning curves as a PNG."""

from __future__ import annotations

from pathlib import Path

from examples.demo.loop import Curve


def table(curves: list[Curve]) -> str:
    """Rows by number of labels, one accuracy column per strategy."""
    header = f"{'labels':>6}  " + "  ".join(f"{curve.strategy:>11}" for curve in curves)
    rows = [header, "-" * len(header)]
    by_labels: dict[int, dict[str, float]] = {}
    for curve in curves:
        for point in curve.points:
            by_labels.setdefault(point.labels, {})[curve.strategy] = point.accuracy
    for labels in sorted(by_labels):
        cells = [by_labels[labels].get(curve.strategy) for curve in curves]
        rows.append(
            f"{labels:>6}  " + "  ".join(f"{c:>11.3f}" if c is not None else f"{'':>11}" for c in cells)
        )
    return "\n".join(rows)


def labels_to_reach(curves: list[Curve]) -> str:
    """How many labels each strategy needed to reach the accuracy every one of them ends up with."""
    finals = [curve.points[-1].accuracy for curve in curves if curve.points]
    if len(finals) < len(curves) or not curves:
        return ""
    level = min(finals)
    needed = [
        f"{curve.strategy} {next(p.labels for p in curve.points if p.accuracy >= level)}" for curve in curves
    ]
    return f"labels needed to reach {level:.3f} held-out accuracy: " + ", ".join(needed)


def plot(curves: list[Curve], path: Path, title: str) -> str | None:
    """Write the curves to ``path``; the reason when that is impossible (matplotlib is in the examples extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[examples]'), so no PNG was written"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for curve in curves:
        axes.plot(
            [p.labels for p in curve.points],
            [p.accuracy for p in curve.points],
            marker="o",
            label=f"{curve.strategy} sampling",
        )
    axes.set_xlabel("labeled tasks")
    axes.set_ylabel("held-out accuracy")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.set_title(title)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return None
