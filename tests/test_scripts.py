"""The MVTec AD downloader: unpacks a local archive, and offline says how to supply the file."""

import os
import subprocess
import sys
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "download_mvtec.py")


def test_unpacks_a_local_archive(tiny_data, tmp_path):
    archive = tmp_path / "mvtec_anomaly_detection.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(tiny_data, arcname="capsule")
    out = tmp_path / "mvtec"
    proc = subprocess.run([sys.executable, SCRIPT, "--out", str(out), "--archive", str(archive)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "1 categories" in proc.stdout and "mvtec_capsule.yaml" in proc.stdout
    assert (out / "capsule" / "ground_truth" / "hole").is_dir()


def test_offline_download_says_where_to_get_the_data(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path / "m"), "--url", "http://127.0.0.1:9/x.tar.xz"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "--archive" in error[0] and "mvtec.com" in error[0]
    assert not (tmp_path / "m").exists()
