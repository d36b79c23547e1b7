"""Calibrate and evaluate a video detector (LNTRA, docs/methods/lntra.md#5e): every clip of every test video, its centre
frame's score, frame-level ROC AUC over all videos with the paper's per-video min-max normalisation
(offline) and with the normal clips' PSNR range (online, usable frame by frame)."""

from __future__ import annotations

import numpy as np

from keras_ad import metrics, plots
from keras_ad.data import layouts, video
from keras_ad.detectors.lntra import online_normaliser, per_video_minmax, scored_frames
from keras_ad.reports import finish_calibration, fit_maps
from keras_ad.runs import atomic_save
from keras_ad.scoring import Scorer


def score_video(scorer, frames, clip_length):
    """Scorer outputs for every clip (stride 1) of one video's pre-processed frames, in batches."""
    starts = np.arange(len(frames) - clip_length + 1)
    parts = [scorer.score_preprocessed(video.clips(frames, clip_length, starts[i:i + scorer.batch_size]))
             for i in range(0, len(starts), scorer.batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _online(out):
    """The scoring graph's online score of each clip; NaN before calibration (no normal PSNR range yet)."""
    return out.get("online_score", np.full(len(out["score"]), np.nan))


def _calibration_videos(cfg):
    """The held-out normal videos; the training videos when none are held out (data.val_fraction 0)."""
    train, val, _ = video.discover(layouts.resolve_root(cfg.data), cfg.data.val_fraction, cfg.train.seed,
                                   need_test=False)
    return val or train, "validation" if val else "training"


def calibrate(run, cfg, scorer, min_area=None) -> dict:
    """Pixel threshold on the centre-frame error maps of normal clips (docs/methods/cae.md#3e's rule) and their PSNR
    range for the online score; writes calibration.json."""
    min_area = min_area or cfg.calibrate.min_area
    videos, kind = _calibration_videos(cfg)
    prepare = video.frame_preprocessor(cfg.data)
    raw = Scorer(scorer.detector, cfg)  # uncalibrated: maps before any normalisation
    outs = [score_video(raw, video.load_frames(v, prepare), scorer.detector.clip_length) for v in videos]
    result, maps = fit_maps(np.concatenate([o["anomaly_map"] for o in outs]), cfg, min_area, raw.region)
    result["online_psnr_range"] = list(online_normaliser(-np.concatenate([o["score"] for o in outs])))
    result["calibration_videos"] = kind
    low, high = result["online_psnr_range"]
    return finish_calibration(run, scorer, maps, result, f"{len(maps)} clips of {len(videos)} {kind} videos "
                                                         f"(normal PSNR {low:.4g} to {high:.4g} dB)")


def evaluate(run, cfg, scorer) -> dict:
    """report.json with frame_auroc_offline (the paper's), frame_auroc_online, pixel metrics on the
    centre-frame maps where masks exist, and a score-over-time plot per video."""
    length = scorer.detector.clip_length
    _, _, test = video.discover(layouts.resolve_root(cfg.data), cfg.data.val_fraction, cfg.train.seed)
    prepare = video.frame_preprocessor(cfg.data)
    psnr_range = scorer.online_psnr_range
    rows, traces = {}, []
    labels, offline, online, maps, masks, decided = [], [], [], [], [], []
    for v in test:
        frames = video.load_frames(v, prepare)
        if len(frames) < length:
            print(f"skipping test video {v.name}: {len(frames)} frames, shorter than a clip", flush=True)
            continue
        out = score_video(scorer, frames, length)
        index = scored_frames(len(frames), length)
        psnr = -out["score"]
        labels.append(v.labels[index])
        offline.append(per_video_minmax(psnr))
        online.append(_online(out))
        video_masks = video.load_masks(v, cfg.data.image_shape)
        if video_masks is not None:  # maps are kept only where pixel metrics need them (memory)
            maps.append(out["anomaly_map"])
            masks.append(video_masks[index])
        if "is_anomalous" in out:
            decided.append(out["is_anomalous"])
        rows[v.name] = {"frames": int(len(index)), "anomalous": int(labels[-1].sum())}
        traces.append((v.name, index, offline[-1], online[-1], labels[-1]))
    labels_all, offline_all, online_all = np.concatenate(labels), np.concatenate(offline), np.concatenate(online)
    summary = metrics.summary(labels_all, offline_all, fpr_limit=cfg.evaluate.pro_fpr_limit)
    if masks:  # pixel metrics over the scored frames of the videos that have masks
        all_masks, all_maps = np.concatenate(masks), np.concatenate(maps)
        summary.update(pixel_auroc=metrics.pixel_auroc(all_masks, all_maps),
                       aupro=metrics.aupro(all_masks, all_maps, cfg.evaluate.pro_fpr_limit))
    report = {"run": run.name, "detector": cfg.detector.name, "data_root": layouts.resolve_root(cfg.data),
              "caveats": list(scorer.detector.caveats), **summary,
              "frame_auroc_offline": summary["image_auroc"],
              "frame_auroc_online": metrics.image_auroc(labels_all, online_all) if psnr_range else float("nan"),
              "scored_frames": "clip s scores frame s + clip_length // 2; the first and last frames of each "
                               "video have no score (docs/methods/lntra.md#5e-4)",
              "per_video": rows, "per_defect": {}}
    if decided:
        report["calibrated_decision"] = {**scorer.calibration,
                                         **metrics.decision_rates(labels_all, np.concatenate(decided))}
    atomic_save(run.file("plots", "scores_over_time.png"), lambda p: plots.scores_over_time(traces, p))
    return report


VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".mpg", ".mpeg")


def read_video_frames(path) -> list[np.ndarray]:
    """Grey uint8 frames [H, W, 1] of a frame folder (sorted file order) or a video file (OpenCV)."""
    import os

    from keras_ad.data.images import list_images, read_image
    from keras_ad.errors import DataError

    if os.path.isdir(path):
        frames = [read_image(p, 1) for p in list_images(path)]
    elif path.lower().endswith(VIDEO_EXTENSIONS):
        try:
            import cv2
        except ImportError:
            raise DataError(f"{path}: reading video files needs OpenCV (pip install opencv-python-headless); "
                            f"or extract its frames into a folder and score that") from None
        capture, frames = cv2.VideoCapture(path), []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[..., None])
        capture.release()
    else:
        raise DataError(f"{path}: not a frame folder or a video file ({', '.join(VIDEO_EXTENSIONS)})")
    if not frames:
        raise DataError(f"{path}: no frames")
    return frames


def layout_labels(folder):
    """The frame labels of a test video folder <root>/testing/frames/<video> of the video layout, or None."""
    import os

    from keras_ad.errors import DataError

    parts = os.path.abspath(folder).split(os.sep)
    if len(parts) < 4 or parts[-3:-1] != ["testing", "frames"]:
        return None
    try:
        _, _, test = video.discover(os.sep.join(parts[:-3]), need_test=True)
    except DataError:
        return None
    return next((v.labels for v in test if v.name == parts[-1]), None)


def score_frames(scorer, frames, labels=None):
    """Per scored frame of one video: frame index, PSNR, offline and online anomaly scores, decision."""
    length = scorer.detector.clip_length
    if len(frames) < length:
        from keras_ad.errors import DataError

        raise DataError(f"{len(frames)} frames: a clip needs {length}; score a longer video")
    prepared = video.prepare_frames(frames, video.frame_preprocessor(scorer.cfg.data))
    out = score_video(scorer, prepared, length)
    index = scored_frames(len(frames), length)
    psnr = -out["score"]
    return {"frame": index, "psnr": psnr, "offline": per_video_minmax(psnr), "online": _online(out),
            "is_anomalous": out.get("is_anomalous"), "defect_area": out.get("defect_area"),
            "labels": None if labels is None else np.asarray(labels)[index]}
