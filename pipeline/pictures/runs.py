"""The validation curves of several training runs in one figure (``tiekd compare --figure``)."""

from __future__ import annotations

from matplotlib.figure import Figure

PANEL_INCHES = (5.0, 3.6)
"""Width and height of one metric's panel."""


def validation_curves(curves: list[dict], titles: dict[str, str]) -> Figure:
    """One panel per metric of ``titles`` (name -> axis title), validation value against step.

    ``curves``: one dict per run with ``label`` (the legend's text, given once per group),
    ``colour`` (an index: runs of one group share it), ``steps`` and ``metrics`` (name -> values).
    """
    figure = Figure(figsize=(PANEL_INCHES[0] * len(titles), PANEL_INCHES[1]), layout="constrained")
    axes = figure.subplots(1, len(titles), squeeze=False)[0]
    for ax, (name, title) in zip(axes, titles.items()):
        for curve in curves:
            ax.plot(curve["steps"], curve["metrics"][name], marker="o", markersize=3,
                    color=f"C{curve['colour'] % 10}", label=curve["label"])  # fmt: skip
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    shown = {label: handle for handle, label in zip(handles, labels) if label}
    figure.legend(shown.values(), shown.keys(), loc="outside lower center", ncols=min(len(shown), 3), fontsize=8)
    return figure
