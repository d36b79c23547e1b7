#!/usr/bin/env python3
"""Run the device scorer in an emulated arm64 Debian (qemu-user) and compare it with the host.

    sudo .venv/bin/python scripts/check_aarch64.py --rootfs /var/cache/keras_ad-arm64 \\
        --run runs/demo --export exports/demo --images ~/.cache/keras_ad/synthetic-v1/object/test/scratch

What it proves: the aarch64 wheels of exports/requirements.txt (numpy, Pillow, ai-edge-litert,
onnxruntime) load the exported .tflite and .onnx files and give the numbers `keras-ad score` gives on
the host, within each artefact's tolerance from metadata.json, in an arm64 Debian user land like a
Jetson's. What it does not: GPU, CUDA or TensorRT (none under emulation) and the device's speed (the
printed latency is qemu's, typically 5-20x slower than native).

Needs root on a Debian/Ubuntu x86-64 host: installs qemu-user-static, binfmt-support and debootstrap if
missing, builds the root file system once into --rootfs (reused afterwards) and installs the device
requirements into a virtual environment inside it. Not part of the test suite (root, minutes).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST_PACKAGES = {"qemu-aarch64-static": "qemu-user-static", "update-binfmts": "binfmt-support",
                 "debootstrap": "debootstrap"}
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
VENV = "/opt/keras_ad_device"


def compare_scores(reference_csv: str, device_csv: str, atol: float) -> dict:
    """Compare two scores.csv texts row by row (matched by file name, in order).

    Returns max |score difference|, the rows whose decision or defect area differ, and `passed`.
    """
    reference = list(csv.DictReader(io.StringIO(reference_csv)))
    device = list(csv.DictReader(io.StringIO(device_csv)))
    names = lambda rows: [os.path.basename(r["path"]) for r in rows]  # noqa: E731
    if names(reference) != names(device):
        raise ValueError(f"the device scored other files than the host: {names(device)[:3]} vs {names(reference)[:3]}")
    diffs = [abs(float(a["score"]) - float(b["score"])) for a, b in zip(reference, device)]
    changed = [os.path.basename(a["path"]) for a, b in zip(reference, device)
               if (a["is_anomalous"], a["defect_area"]) != (b["is_anomalous"], b["defect_area"])]
    max_diff = max(diffs, default=0.0)
    return {"n_images": len(reference), "max_score_diff": max_diff, "decisions_changed": changed,
            "passed": max_diff <= atol}


def run(command, **kwargs):
    print("+ " + " ".join(map(str, command)), flush=True)
    return subprocess.run([str(c) for c in command], check=True, **kwargs)


MIN_QEMU = (8, 0)  # measured: Debian 12's qemu 7.2 crashes importing onnxruntime and creating a LiteRT
#                   interpreter; Debian 13's 10.0.13 runs both
BINFMT = "/proc/sys/fs/binfmt_misc"
AARCH64_MAGIC = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
AARCH64_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"


def qemu_version(path) -> tuple:
    words = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout.split()
    return tuple(int(part) for part in words[words.index("version") + 1].split(".")[:2])


def ensure_host_tools(qemu=None):
    """qemu-user + binfmt_misc (with `qemu`, a newer static qemu-aarch64, registered instead), debootstrap."""
    missing = [package for tool, package in HOST_PACKAGES.items() if shutil.which(tool) is None]
    if missing:
        run(["apt-get", "install", "-y", "-q", *missing])
    if not os.path.exists(f"{BINFMT}/register"):
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", BINFMT])
    emulator = qemu or shutil.which("qemu-aarch64-static")
    if qemu_version(emulator) < MIN_QEMU:
        raise ValueError(f"{emulator} is qemu {'.'.join(map(str, qemu_version(emulator)))}, which crashes in "
                         f"onnxruntime and LiteRT; get qemu >= {MIN_QEMU[0]} (e.g. Debian 13's qemu-user package: "
                         "apt-get download qemu-user && dpkg-deb -x qemu-user_*.deb q) and pass --qemu "
                         "q/usr/bin/qemu-aarch64")
    if qemu:
        if os.path.exists(f"{BINFMT}/qemu-aarch64"):
            with open(f"{BINFMT}/qemu-aarch64", "w") as f:
                f.write("-1")  # remove the distribution's entry
        with open(f"{BINFMT}/register", "w") as f:  # F: the kernel opens it now, so it works inside the chroot
            f.write(f":qemu-aarch64:M::{AARCH64_MAGIC}:{AARCH64_MASK}:{os.path.abspath(qemu)}:F")
    elif not os.path.exists(f"{BINFMT}/qemu-aarch64"):
        run(["update-binfmts", "--enable", "qemu-aarch64"])


def ensure_rootfs(rootfs):
    """arm64 Debian with python3 and a venv holding exports/requirements.txt (built once, then reused)."""
    if not os.path.exists(os.path.join(rootfs, "usr", "bin", "python3")):
        run(["debootstrap", "--arch=arm64", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
             SUITE, rootfs, MIRROR])
    shutil.copyfile("/etc/resolv.conf", os.path.join(rootfs, "etc", "resolv.conf"))
    if not os.path.exists(os.path.join(rootfs, VENV.lstrip("/"), "bin", "python")):
        run(["chroot", rootfs, "python3", "-m", "venv", VENV])
    requirements = os.path.join(REPO, "exports", "requirements.txt")
    shutil.copyfile(requirements, os.path.join(rootfs, "tmp", "requirements.txt"))
    # The host's pip downloads the aarch64 wheels (its index, proxy and certificates apply); the arm64
    # pip installs them offline.
    version = subprocess.run(["chroot", rootfs, "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    platforms = [f"--platform=manylinux_2_{minor}_aarch64" for minor in (17, 27, 28, 31, 34, 35, 36)]
    run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", *platforms,
         "--platform=manylinux2014_aarch64",
         f"--python-version={version}", "-d", os.path.join(rootfs, "tmp", "wheels"), "-r", requirements])
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}  # host pip settings stay out
    run(["chroot", rootfs, f"{VENV}/bin/pip", "install", "-q", "--no-index", "--find-links=/tmp/wheels",
         "-r", "/tmp/requirements.txt"], env=clean_env)


def stage(rootfs, export_dir, images):
    work = os.path.join(rootfs, "work")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(export_dir, os.path.join(work, "export"), ignore=shutil.ignore_patterns("saved_model"))
    shutil.copytree(images, os.path.join(work, "images"))
    os.makedirs(os.path.join(work, "out"))


def host_reference(run_dir, images, out_dir):
    run([os.path.join(os.path.dirname(sys.executable), "keras-ad"), "score", "--run", run_dir, images,
         "--out", out_dir, "--no-overlays"], stdout=subprocess.DEVNULL)
    with open(os.path.join(out_dir, "scores.csv")) as f:
        return f.read()


def emulated(rootfs, model):
    """(scores.csv text, the scorer's timing line, the --check output) of one model in the arm64 root."""
    scorer = ["chroot", rootfs, f"{VENV}/bin/python", "/work/export/keras_ad_device.py",
              "--model", f"/work/export/{model}"]
    scored = run([*scorer, "/work/images", "--format", "csv", "--out", f"/work/out/{model}.csv", "--timing"],
                 capture_output=True, text=True)
    check = subprocess.run([*scorer, "--check"], capture_output=True, text=True)
    with open(os.path.join(rootfs, "work", "out", f"{model}.csv")) as f:
        return f.read(), scored.stderr.strip().splitlines()[-1], check


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rootfs", required=True, help="folder for the arm64 root file system (kept and reused)")
    parser.add_argument("--run", required=True, help="the trained run the export came from")
    parser.add_argument("--export", required=True, help="folder written by keras-ad export")
    parser.add_argument("--images", required=True, help="folder of images to score on both sides")
    parser.add_argument("--qemu", help="a static qemu-aarch64 >= 8 to register instead of the distribution's")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("error: needs root (apt-get, binfmt_misc, debootstrap, chroot); run with sudo", file=sys.stderr)
        return 2
    for path in (args.run, args.export, args.images):
        if not os.path.isdir(path):
            print(f"error: {path}: no such folder", file=sys.stderr)
            return 2
    with open(os.path.join(args.export, "metadata.json")) as f:
        metadata = json.load(f)
    models = [m for m in ("model_fp32.tflite", "model_int8.tflite", "model.onnx")
              if os.path.isfile(os.path.join(args.export, m))]

    started = time.time()
    try:
        ensure_host_tools(args.qemu)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ensure_rootfs(args.rootfs)
    prepared = time.time()
    stage(args.rootfs, args.export, args.images)
    reference = host_reference(args.run, args.images, tempfile.mkdtemp(prefix="keras_ad_host_"))
    failed = []
    for model in models:
        device_csv, timing, check = emulated(args.rootfs, model)
        atol = metadata["artefacts"][model]["tolerance"]["atol"]
        result = compare_scores(reference, device_csv, atol)
        maps = "maps ok" if check.returncode == 0 else "maps DRIFTED"
        print(f"{model:18s} arm64 vs host keras-ad score: max |score diff| {result['max_score_diff']:.3g} "
              f"(tolerance {atol:.3g}), decisions changed on {len(result['decisions_changed'])} of "
              f"{result['n_images']} images; --check: {maps}; {timing}", flush=True)
        print("    " + "\n    ".join(check.stdout.strip().splitlines()), flush=True)
        if not result["passed"] or check.returncode != 0:
            failed.append(model)
    print(f"root file system ready in {prepared - started:.0f} s; comparison in {time.time() - prepared:.0f} s")
    if failed:
        print(f"error: {', '.join(failed)} differ beyond tolerance under arm64", file=sys.stderr)
        return 1
    print("aarch64 check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
