"""The figures and the offline ``index.html`` of ``tiekd explain``.

One figure per image (:func:`explanation_figure`): six labelled maps with colour bars (input,
cached teacher depth, student depth, |error| against GT, DPM entropy, KL(teacher DPM || student
DPM)) with the explained pixels numbered on them, and below one plot per pixel of the student's
distribution against the teacher's DPM. One figure of the sparsification curves
(:func:`sparsification_figure`). The HTML page references the PNGs by relative path and carries
its own style: it opens from disk without a network.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from tiekd.pipeline.explain import ImageExplanation
from tiekd.pipeline.pictures import figures

PIXEL_PLOT_HEIGHT = 3.2
"""Height in inches of the row of per-pixel plots."""


def explanation_figure(
    explanation: ImageExplanation, *, centres: np.ndarray, max_depth: float, crop_name: str
) -> Figure:
    """Maps (3 rows of 2) and one distribution plot per explained pixel for one image; ``crop_name``
    says what the maps show in the dataset's words (e.g. "KB crop")."""
    n_pixels = max(1, len(explanation.pixels))
    maps_height = figures.map_height(3, explanation.gt.shape[0] / explanation.gt.shape[1])
    figure = figures.new_figure(2 * figures.MAP_WIDTH_INCHES + 1.5, maps_height + PIXEL_PLOT_HEIGHT + 0.4)
    maps, plots = figure.subfigures(2, 1, height_ratios=[maps_height, PIXEL_PLOT_HEIGHT])
    axes = maps.subplots(3, 2).ravel()
    _draw_maps(axes, explanation, max_depth=max_depth, crop_name=crop_name)
    for ax in axes:
        figures.mark_pixels(ax, explanation.pixels)
    for number, (ax, pixel) in enumerate(zip(np.atleast_1d(plots.subplots(1, n_pixels)), explanation.pixels), 1):
        figures.plot_pixel(ax, pixel, centres, number)
    figure.suptitle(explanation.id)
    return figure


def _draw_maps(axes, explanation: ImageExplanation, *, max_depth: float, crop_name: str) -> None:
    """The six maps: input, teacher and student depth, error, entropy, KL (teacher panels empty
    without a store)."""
    rgb, gt = explanation.image, explanation.gt
    height, width = gt.shape
    figures.show_rgb(axes[0], rgb, f"input ({crop_name})")
    if explanation.teacher_depth is not None:
        figures.show_depth(axes[1], explanation.teacher_depth, "teacher depth (cached)", max_depth=max_depth)
    else:
        _missing(axes[1], "teacher depth: no --cache given")
    figures.show_depth(axes[2], explanation.student_depth, "student depth (one pass)", max_depth=max_depth)
    error = np.nan_to_num(explanation.error)
    figures.show_sparse(axes[3], error, gt > 0, rgb, "absolute error against GT", kind="error")
    limit = figures.entropy_limit(explanation.n_bins)
    title = "student DPM entropy (bright = unsure)"
    figures.show_scalar(axes[4], explanation.entropy, title, kind="entropy", vmax=limit)
    if explanation.kl is not None:
        extent = (-0.5, width - 0.5, height - 0.5, -0.5)  # the student's resolution stretched over the crop
        figures.show_scalar(axes[5], explanation.kl, "KL(teacher DPM || student DPM)", kind="kl", extent=extent)
    else:
        _missing(axes[5], "KL: no --cache given")


def _missing(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def sparsification_figure(curves: dict, scores: dict, fractions: np.ndarray, n_images: int) -> Figure:
    """Model / oracle / random curves of RMSE, AbsRel and 1 - d1, with AUSE and AURG in the titles."""
    figure = figures.new_figure(15.0, 4.2)
    figures.plot_sparsification(figure.subplots(1, len(curves)), curves, fractions, scores)
    figure.suptitle(f"Sparsification by the DPM entropy, mean over {n_images} image(s)")
    return figure


def caption(explanation: ImageExplanation) -> str:
    """One sentence per explained pixel: where, what, and the depths at it."""
    parts = [f"{explanation.id}."]
    for number, pixel in enumerate(explanation.pixels, 1):
        depths = [f"student {pixel.student_depth:.2f} m"]
        if pixel.teacher_depth is not None:
            depths.append(f"teacher {pixel.teacher_depth:.2f} m")
        depths.append(f"GT {pixel.gt:.2f} m" if pixel.gt is not None else "no GT")
        parts.append(
            f"{number}: {pixel.name} at row {pixel.row}, col {pixel.col} ({', '.join(depths)}; "
            f"entropy {pixel.entropy:.2f} nats)."
        )
    return " ".join(parts)


PAGE_STYLE = "body{font-family:sans-serif;max-width:1300px;margin:auto}img{width:100%}figure{margin:2em 0}"


def write_index(out: Path, entries: list[tuple[str, str]], *, title: str, intro: str) -> Path:
    """``out/index.html`` showing each (PNG path relative to ``out``, caption); offline, no scripts."""
    body = "\n".join(
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(text)}">'
        f"<figcaption>{html.escape(text)}</figcaption></figure>"
        for src, text in entries
    )
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{PAGE_STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>\n"
        f"{body}\n</body></html>\n"
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
