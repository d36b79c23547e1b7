"""Matplotlib figures a person reads instead of numbers: grids, ROC curves, histograms, fine-tune plots.

Every function writes one PNG to `path` (the caller makes the write atomic) and closes its figure.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def _show(ax, image, cmap=None, vmax=None):
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        ax.imshow(image, cmap=cmap or "gray", vmin=0, vmax=vmax if vmax is not None else 1)
    else:
        ax.imshow(np.clip(image, 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])


def image_grid(panels: dict, path, title=""):
    """One column per panel (input, reconstruction, map ...), one row per image."""
    names = list(panels)
    rows = len(panels[names[0]])
    fig, axes = plt.subplots(rows, len(names), figsize=(2 * len(names), 2 * rows), squeeze=False)
    for j, name in enumerate(names):
        data = np.asarray(panels[name])
        is_map = data.ndim == 3  # [N, H, W] maps get a heat colour map scaled to their 99.5th percentile
        vmax = (float(np.percentile(data, 99.5)) or 1.0) if is_map else None
        for i in range(rows):
            _show(axes[i, j], data[i], cmap="inferno" if is_map else None, vmax=vmax)
        axes[0, j].set_title(name, fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=80)
    plt.close(fig)


def overlay_grid(rows: list[dict], path, vmax: float):
    """Image, reconstruction, anomaly map, ground truth and predicted mask for a few test images."""
    columns = [c for c in ("image", "reconstruction", "anomaly map", "ground truth", "predicted") if c in rows[0]]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(2.1 * len(columns), 2.2 * len(rows)), squeeze=False)
    for i, row in enumerate(rows):
        for j, name in enumerate(columns):
            cmap = "inferno" if name == "anomaly map" else None
            _show(axes[i, j], row[name], cmap=cmap, vmax=vmax if name == "anomaly map" else None)
            if i == 0:
                axes[i, j].set_title(name, fontsize=9)
        axes[i, 0].set_ylabel(f"{row['defect']}\n{row['score']:.4f}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=80)
    plt.close(fig)


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


def score_histogram(scores, labels, path, threshold=None, title="image scores"):
    scores, labels = np.asarray(scores), np.asarray(labels)
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(scores.min(), scores.max(), 40)
    ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="good")
    ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="defective")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label="F1-max threshold")
    ax.set(xlabel="score", ylabel="images", title=title)
    ax.legend()
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
    bins = np.arange(1, largest + 2)
    for name, areas in area_hists.items():
        if len(areas):
            axes[2].hist(areas, bins=bins, histtype="step", log=True, label=name)
    axes[2].axvline(calibrated["min_area"], color="k", ls="--", lw=1, label="min_area")
    axes[2].set(xlabel="region area (pixels)", ylabel="regions", title="region areas at several thresholds")
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
