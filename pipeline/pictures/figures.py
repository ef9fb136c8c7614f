"""Labelled matplotlib panels with colour bars in metres or nats (``evaluate --save-images``, ``explain``).

Colour maps are matplotlib's perceptually uniform ones, whose luminance rises monotonically, so
they read in greyscale and for colour-blind readers (van der Walt and Smith,
https://bids.github.io/colormap/): depth ``magma_r`` on a log scale (near = bright, as in
:mod:`tiekd.pipeline.pictures.tiles`), error ``cividis``, DPM entropy ``viridis``, KL ``inferno``.
Sparse maps (GT, error against GT) are drawn as dots over the dimmed input image. Figures are made
with ``matplotlib.figure.Figure`` (no pyplot, no global state, no display needed).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import patheffects
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from tiekd.pipeline.errors import OutputError
from tiekd.pipeline.files import os_reason

DEPTH_MAP, ERROR_MAP, ENTROPY_MAP, KL_MAP = "magma_r", "cividis", "viridis", "inferno"

NEAR_DEPTH_FRACTION = 1 / 16
"""Depth colour scales span max_depth / 16 .. max_depth (KITTI: 5 m to 80 m), as tiles.depth_image does."""

ROBUST_PERCENTILE = 99.0
"""Error and KL colour scales end at this percentile of the image's values, so one outlier does
not darken the rest."""

DIM = 0.35
"""Brightness of the input image under sparse dots."""

DOT_SIZE = 2.0
"""Marker area (points^2) of one sparse GT pixel."""

FIGURE_DPI = 80
"""Pixels per inch of the saved PNGs (a 16-inch figure is 1280 pixels wide)."""

MAP_WIDTH_INCHES = 7.0
"""Width of one map panel; its height follows the maps' aspect (a 352x1216 map: about 2 inches)."""


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches with constrained layout."""
    return Figure(figsize=(width, height), layout="constrained")


def _colourbar(ax, image, label: str, *, max_depth: float | None = None) -> None:
    """A colour bar beside ``ax``; for depth (``max_depth`` given) ticks at max_depth / 2^k in metres."""
    bar = ax.figure.colorbar(image, ax=ax, fraction=0.04, pad=0.01)
    bar.set_label(label)
    if max_depth is not None:
        ticks = max_depth * 2.0 ** -np.arange(round(math.log2(1 / NEAR_DEPTH_FRACTION)), -1, -1)
        bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
        bar.minorticks_off()


def _robust_max(values: np.ndarray, floor: float) -> float:
    finite = values[np.isfinite(values)]
    return max(floor, float(np.percentile(finite, ROBUST_PERCENTILE))) if finite.size else floor


def show_rgb(ax, image: np.ndarray, title: str, *, dim: float = 1.0) -> None:
    """uint8 (H, W, 3) image without axes."""
    ax.imshow((image.astype(np.float64) / 255 * dim).clip(0, 1), interpolation="antialiased")
    ax.set_title(title)
    ax.set_axis_off()


def show_depth(ax, depth: np.ndarray, title: str, *, max_depth: float, extent=None) -> None:
    """Dense depth (h, w) in metres, log colour scale; ``extent`` stretches it to the KB crop."""
    norm = LogNorm(vmin=max_depth * NEAR_DEPTH_FRACTION, vmax=max_depth, clip=True)
    image = ax.imshow(depth, cmap=DEPTH_MAP, norm=norm, extent=extent, interpolation="antialiased")
    _colourbar(ax, image, "depth (m)", max_depth=max_depth)
    ax.set_title(title)
    ax.set_axis_off()


def show_scalar(ax, values: np.ndarray, title: str, *, kind: str, vmax: float | None = None, extent=None) -> None:
    """Dense ``entropy`` (nats, 0..vmax) or ``kl`` (nats, 0..99th percentile) map."""
    cmap, label = {"entropy": (ENTROPY_MAP, "entropy (nats)"), "kl": (KL_MAP, "KL (nats)")}[kind]
    vmax = _robust_max(values, 1e-3) if vmax is None else vmax
    image = ax.imshow(values, cmap=cmap, norm=Normalize(0.0, vmax, clip=True), extent=extent)
    _colourbar(ax, image, label)
    ax.set_title(title)
    ax.set_axis_off()


def show_sparse(
    ax, values: np.ndarray, valid: np.ndarray, rgb: np.ndarray, title: str, *, kind: str, max_depth: float | None = None
) -> None:
    """Sparse ``gt`` depth or ``error`` (metres) as dots over the dimmed input image; ``gt`` is
    coloured on the log scale up to ``max_depth`` (the dataset's), which it requires."""
    show_rgb(ax, rgb, title, dim=DIM)
    rows, cols = np.nonzero(valid)
    if kind == "gt":
        if max_depth is None:
            raise ValueError("show_sparse of kind gt needs the max_depth of its colour scale")
        cmap, label = DEPTH_MAP, "GT depth (m)"
        norm = LogNorm(vmin=max_depth * NEAR_DEPTH_FRACTION, vmax=max_depth, clip=True)
    else:
        cmap, label = ERROR_MAP, "|error| (m)"
        norm = Normalize(0.0, _robust_max(values[valid], 0.1), clip=True)
    dots = ax.scatter(cols, rows, c=values[valid], s=DOT_SIZE, cmap=cmap, norm=norm, linewidths=0, marker="s")
    _colourbar(ax, dots, label, max_depth=max_depth if kind == "gt" else None)


def mark_pixels(ax, pixels) -> None:
    """Numbered circles at the explained pixels (objects with ``row`` and ``col``): white outlined
    in black, so they show on dark and bright maps alike."""
    outline = [patheffects.withStroke(linewidth=4, foreground="black")]
    for number, pixel in enumerate(pixels, start=1):
        (marker,) = ax.plot(pixel.col, pixel.row, "o", markersize=9, markerfacecolor="none", markeredgecolor="white")
        marker.set_path_effects(outline)
        ax.annotate(
            str(number), (pixel.col, pixel.row), xytext=(6, 6), textcoords="offset points", color="white",
            fontweight="bold", path_effects=outline,
        )  # fmt: skip


def plot_pixel(ax, pixel, centres: np.ndarray, number: int) -> None:
    """A pixel's student distribution and teacher DPM over the bins, GT and expected depths marked."""
    width = float(centres[1] - centres[0])
    ax.step(centres, pixel.student, where="mid", color="tab:blue", label="student")
    if pixel.teacher is not None:
        ax.step(centres, pixel.teacher, where="mid", color="tab:orange", linestyle="--", label="teacher DPM")
        ax.axvline(pixel.teacher_depth, color="tab:orange", linestyle=":", label=f"teacher {pixel.teacher_depth:.1f} m")
    ax.axvline(pixel.student_depth, color="tab:blue", linestyle=":", label=f"student {pixel.student_depth:.1f} m")
    if pixel.gt is not None:
        ax.axvline(pixel.gt, color="black", linewidth=1.5, label=f"GT {pixel.gt:.1f} m")
    ax.set_xlim(*_zoom(pixel, centres, width))
    ax.set_xlabel("depth (m)")
    ax.set_ylabel("probability per bin")
    ax.set_title(f"{number}: {pixel.name}\n(row {pixel.row}, col {pixel.col}; H = {pixel.entropy:.2f} nats)")
    ax.legend(fontsize="small")


ZOOM_MASS = 1e-3
"""A pixel plot shows the bins holding more than this probability, plus the marked depths."""


def _zoom(pixel, centres: np.ndarray, width: float) -> tuple[float, float]:
    held = pixel.student > ZOOM_MASS
    if pixel.teacher is not None:
        held |= pixel.teacher > ZOOM_MASS
    marks = [d for d in (pixel.gt, pixel.student_depth, pixel.teacher_depth) if d is not None]
    points = np.concatenate([centres[held], marks])
    return float(points.min() - 3 * width), float(points.max() + 3 * width)


CURVE_TITLES = {"rmse": "RMSE (m)", "abs_rel": "AbsRel", "d1": "1 - d1"}


def plot_sparsification(axes, curves: dict, fractions: np.ndarray, scores: dict) -> None:
    """One axis per metric: model (entropy), oracle (true error) and random curves, AUSE and AURG."""
    styles = {"model": ("tab:blue", "-"), "oracle": ("black", "--"), "random": ("tab:gray", ":")}
    for ax, (name, curve) in zip(axes, curves.items()):
        for kind, (colour, line) in styles.items():
            label = "DPM entropy" if kind == "model" else kind
            ax.plot(fractions, curve[kind], color=colour, linestyle=line, label=label)
        ax.set_xlabel("fraction of pixels removed")
        ax.set_title(f"{CURVE_TITLES[name]}: AUSE {scores[f'ause_{name}']:.3g}, AURG {scores[f'aurg_{name}']:.3g}")
        ax.legend(fontsize="small")


def map_height(n_rows: int, aspect: float) -> float:
    """Figure height in inches for ``n_rows`` rows of map panels of ``aspect`` = height / width
    (titles included)."""
    return n_rows * (MAP_WIDTH_INCHES * aspect + 0.6)


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write a figure as PNG at FIGURE_DPI, creating the folder; returns the path. A failed write
    (disk full, read-only folder) is one OutputError line."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=FIGURE_DPI)
    except OSError as e:
        raise OutputError(f"cannot write {path} ({os_reason(e)}); free space or choose another folder") from e
    return path


def entropy_limit(n_bins: int) -> float:
    """Entropy of the uniform distribution over ``n_bins`` bins: the top of every entropy scale."""
    return math.log(n_bins)


def evaluation_figure(
    rgb: np.ndarray,
    depth: np.ndarray,
    gt: np.ndarray,
    entropy: np.ndarray | None,
    *,
    title: str,
    depth_title: str,
    max_depth: float,
    n_bins: int | None,
    crop_name: str,
    gt_name: str,
) -> Figure:
    """Input, predicted depth, GT, |error| (metres) and, for a DPM, the entropy (nats) of one image.

    ``rgb`` uint8 (H, W, 3); ``depth``, ``gt`` (0 = none) and ``entropy`` (H, W). ``crop_name`` and
    ``gt_name`` say what the maps show in the dataset's words (e.g. "KB crop", "LiDAR").
    """
    rows = 3 if entropy is not None else 2
    aspect = gt.shape[0] / gt.shape[1]
    figure = new_figure(2 * MAP_WIDTH_INCHES + 1.5, map_height(rows, aspect) + 0.4)
    axes = figure.subplots(rows, 2).ravel()
    valid = gt > 0
    show_rgb(axes[0], rgb, f"input ({crop_name})")
    show_depth(axes[1], depth, depth_title, max_depth=max_depth)
    show_sparse(axes[2], gt, valid, rgb, f"ground truth ({gt_name})", kind="gt", max_depth=max_depth)
    error = np.where(valid, np.abs(depth - gt), 0.0)
    show_sparse(axes[3], error, valid, rgb, "absolute error against GT", kind="error")
    if entropy is not None:
        show_scalar(axes[4], entropy, "DPM entropy (bright = unsure)", kind="entropy", vmax=entropy_limit(n_bins))
        axes[5].set_axis_off()
    figure.suptitle(title)
    return figure
