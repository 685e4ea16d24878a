"""Figures for the evaluation report: image grids and plots, written as PNG with matplotlib (Agg, no display).

Images are float `[N, C, H, W]` in `[0, 1]` as everywhere in evaluation. A grid is drawn as one mosaic
(one `imshow`), which stays fast for a hundred tiles, with row and column labels as axis ticks.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window (the machines have no display)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_PAD = 2  # pixels of white between tiles


def mosaic(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Tile rows of images (each `[K, C, H, W]`, same H, W, C; K may differ) into one `[Ht, Wt, 3]` array."""
    if not rows:
        raise ValueError("mosaic needs at least one row")
    c, h, w = rows[0].shape[1:]
    cols = max(len(r) for r in rows)
    out = np.ones(((h + _PAD) * len(rows) + _PAD, (w + _PAD) * cols + _PAD, 3), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            tile = np.moveaxis(np.clip(img, 0.0, 1.0), 0, -1)
            y, x = _PAD + i * (h + _PAD), _PAD + j * (w + _PAD)
            out[y : y + h, x : x + w] = tile if c == 3 else np.repeat(tile, 3, axis=-1)
    return out


def save_grid(
    path: Path,
    rows: Sequence[np.ndarray],
    *,
    title: str,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    scale: float = 1.0,
) -> Path:
    """Write a labelled image grid to `path` (PNG). rows: each `[K, C, H, W]`. Returns `path`."""
    image = mosaic(rows)
    h, w = rows[0].shape[2:]
    dpi = 100
    zoom = 2.0 * scale / dpi  # inches per mosaic pixel: tiles shown at twice their size
    size = (max(4.0, image.shape[1] * zoom + 1.5), max(2.0, image.shape[0] * zoom + 1.0))
    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    ax.imshow(image, interpolation="nearest")
    ax.set_title(textwrap.fill(title, max(30, int(size[0] * 14))), fontsize=9)  # ~14 chars per inch
    n_rows = len(rows)
    ax.set_yticks([_PAD + i * (h + _PAD) + h / 2 for i in range(n_rows)], list(row_labels or [""] * n_rows))
    cols = max(len(r) for r in rows)
    ax.set_xticks([_PAD + j * (w + _PAD) + w / 2 for j in range(cols)], list(col_labels or [""] * cols))
    ax.tick_params(labelsize=7, length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return _save(fig, path)


def save_bars(
    path: Path,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    ylabel: str,
    reference: float | None = None,
    reference_label: str = "",
) -> Path:
    """A bar chart with the value written on each bar and an optional horizontal reference line."""
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(labels) + 1.5), 3.2), dpi=100)
    bars = ax.bar(list(labels), list(values), color="#4c72b0")
    ax.bar_label(bars, fmt="%.3g", fontsize=8)
    if reference is not None:
        ax.axhline(reference, color="#c44e52", linestyle="--", linewidth=1, label=reference_label)
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel)
    ax.tick_params(labelsize=8)
    return _save(fig, path)


def save_tradeoff(
    path: Path,
    x: Sequence[float],
    left: Sequence[float],
    right: Sequence[float],
    *,
    xlabel: str,
    left_label: str,
    right_label: str,
    title: str,
    log_x: bool = True,
    left_points: Sequence[tuple[float, float]] | None = None,
) -> Path:
    """Two series against one x axis, with two y axes (e.g. MIG and reconstruction against beta).

    left_points: the single measurements behind `left` when it is a mean (e.g. one per seed), drawn as
    dots around it."""
    fig, ax = plt.subplots(figsize=(5.0, 3.4), dpi=100)
    if left_points:
        ax.plot(*zip(*left_points, strict=True), ".", color="#4c72b0", alpha=0.45)
    ax.plot(x, left, "o-", color="#4c72b0", label=left_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(left_label, color="#4c72b0")
    if log_x:
        ax.set_xscale("log", base=2)
    ax.set_xticks(list(x), [f"{v:g}" for v in x])
    twin = ax.twinx()
    twin.plot(x, right, "s--", color="#c44e52", label=right_label)
    twin.set_ylabel(right_label, color="#c44e52")
    for axis in (ax, twin):  # tick labels as values (5.9311), not an offset (+5.93) that hides the scale
        axis.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def save_heatmap(
    path: Path,
    matrix: np.ndarray,
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
) -> Path:
    """A `[R, C]` table of values in [0, 1] as a heat map, each cell's value written in it."""
    rows, cols = matrix.shape
    fig, ax = plt.subplots(figsize=(1.1 * cols + 2.2, 0.36 * rows + 1.4), dpi=100)
    ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=max(1e-9, float(np.max(matrix))), aspect="auto")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="white" if v > 0.6 * np.max(matrix) else "black")  # fmt: skip
    ax.set_xticks(range(cols), list(col_labels), fontsize=8)
    ax.set_yticks(range(rows), list(row_labels), fontsize=7)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def save_curves(
    path: Path,
    panels: Sequence[tuple[str, np.ndarray, np.ndarray]],
    *,
    series_labels: Sequence[str],
    xlabel: str,
    ylabel: str,
    title: str,
) -> Path:
    """One panel per (name, x `[P]`, y `[S, P]`): S lines against x; same series and y scale in each."""
    fig, axes = plt.subplots(
        1, len(panels), figsize=(2.6 * len(panels), 2.8), dpi=100, squeeze=False, sharey=True
    )
    for ax, (name, x, y) in zip(axes[0], panels, strict=True):
        for series, label in zip(y, series_labels, strict=True):
            ax.plot(x, series, ".-", linewidth=1, markersize=3, label=label)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel(ylabel, fontsize=8)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)  # figures are kept alive by pyplot otherwise: a sweep would leak one per plot
    return path
