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
        if im.mode in ("I;16", "I;16B", "I", "F"):  # 16-bit / float grey: scale to 8 bits
            arr = np.asarray(im, dtype=np.float64)
            peak = 65535.0 if arr.max() > 255 else 255.0
            im = Image.fromarray(np.clip(arr * 255.0 / peak, 0, 255).astype(np.uint8))
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


def list_inputs(items) -> list[str]:
    """Image files named directly or found (sorted, non-recursive) in the folders given."""
    paths = []
    for item in items:
        if os.path.isdir(item):
            found = list_images(item)
            if not found:
                raise ValueError(f"{item}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            paths += found
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise ValueError(f"{item}: no such file or folder")
    return paths


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DeviceScorer:
    """An exported scoring graph behind one call: uint8 [N, H, W, C] -> numpy `score`, `anomaly_map`, ...

    `threshold` moves the pixel threshold on the map (default: the calibrated one in metadata.json).
    """

    def __init__(self, model_path: str, metadata_path: str | None = None, num_threads: int | None = None,
                 onnx_providers=("CPUExecutionProvider",)):
        self.model_path = model_path
        metadata_path = metadata_path or os.path.join(os.path.dirname(os.path.abspath(model_path)), "metadata.json")
        with open(metadata_path) as f:
            self.metadata = json.load(f)
        self.channels = int(self.metadata["input"]["channels"])
        self.clip_length = self.metadata["input"].get("clip_length")  # a video model scores clips [N, T, H, W, C]
        artefact = self.metadata.get("artefacts", {}).get(os.path.basename(model_path), {})
        # a quantised model carries its own threshold, calibrated on its own validation maps
        self.default_threshold = float(artefact.get("pixel_threshold", self.metadata["decision"]["pixel_threshold"]))
        if model_path.endswith(".tflite"):
            from ai_edge_litert.interpreter import Interpreter

            self._interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
            self._runner = self._interpreter.get_signature_runner("score_with_threshold")
            self._run = self._run_tflite
        elif model_path.endswith(".onnx"):
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3  # the optional threshold input is an initializer by design
            options.intra_op_num_threads = num_threads or 0  # 0: the runtime's default
            self._session = onnxruntime.InferenceSession(model_path, options, providers=list(onnx_providers))
            self._names = [o.name for o in self._session.get_outputs()]
            self._run = self._run_onnx
        else:
            raise ValueError(f"{model_path}: expected a .tflite or .onnx file")

    def _run_tflite(self, images, threshold):
        return self._runner(images=images, threshold=threshold)

    def _run_onnx(self, images, threshold):
        values = self._session.run(None, {"images": images, "threshold": threshold})
        return dict(zip(self._names, values))

    def __call__(self, images, threshold: float | None = None) -> dict:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if images.ndim == 3:
            images = images[None]
        t = np.asarray([self.default_threshold if threshold is None else threshold], np.float32).reshape(1)
        out = self._run(images, t)
        return {k: np.asarray(out[k]) for k in (*OUTPUTS, ONLINE_SCORE) if k in out}

    def score_files(self, paths, threshold=None) -> dict:
        """Score image files (any mix of sizes); outputs in the order of `paths`."""
        images = [decode_image(p, self.channels) for p in paths]
        return score_in_batches(lambda batch: self(batch, threshold), images)


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


def rows(paths, out) -> list[dict]:
    return [{"path": p, "score": float(out["score"][i]), "is_anomalous": int(out["is_anomalous"][i]),
             "defect_area": int(out["defect_area"][i])} for i, p in enumerate(paths)]


def to_csv(records) -> str:
    """The same columns and number format as `keras-ad score`'s scores.csv."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "score", "is_anomalous", "defect_area"])
    for r in records:
        writer.writerow([r["path"], f"{r['score']:.8g}", r["is_anomalous"], r["defect_area"]])
    return buffer.getvalue()


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
    parser.add_argument("--check", action="store_true", help=f"compare with the Keras outputs in {PARITY_FILE}")
    parser.add_argument("--threads", type=int, help="CPU threads for the runtime (default: its own choice)")
    parser.add_argument("--timing", action="store_true", help="print the scoring time per image to stderr")
    parser.add_argument("--onnx-providers", default="CPUExecutionProvider",
                        help="comma-separated ONNX Runtime execution providers, e.g. "
                             "TensorrtExecutionProvider,CUDAExecutionProvider on a Jetson")
    args = parser.parse_args(argv)
    try:
        if not os.path.isfile(args.model):
            raise ValueError(f"{args.model}: no such model file")
        if args.out and os.path.exists(args.out):
            raise ValueError(f"{args.out}: exists; choose another --out")
        scorer = DeviceScorer(args.model, args.metadata, args.threads, args.onnx_providers.split(","))
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
        records = rows(paths, scorer.score_files(paths, args.threshold))
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
        return 0
    except (ValueError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
