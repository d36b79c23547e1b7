"""Figures a person reads instead of numbers: image grids, composed with Pillow (as a grid of Matplotlib
axes, one tiny run's 15-image overlay grid took 1.6-2.2 s), and Matplotlib's ROC curves, histograms and
fine-tune plots.

Every function writes one PNG to `path` (the caller makes the write atomic) and closes its figure.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from keras_ad.export.device import heat_colors  # noqa: E402

CELL = 128  # a grid cell's longer side at least, in pixels: 32-px inputs are drawn 4x, nearest-neighbour
PAD = 4


def to_rgb(image, heat_max=None) -> np.ndarray:
    """uint8 [H, W, 3] of an image in [0, 1] (grey, mask or RGB), or with `heat_max` of a map in the
    overlays' heat colours over [0, heat_max] (keras_ad.export.device.heat_colors: one colour scale)."""
    image = np.asarray(image, np.float32)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if heat_max is not None:
        return heat_colors(image / (heat_max or 1.0))
    rgb = np.clip(image if image.ndim == 3 else image[..., None].repeat(3, -1), 0, 1)
    return (rgb * 255 + 0.5).astype(np.uint8)


def _font(size):
    return ImageFont.load_default(size)


def _tile_grid(cells: list[list[np.ndarray]], column_names, row_labels=None, title="") -> Image.Image:
    """One canvas: `cells[row][column]` (uint8 RGB) enlarged by a whole factor to about CELL pixels, the
    column names above, each row's label (one or more lines) at its left, the title on top."""
    height = max(c.shape[0] for row in cells for c in row)
    width = max(c.shape[1] for row in cells for c in row)
    factor = max(1, CELL // max(height, width))
    cell_h, cell_w = height * factor, width * factor
    font = _font(12)
    label_w = 0 if row_labels is None else 8 + max(font.getbbox(line)[2] for label in row_labels
                                                    for line in label.split("\n"))
    top = (22 if title else 0) + 18
    canvas = Image.new("RGB", (label_w + len(column_names) * (cell_w + PAD) + PAD, top + len(cells) * (cell_h + PAD)),
                       "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((canvas.width // 2, 4), title, fill="black", font=_font(15), anchor="mt")
    for j, name in enumerate(column_names):
        x = label_w + PAD + j * (cell_w + PAD) + cell_w // 2
        draw.text((x, top - 3), name, fill="black", font=font, anchor="mb")
    for i, row in enumerate(cells):
        y = top + i * (cell_h + PAD)
        for j, cell in enumerate(row):
            tile = Image.fromarray(cell).resize((cell.shape[1] * factor, cell.shape[0] * factor), Image.NEAREST)
            canvas.paste(tile, (label_w + PAD + j * (cell_w + PAD), y))
        if row_labels is not None:
            draw.multiline_text((4, y + cell_h // 2), row_labels[i], fill="black", font=font, anchor="lm")
    return canvas


def image_grid(panels: dict, path, title="") -> np.ndarray:
    """One column per panel (input, reconstruction, map ...), one row per image; returns the picture
    (uint8 [H, W, 3], for TensorBoard) as it also writes it to `path`."""
    names = list(panels)
    columns = []
    for name in names:
        data = np.asarray(panels[name])
        is_map = data.ndim == 3  # [N, H, W] maps get a heat colour map scaled to their 99.5th percentile
        vmax = (float(np.percentile(data, 99.5)) or 1.0) if is_map else None
        columns.append([to_rgb(image, vmax) for image in data])
    grid = _tile_grid([list(row) for row in zip(*columns)], names, title=title)
    grid.save(path, format="png")
    return np.asarray(grid)


def overlay_grid(rows: list[dict], path, vmax: float):
    """Image, reconstruction, anomaly map, ground truth and predicted mask for a few test images."""
    columns = [c for c in ("image", "reconstruction", "anomaly map", "ground truth", "predicted") if c in rows[0]]
    cells = [[to_rgb(row[name], vmax if name == "anomaly map" else None) for name in columns]
             for row in rows]
    labels = [f"{row['defect']}\n{row['score']:.4f}" for row in rows]
    _tile_grid(cells, columns, labels).save(path, format="png")


def roc_curves(curves: dict, path, title="ROC"):
    """`curves`: name -> (labels, scores). One line per name, AUROC in the legend."""
    from keras_ad.metrics import image_auroc

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (labels, scores) in curves.items():
        if np.min(labels) == np.max(labels):
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"{name} ({image_auroc(labels, scores):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def score_histogram(scores, labels, path, threshold=None, title="image scores", decided=None):
    """Good vs defective image scores. `decided`: the calibrated decision per image (a rug of ticks under
    the bars: red = decided anomalous, the decision that is used); `threshold`: the F1-max score threshold,
    for reference (dashed)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    fig, ax = plt.subplots(figsize=(8, 4))
    bins = np.linspace(scores.min(), scores.max(), 40)
    ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="good")
    ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="defective")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="k", ls="--", lw=1, label="F1-max score threshold (reference)")
    if decided is not None:
        decided = np.asarray(decided, bool)
        transform = ax.get_xaxis_transform()  # x in data, y in axes fractions: ticks along the bottom
        for flag, color, name in ((False, "0.45", "calibrated decision: good"),
                                  (True, "red", "calibrated decision: anomalous")):
            chosen = scores[decided == flag]
            if chosen.size:
                ax.plot(chosen, np.full(chosen.size, 0.03), "|", color=color, ms=12, mew=1.5, transform=transform,
                        clip_on=False, label=name)
    ax.set(xlabel="score", ylabel="images", title=title)
    # beside the axes: never over the bars, and no search for matplotlib's "best" place among every rug tick
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def pixel_curves(masks, maps, fpr_limit, path, pixel_auroc, aupro):
    """Pixel ROC (every pixel of the masked test images) and the PRO curve up to `fpr_limit` (AUPRO's range),
    labelled with the `pixel_auroc` and `aupro` the report computed from the same maps."""
    from keras_ad.metrics import pro_curve

    masks, maps = np.asarray(masks, bool), np.asarray(maps, np.float32)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    fpr, tpr, _ = roc_curve(masks.ravel(), maps.ravel(), drop_intermediate=True)
    axes[0].plot(fpr, tpr, label=f"pixel AUROC {pixel_auroc:.3f}")
    axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    axes[0].set(xlabel="false positive rate (pixels)", ylabel="true positive rate (pixels)", title="pixel ROC")
    curve = pro_curve(masks, maps)
    if curve is not None:
        keep = curve[0] <= fpr_limit
        axes[1].plot(curve[0][keep], curve[1][keep], label=f"AUPRO@{fpr_limit:g} {aupro:.3f}")
    axes[1].set(xlabel="false positive rate (normal pixels)", ylabel="per-region overlap", xlim=(0, fpr_limit),
                ylim=(0, 1.02), title="PRO curve")
    for ax in axes:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def finetune_plots(curves: dict, area_hists: dict, calibrated: dict, path):
    """docs/methods/cae.md#3f in one figure: regions and their area versus threshold, and area histograms."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    t = curves["thresholds"]
    axes[0].plot(t, curves["n_regions"])
    axes[0].set(xlabel="pixel threshold", ylabel="regions in validation maps", yscale="symlog",
                title="number of regions")
    axes[1].plot(t, curves["mean_area"], label="mean")
    axes[1].fill_between(t, np.maximum(curves["mean_area"] - curves["std_area"], 0),
                         curves["mean_area"] + curves["std_area"], alpha=0.3, label="± std")
    axes[1].set(xlabel="pixel threshold", ylabel="region area (pixels)", yscale="symlog", title="region area")
    for ax in axes[:2]:
        ax.axvline(calibrated["pixel_threshold"], color="k", ls="--", lw=1, label="calibrated")
    axes[1].legend()
    largest = max([int(a.max()) for a in area_hists.values() if len(a)] + [calibrated["min_area"] * 2, 10])
    # whole-pixel bins, log-spaced: areas span 1 px to the whole image (a bin per pixel took 9 s at 256 px)
    bins = np.unique(np.geomspace(1, largest + 1, 80).astype(int))
    for name, areas in area_hists.items():
        if len(areas):
            axes[2].hist(areas, bins=bins, histtype="step", log=True, label=name)
    axes[2].axvline(calibrated["min_area"], color="k", ls="--", lw=1, label="min_area")
    axes[2].set(xlabel="region area (pixels)", ylabel="regions", xscale="log",
                title="region areas at several thresholds")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def _shade_runs(ax, frames, labels):
    """Grey bands over the runs of labelled (anomalous) frames."""
    frames, labels = np.asarray(frames), np.asarray(labels, bool)
    start = None
    for i, on in enumerate(np.append(labels, False)):
        if on and start is None:
            start = i
        elif not on and start is not None:
            ax.axvspan(frames[start] - 0.5, frames[i - 1] + 0.5, color="0.85", lw=0)
            start = None


def scores_over_time(traces, path, columns=2):
    """One panel per video: frame anomaly score over time, offline (per-video min-max) and online,
    labelled anomalous frames shaded. `traces`: (name, frame indices, offline, online, labels|None)."""
    rows = max(1, -(-len(traces) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 2.2 * rows), squeeze=False)
    for ax, (name, frames, offline, online, labels) in zip(axes.ravel(), traces):
        if labels is not None:
            _shade_runs(ax, frames, labels)
        ax.plot(frames, offline, lw=1, label="offline (per-video min-max)")
        if not np.all(np.isnan(online)):
            ax.plot(frames, online, lw=1, label="online (normal PSNR range)")
        ax.set(title=f"video {name}", xlabel="frame", ylabel="anomaly score")
    for ax in axes.ravel()[len(traces):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
