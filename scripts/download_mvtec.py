#!/usr/bin/env python
"""Download (or unpack a local copy of) MVTec AD into the layout the configs expect.

    python scripts/download_mvtec.py --out data/mvtec                     # online
    python scripts/download_mvtec.py --out data/mvtec --archive ~/Downloads/mvtec_anomaly_detection.tar.xz

MVTec AD is licensed CC BY-NC-SA 4.0 by MVTec Software GmbH: read the terms at
https://www.mvtec.com/company/research/datasets/mvtec-ad before you download it.
Offline, download the archive on a machine with internet and pass it with --archive.
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request

URL = ("https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
       "420938113-1629952094/mvtec_anomaly_detection.tar.xz")
PAGE = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill",
              "screw", "tile", "toothbrush", "transistor", "wood", "zipper")


def download(url: str, dest: str):
    """Stream `url` to `dest` with a progress line; raises OSError when offline."""
    with urllib.request.urlopen(url, timeout=30) as response, open(dest, "wb") as f:
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        while chunk := response.read(1 << 20):
            f.write(chunk)
            done += len(chunk)
            share = f" ({100 * done / total:.0f} %)" if total else ""
            print(f"\rdownloaded {done / 2**20:.0f} MiB{share}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def extract_inside(tar: tarfile.TarFile, out: str):
    """Extract every member into `out`, none outside it: tarfile's "data" filter where Python has it
    (3.11.4 and later); before that (Debian 12's 3.11.2), only plain files and folders whose paths stay
    inside `out`, checked before anything is written."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(out, filter="data")
        return
    root = os.path.realpath(out)
    for member in tar.getmembers():
        target = os.path.realpath(os.path.join(root, member.name))
        if not (member.isfile() or member.isdir()) or os.path.commonpath([root, target]) != root:
            raise tarfile.TarError(f"{member.name}: a link, a device or a path outside {out}; nothing extracted")
    tar.extractall(out)


def unpack(archive: str, out: str) -> list[str]:
    """Extract the archive into `out` (only paths inside it) and return the categories found."""
    os.makedirs(out, exist_ok=True)
    with tarfile.open(archive) as tar:
        extract_inside(tar, out)
    return [c for c in CATEGORIES if os.path.isdir(os.path.join(out, c, "train", "good"))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data/mvtec", help="folder that will hold <category>/train, test, ...")
    parser.add_argument("--archive", help="a local mvtec_anomaly_detection.tar.xz (skips the download)")
    parser.add_argument("--url", default=URL, help="where to download the archive from")
    args = parser.parse_args(argv)

    archive = args.archive
    if archive and not os.path.isfile(archive):
        print(f"error: {archive}: no such file; pass the path of mvtec_anomaly_detection.tar.xz", file=sys.stderr)
        return 2
    tmp = None
    if not archive:
        tmp = tempfile.NamedTemporaryFile(suffix=".tar.xz", delete=False).name
        try:
            print(f"downloading MVTec AD (about 4.9 GB; licence CC BY-NC-SA 4.0, see {PAGE})", file=sys.stderr)
            download(args.url, tmp)
        except (urllib.error.URLError, OSError) as e:
            os.remove(tmp)
            print(f"error: cannot download MVTec AD ({getattr(e, 'reason', e)}). On a machine with internet, "
                  f"download mvtec_anomaly_detection.tar.xz from {PAGE}, then run: python "
                  f"scripts/download_mvtec.py --out {args.out} --archive /path/to/mvtec_anomaly_detection.tar.xz "
                  f"(or unpack it yourself so that {args.out}/<category>/train/good exists)", file=sys.stderr)
            return 2
        archive = tmp
    try:
        found = unpack(archive, args.out)
    except (tarfile.TarError, OSError) as e:
        print(f"error: {archive}: cannot unpack ({e})", file=sys.stderr)
        return 2
    finally:
        if tmp and os.path.exists(tmp):
            os.remove(tmp)
    if not found:
        print(f"error: {archive}: no MVTec category (<category>/train/good) inside", file=sys.stderr)
        return 2
    print(f"{len(found)} categories in {args.out}: {', '.join(found)}")
    print(f"train one with: keras-ad train --config configs/mvtec_{found[0]}.yaml --set data.root={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
