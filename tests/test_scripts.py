"""The scripts: the MVTec AD downloader (local archive; offline says how to supply the file) and the export benchmark."""

import importlib.util
import os
import subprocess
import sys
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(REPO, "scripts")
SCRIPT = os.path.join(SCRIPTS, "download_mvtec.py")


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


def test_bench_export_times_every_runtime(trained_run, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_export", os.path.join(SCRIPTS, "bench_export.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.md"
    assert bench.main(["--run", str(trained_run), "--out", str(out), "--repeats", "2", "--min-seconds", "0"]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "runtime" not in line]
    names = [row.split("|")[1].strip() for row in rows]
    assert names == ["Keras eager", "tf.function", "SavedModel", "TFLite fp32", "TFLite fp16", "TFLite dynamic",
                     "TFLite int8", "ONNX Runtime"]
    assert rows[0].split("|")[3].strip() == "1.0"  # the eager row is the reference of the ratios
    assert all(float(row.split("|")[2]) > 0 for row in rows)
