#!/usr/bin/env python3
"""keras_ad device scorer: run an exported scoring graph with numpy + LiteRT or ONNX Runtime only.

No TensorFlow, Keras or keras_ad: copy this file next to `metadata.json` and the `.tflite` or `.onnx`
file (`keras-ad export` puts it there) and run

    python3 keras_ad_device.py --model model_fp32.tflite images/ part.png --format csv --out scores.csv
    python3 keras_ad_device.py --model model.onnx --camera 0 --frames 100     # OpenCV needed
    python3 keras_ad_device.py --model model_fp32.tflite --check               # parity on this device

Needs numpy, Pillow (or OpenCV) to read image files, and `ai-edge-litert` for .tflite or `onnxruntime`
for .onnx. The numbers are those of `keras-ad score` on the host (export_report.json says how close).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
import time

import numpy as np

# Full scale of each high-depth PIL grey mode, fixed by the type (never by an image's own maximum, which
# once decoded a 16-bit value 200 to 200 and 300 to 1): 16-bit and 32-bit integers (PIL's "I" is how
# 16-bit TIFFs and PNGs of older tools come in), float images in [0, 1].
HIGH_DEPTH_PEAK = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I": 65535.0, "F": 1.0}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
OUTPUTS = ("score", "anomaly_map", "is_anomalous", "defect_area")
ONLINE_SCORE = "online_score"  # a video model's frame score against the normal clips' PSNR range
PARITY_FILE = "parity.npz"


def decode_image(path: str, channels: int) -> np.ndarray:
    """Decode an image file to uint8 [H, W, channels] exactly as keras_ad does on the host (Pillow)."""
    try:
        from PIL import Image
    except ImportError:
        return _decode_with_opencv(path, channels)
    with Image.open(path) as im:
        if im.mode in HIGH_DEPTH_PEAK:  # 16-bit / 32-bit / float grey: to 8 bits by the type's range
            arr = np.asarray(im, dtype=np.float64) * (255.0 / HIGH_DEPTH_PEAK[im.mode])
            im = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8))
        arr = np.asarray(im.convert("L" if channels == 1 else "RGB"))
    return arr[..., None] if channels == 1 else arr


def _decode_with_opencv(path, channels):
    import cv2

    image = cv2.imread(path, cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: cannot read image")
    return image[..., None] if channels == 1 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def list_images(folder: str) -> list[str]:
    """Image files directly inside `folder`, sorted by name."""
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if is_image_file(n))


def find_images(folder: str) -> list[str]:
    """Image files inside `folder` and its sub-folders (hidden ones skipped): each folder's own files by
    name, then its sub-folders by name."""
    found = []
    for root, folders, names in os.walk(folder):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        found += [os.path.join(root, n) for n in sorted(names) if is_image_file(n)]
    return found


def list_inputs(items) -> list[str]:
    """Image files named directly or found in the folders given (recursively), each file once."""
    paths, seen = [], set()
    for item in items:
        if os.path.isdir(item):
            found = find_images(item)
            if not found:
                raise ValueError(f"{item}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)}), nor do its "
                                 f"sub-folders")
        elif os.path.isfile(item):
            found = [item]
        else:
            raise ValueError(f"{item}: no such file or folder")
        for path in found:
            if os.path.realpath(path) not in seen:
                seen.add(os.path.realpath(path))
                paths.append(path)
    return paths


def overlay_names(paths) -> dict[str, str]:
    """{path: its overlay's file name}: the path relative to the inputs' common folder, `.png` added
    unless it is one (a.png and a.jpg stay apart), so nested folders keep their structure."""
    if not paths:
        return {}
    folders = [os.path.dirname(os.path.abspath(p)) for p in paths]
    common = os.path.commonpath(folders)
    names = {}
    for path in paths:
        relative = os.path.relpath(os.path.abspath(path), common)
        names[path] = relative if relative.lower().endswith(".png") else relative + ".png"
    return names


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_images(images, clip_length: int | None = None, channels: int | None = None) -> np.ndarray:
    """Images as the scoring graph takes them, or one ValueError saying what is wrong and how to fix it.

    uint8 (0..255) and floats in [0, 1] pass (as uint8 and float32); integers within 0..255 become uint8,
    uint16 is scaled by 1/65535; one image [H, W, C] (grey [H, W]) or one clip [T, H, W, C] is a batch of
    one. Refused: other ranks, dtypes and channel counts (`channels`: the only count accepted, else 1 or
    3), empty arrays, NaN or infinite values and floats outside [0, 1] (docs/robustness.md#inputs).
    """
    x = np.asarray(images)
    layout, rank = ("[N, T, H, W, C] clips", 5) if clip_length else ("[N, H, W, C] images", 4)
    if x.dtype == np.bool_ or x.dtype.kind not in "uif":
        raise ValueError(f"images of dtype {x.dtype}: expected uint8 (0..255) or float (0..1) {layout}")
    if not clip_length and x.ndim == 2:
        x = x[None, ..., None]  # one grey image
    elif x.ndim == rank - 1:
        x = x[None]  # one image or clip
    if x.ndim != rank:
        raise ValueError(f"images of shape {list(np.shape(images))}: expected {layout} (or one of them)")
    if clip_length and x.shape[1] != clip_length:
        raise ValueError(f"clips of {x.shape[1]} frames: the model scores clips of {clip_length}")
    allowed = (channels,) if channels else (1, 3)
    if x.shape[-1] not in allowed:
        fix = "; drop an alpha channel with images[..., :3]" if x.shape[-1] == 4 else ""
        raise ValueError(f"images with {x.shape[-1]} channels (shape {list(x.shape)}): the model takes "
                         f"{' or '.join(map(str, allowed))} (channels last){fix}")
    if x.size == 0:
        raise ValueError(f"images of shape {list(x.shape)}: nothing to score")
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise ValueError("images hold NaN or infinite values")
        low, high = float(x.min()), float(x.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(f"float images span {low:g}..{high:g}: expected [0, 1] (divide 0..255 values by 255, "
                             f"or pass uint8)")
        return x.astype(np.float32, copy=False)
    if x.dtype == np.uint16:
        return (x / 65535.0).astype(np.float32)
    low, high = int(x.min()), int(x.max())
    if low < 0 or high > 255:
        raise ValueError(f"{x.dtype} images span {low}..{high}: expected 0..255 (uint8) or uint16")
    return x.astype(np.uint8)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """check_images' output as the uint8 an exported graph takes (floats rounded to the nearest level)."""
    return images if images.dtype == np.uint8 else np.round(images * 255.0).astype(np.uint8)


def verify_artefact(model_path: str, metadata: dict, metadata_path: str) -> None:
    """Refuse a model file whose SHA-256 is not the one metadata.json recorded at export: another
    artefact copied over it (int8 over fp32) would score with the wrong threshold and tolerance."""
    name = os.path.basename(model_path)
    recorded = metadata.get("artefacts", {}).get(name, {}).get("sha256")
    if recorded is None:
        raise ValueError(f"{model_path}: {metadata_path} records no artefact named {name}; pass the "
                         f"metadata.json exported with it, or --no-verify")
    if sha256(model_path) != recorded:
        raise ValueError(f"{model_path}: SHA-256 differs from the one in {metadata_path} (another or a modified "
                         f"model); re-export, or pass --no-verify if you re-quantised it on purpose")


# ---------------------------------------------------------------- overlays (docs/report.md#overlays)
# The heat colours, inferno's at five stops (numpy only: the device has no Matplotlib).
HEAT_STOPS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float64)
TRUTH_COLOR = (0, 230, 0)  # ground truth outline
PREDICTED_COLOR = (0, 190, 255)  # predicted region outline
HEAT_OPACITY = 0.7
COLOR_BAR = 12  # pixels, right of the image


def heat_colors(values) -> np.ndarray:
    """float [...] in [0, 1] -> uint8 [..., 3] on HEAT_STOPS."""
    x = np.clip(np.asarray(values, np.float64), 0, 1) * (len(HEAT_STOPS) - 1)
    low = np.minimum(x.astype(int), len(HEAT_STOPS) - 2)
    f = (x - low)[..., None]
    return np.round(HEAT_STOPS[low] * (1 - f) + HEAT_STOPS[low + 1] * f).astype(np.uint8)


def _resize(array, height, width, nearest=False) -> np.ndarray:
    from PIL import Image

    if array.shape == (height, width):
        return array
    if nearest:
        return np.asarray(Image.fromarray(array.astype(np.uint8)).resize((width, height), Image.NEAREST)) > 0
    return np.asarray(Image.fromarray(array.astype(np.float32), "F").resize((width, height), Image.BILINEAR))


def outline(mask, thickness=1) -> np.ndarray:
    """The pixels of a bool mask [H, W] that touch its outside (4-neighbours), `thickness` pixels wide."""
    edge = np.zeros_like(mask)
    inside = mask.copy()
    for _ in range(thickness):
        padded = np.pad(inside, 1)
        interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & inside
        edge |= inside & ~interior
        inside = interior
    return edge


def crop_center(image, size: int | None) -> np.ndarray:
    """The central size x size pixels of [H, W, ...] (all of a side shorter than `size`), as the graph crops."""
    if not size:
        return image
    top, left = ((side - min(side, size)) // 2 for side in image.shape[:2])
    return image[top:top + min(image.shape[0], size), left:left + min(image.shape[1], size)]


def overlay(image, anomaly_map, threshold: float, predicted=None, truth=None) -> np.ndarray:
    """uint8 [H, W + COLOR_BAR, 3]: the anomaly map over the image at the image's own size (the graph's
    central crop of it, with data.center_crop: `crop_center` first).

    The colour runs from 0 to twice the calibrated threshold, so the threshold is mid-scale (the tick on
    the colour bar); the map is transparent up to half the threshold and HEAT_OPACITY opaque from the
    threshold up, so a good image stays readable. Predicted regions (`predicted`, bool at the map's size)
    and the ground truth (`truth`) are outlined.
    """
    image = np.asarray(image)
    if image.ndim == 2 or image.shape[-1] == 1:
        image = np.repeat(image.reshape(image.shape[:2])[..., None], 3, -1)
    height, width = image.shape[:2]
    scaled = _resize(np.asarray(anomaly_map, np.float32), height, width) / (2 * max(float(threshold), 1e-12))
    alpha = (HEAT_OPACITY * np.clip(4 * scaled - 1, 0, 1))[..., None]
    out = image.astype(np.float64) * (1 - alpha) + heat_colors(scaled) * alpha
    thickness = max(1, round(min(height, width) / 200))
    for mask, color in ((truth, TRUTH_COLOR), (predicted, PREDICTED_COLOR)):
        if mask is not None and np.any(mask):
            out[outline(_resize(np.asarray(mask, bool), height, width, nearest=True), thickness)] = color
    bar = heat_colors(np.linspace(1, 0, height))[:, None].repeat(COLOR_BAR, 1).astype(np.float64)
    middle = height // 2  # the threshold's tick
    bar[max(0, middle - thickness // 2):middle + (thickness + 1) // 2, :COLOR_BAR // 2] = 255
    return np.concatenate([np.round(out), bar], 1).astype(np.uint8)


def save_overlay(path, image, anomaly_map, threshold, predicted=None, truth=None):
    """`overlay` as a PNG file."""
    from PIL import Image

    Image.fromarray(overlay(image, anomaly_map, threshold, predicted, truth)).save(path, format="png")


def save_overlays(folder, paths, maps, threshold, channels, center_crop=None, truths=None,
                  outline_predicted=True) -> dict[str, str]:
    """One overlay per image file under `folder`, named by `overlay_names` (returned): `maps` are the
    anomaly maps of `paths` in order, predicted regions the map pixels over `threshold` (not outlined
    with `outline_predicted` False), `truths` the ground-truth masks or None per image."""
    names = overlay_names(paths)
    for i, (path, name) in enumerate(names.items()):
        target = os.path.join(folder, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = os.path.join(os.path.dirname(target), f".tmp-{os.getpid()}-{os.path.basename(target)}")
        image = crop_center(decode_image(path, channels), center_crop)
        predicted = maps[i] > threshold if outline_predicted else None
        save_overlay(tmp, image, maps[i], threshold, predicted, None if truths is None else truths[i])
        os.replace(tmp, target)  # a killed run leaves no half-written overlay under the final name
    return names


class DeviceScorer:
    """An exported scoring graph behind one call: uint8 [N, H, W, C] -> numpy `score`, `anomaly_map`, ...

    `threshold` moves the pixel threshold on the map (default: the calibrated one in metadata.json).
    """

    def __init__(self, model_path: str, metadata_path: str | None = None, num_threads: int | None = None,
                 onnx_providers=("CPUExecutionProvider",), verify: bool = True):
        self.model_path = model_path
        metadata_path = metadata_path or os.path.join(os.path.dirname(os.path.abspath(model_path)), "metadata.json")
        with open(metadata_path) as f:
            self.metadata = json.load(f)
        if verify:
            verify_artefact(model_path, self.metadata, metadata_path)
        self.channels = int(self.metadata["input"]["channels"])
        self.clip_length = self.metadata["input"].get("clip_length")  # a video model scores clips [N, T, H, W, C]
        artefact = self.metadata.get("artefacts", {}).get(os.path.basename(model_path), {})
        # a quantised model carries its own threshold, calibrated on its own validation maps
        self.default_threshold = float(artefact.get("pixel_threshold", self.metadata["decision"]["pixel_threshold"]))
        if not model_path.endswith((".tflite", ".onnx")):
            raise ValueError(f"{model_path}: expected a .tflite or .onnx file")
        try:
            self._open_runtime(model_path, num_threads, onnx_providers)
        except Exception as e:  # each runtime has its own error types for a file that is not its model
            message = " ".join(str(e).split()) or type(e).__name__
            raise ValueError(f"{model_path}: the runtime cannot load it ({message[:200]}); copy the exported "
                             f"file again (metadata.json records its SHA-256)") from None

    def _open_runtime(self, model_path, num_threads, onnx_providers):
        if model_path.endswith(".tflite"):
            from ai_edge_litert.interpreter import Interpreter

            self._interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
            self._runner = self._interpreter.get_signature_runner("score_with_threshold")
            self._run = self._run_tflite
        else:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3  # the optional threshold input is an initializer by design
            options.intra_op_num_threads = num_threads or 0  # 0: the runtime's default
            self._session = onnxruntime.InferenceSession(model_path, options, providers=list(onnx_providers))
            self._names = [o.name for o in self._session.get_outputs()]
            self._run = self._run_onnx

    def _run_tflite(self, images, threshold):
        return self._runner(images=images, threshold=threshold)

    def _run_onnx(self, images, threshold):
        values = self._session.run(None, {"images": images, "threshold": threshold})
        return dict(zip(self._names, values))

    def __call__(self, images, threshold: float | None = None) -> dict:
        if threshold is not None and not np.isfinite(threshold):
            raise ValueError(f"threshold {threshold}: expected a finite number (the calibrated one is "
                             f"{self.default_threshold:g})")
        images = np.ascontiguousarray(to_uint8(check_images(images, self.clip_length, self.channels)))
        t = np.asarray([self.default_threshold if threshold is None else threshold], np.float32).reshape(1)
        out = self._run(images, t)
        return {k: np.asarray(out[k]) for k in (*OUTPUTS, ONLINE_SCORE) if k in out}

    def score_files(self, paths, threshold=None) -> tuple[list[str], dict, dict]:
        """Score image files (any mix of sizes): (the paths scored, their outputs in that order, {path:
        why it could not be read} for the others), so one corrupt file does not stop the rest."""
        images, kept, failed = [], [], {}
        for path in paths:
            try:
                images.append(decode_image(path, self.channels))
                kept.append(path)
            except (OSError, ValueError, SyntaxError) as e:  # PIL: UnidentifiedImageError is an OSError
                failed[path] = f"unreadable: {' '.join(str(e).split()) or type(e).__name__}"
        out = score_in_batches(lambda batch: self(batch, threshold), images) if images else {}
        return kept, out, failed


def score_in_batches(score_fn, images, batch_size: int = 8) -> dict:
    """Run `score_fn(uint8 [n, H, W, C]) -> dict` over images of mixed sizes, batching equal sizes.

    Returns numpy arrays in the order of `images`.
    """
    out = {}
    by_shape = {}
    for i, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(i)
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            part = indices[start:start + batch_size]
            for name, value in score_fn(np.stack([images[i] for i in part])).items():
                value = np.asarray(value)
                if name not in out:
                    out[name] = np.zeros((len(images), *value.shape[1:]), value.dtype)
                out[name][part] = value
    return out


def rows(paths, out, failed=None, overlays=None) -> list[dict]:
    """One record per path, in the order given: the scored ones (`out` in the order of the scored paths)
    with status "ok" and their overlay file (`overlays`: {path: name}) if any, the `failed` ones ({path:
    reason}) with empty outputs and the reason as status."""
    failed, overlays = failed or {}, overlays or {}
    scored = iter(range(len(out.get("score", ()))))
    records = []
    for path in paths:
        if path in failed:
            records.append({"path": path, "score": None, "is_anomalous": None, "defect_area": None,
                            "status": failed[path], "overlay": None})
            continue
        i = next(scored)
        records.append({"path": path, "score": float(out["score"][i]), "is_anomalous": int(out["is_anomalous"][i]),
                        "defect_area": int(out["defect_area"][i]), "status": "ok", "overlay": overlays.get(path)})
    return records


def to_csv(records) -> str:
    """The same columns and number format as `keras-ad score`'s scores.csv; an unreadable file's row has
    empty outputs and its reason in `status`; `overlay` is the overlay file under the overlays folder."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "score", "is_anomalous", "defect_area", "status", "overlay"])
    for r in records:
        score = "" if r["score"] is None else f"{r['score']:.8g}"
        writer.writerow([r["path"], score, _blank(r["is_anomalous"]), _blank(r["defect_area"]), r["status"],
                         _blank(r.get("overlay"))])
    return buffer.getvalue()


def _blank(value):
    return "" if value is None else value


def report_failures(records) -> int:
    """Name every input that could not be scored on stderr; the exit code: 1 if any, else 0."""
    failed = [r for r in records if r["status"] != "ok"]
    for r in failed:
        print(f"error: {r['path']}: {r['status']}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(records)} inputs could not be scored (status column); exit code 1",
              file=sys.stderr)
    return 1 if failed else 0


def within_tolerance(name: str, value, expected, tolerance: dict) -> tuple[bool, float]:
    """(|value - expected| <= atol + rtol * |expected| everywhere, max |value - expected|).

    rtol is `map_rtol` for `anomaly_map` (SSIM maps amplify 1e-6 differences of the reconstruction in
    flat windows by up to 2 / C2 times the local contrast) and `score_rtol` for `score` (float32 sums
    over thousands of pixels, as AnoGAN's score, differ in their last bits between runtimes).
    """
    expected = np.asarray(expected, np.float64)
    diff = np.abs(np.asarray(value, np.float64) - expected)
    rtol = tolerance.get("map_rtol" if name == "anomaly_map" else "score_rtol", 0.0)
    return bool(np.all(diff <= tolerance["atol"] + rtol * np.abs(expected))), float(diff.max(initial=0.0))


def parity_key(variant: str, output: str) -> str:
    """Name of an expected output in parity.npz: `score`, or `edge.score` for another scoring variant."""
    return output if variant == "default" else f"{variant}.{output}"


def check_parity(scorer: DeviceScorer, parity_path: str) -> list[str]:
    """Compare with the Keras outputs stored at export time; returns the outputs that drifted."""
    stored = np.load(parity_path)
    artefact = scorer.metadata["artefacts"][os.path.basename(scorer.model_path)]
    tolerance, variant = artefact["tolerance"], artefact.get("variant", "default")
    out = scorer(stored["images"])
    drifted = []
    for name in ("score", "anomaly_map"):
        ok, diff = within_tolerance(name, out[name], stored[parity_key(variant, name)], tolerance)
        rtol = tolerance.get("map_rtol" if name == "anomaly_map" else "score_rtol", 0)
        print(f"{name:12s} max |device - keras| = {diff:.3g} (atol {tolerance['atol']:g}, rtol {rtol:g}) "
              f"{'ok' if ok else 'DRIFTED'}")
        if not ok:
            drifted.append(name)
    # decisions: a quantised model's tolerance on the score can be close to its threshold, so compare
    # the calls too, against the agreement measured at export on the same images (one may flip)
    same = float(np.mean(out["is_anomalous"] == stored[parity_key(variant, "is_anomalous")]))
    at_export = artefact.get("check_decision_agreement")
    ok = at_export is None or same >= at_export - 1.0 / len(stored["images"]) - 1e-9
    print(f"{'decisions':12s} {same:.1%} the same as Keras on {len(stored['images'])} images"
          + (f" (at export {at_export:.1%})" if at_export is not None else "") + f" {'ok' if ok else 'DRIFTED'}")
    if not ok:
        drifted.append("is_anomalous")
    return drifted


def _camera_loop(scorer, camera, frames, threshold):
    import cv2

    capture = cv2.VideoCapture(int(camera) if str(camera).isdigit() else camera)
    if not capture.isOpened():
        raise ValueError(f"camera {camera}: cannot open")
    count, recent = 0, []
    length = scorer.clip_length or 1
    while frames <= 0 or count < frames:
        ok, frame = capture.read()
        if not ok:
            break
        if scorer.channels == 1:
            image = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[..., None]
        else:
            image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        recent = (recent + [image])[-length:]  # a video model scores the centre of the last T frames
        count += 1
        if len(recent) < length:
            continue
        out = scorer(np.stack(recent)[None] if scorer.clip_length else image, threshold)
        print(json.dumps({"frame": count - length + length // 2 if scorer.clip_length else count - 1,
                          "score": float(out["score"][0]), "is_anomalous": bool(out["is_anomalous"][0]),
                          "defect_area": int(out["defect_area"][0]),
                          **({ONLINE_SCORE: float(out[ONLINE_SCORE][0])} if ONLINE_SCORE in out else {})}), flush=True)
    capture.release()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Score images with an exported keras_ad model (no TensorFlow).")
    parser.add_argument("inputs", nargs="*", help="image files or folders")
    parser.add_argument("--model", required=True, help="model .tflite or .onnx file")
    parser.add_argument("--metadata", help="metadata.json (default: next to the model)")
    parser.add_argument("--threshold", type=float, help="pixel threshold (default: the calibrated one)")
    parser.add_argument("--format", choices=("json", "csv"), default="json", help="output format")
    parser.add_argument("--out", help="write results to this file instead of stdout (must not exist)")
    parser.add_argument("--camera", help="score frames of this OpenCV camera index or stream URL")
    parser.add_argument("--frames", type=int, default=0, help="with --camera: stop after N frames (0: never)")
    parser.add_argument("--save-overlays", metavar="DIR",
                        help="write each image's overlay (map over the image, predicted regions outlined) under "
                             "DIR, a new or empty folder; the CSV's overlay column names them")
    parser.add_argument("--check", action="store_true", help=f"compare with the Keras outputs in {PARITY_FILE}")
    parser.add_argument("--no-verify", action="store_true",
                        help="score a model whose SHA-256 differs from metadata.json's (re-quantised on purpose)")
    parser.add_argument("--threads", type=int, help="CPU threads for the runtime (default: its own choice)")
    parser.add_argument("--timing", action="store_true", help="print the scoring time per image to stderr")
    parser.add_argument("--onnx-providers", default="CPUExecutionProvider",
                        help="comma-separated ONNX Runtime execution providers, e.g. "
                             "TensorrtExecutionProvider,CUDAExecutionProvider on a Jetson")
    args = parser.parse_args(argv)
    try:
        if args.threshold is not None and not np.isfinite(args.threshold):
            raise ValueError(f"--threshold {args.threshold}: expected a finite number")
        if not os.path.isfile(args.model):
            raise ValueError(f"{args.model}: no such model file")
        if args.out and os.path.exists(args.out):
            raise ValueError(f"{args.out}: exists; choose another --out")
        if args.save_overlays and os.path.exists(args.save_overlays) and (
                not os.path.isdir(args.save_overlays) or os.listdir(args.save_overlays)):
            raise ValueError(f"--save-overlays {args.save_overlays}: exists and is not an empty folder; choose "
                             f"another (nothing is overwritten)")
        scorer = DeviceScorer(args.model, args.metadata, args.threads, args.onnx_providers.split(","),
                              verify=not args.no_verify)
        if args.check:
            parity = os.path.join(os.path.dirname(os.path.abspath(args.model)), PARITY_FILE)
            drifted = check_parity(scorer, parity)
            print("parity: " + (f"FAILED ({', '.join(drifted)})" if drifted else "ok"))
            return 1 if drifted else 0
        if args.camera is not None:
            _camera_loop(scorer, args.camera, args.frames, args.threshold)
            return 0
        if not args.inputs:
            raise ValueError("give image files or folders, --camera or --check")
        paths = list_inputs(args.inputs)
        started = time.perf_counter()
        kept, out, failed = scorer.score_files(paths, args.threshold)
        names = {}
        if args.save_overlays and kept:
            threshold = scorer.default_threshold if args.threshold is None else args.threshold
            names = save_overlays(args.save_overlays, kept, out["anomaly_map"], threshold, scorer.channels,
                                  scorer.metadata["input"].get("center_crop"))
        records = rows(paths, out, failed, names)
        if args.timing:
            elapsed = time.perf_counter() - started
            print(f"scored {len(paths)} images in {elapsed:.2f} s ({1000 * elapsed / len(paths):.1f} ms/image, "
                  f"decoding included)", file=sys.stderr)
        text = to_csv(records) if args.format == "csv" else json.dumps(records, indent=1) + "\n"
        if args.out:
            with open(args.out, "x") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
        return report_failures(records)
    except (ValueError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
