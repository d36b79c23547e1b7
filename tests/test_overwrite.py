"""`--overwrite` replaces only what keras_ad wrote: never a run it reads, never someone else's files."""

import hashlib
import json
import os

import pytest
from click.testing import CliRunner
from helpers import tiny_config_dict, write_config

from keras_ad import config as config_lib
from keras_ad import ownership
from keras_ad.cli import main
from keras_ad.runs import Run


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def snapshot(folder):
    """Every file under `folder` with its SHA-256: what must survive a refused command."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


@pytest.fixture
def someones_folder(tmp_path):
    """A user's folder that happens to hold a config.yaml (the old test for "is a run"), data and a thesis."""
    folder = tmp_path / "home"
    (folder / "mydata").mkdir(parents=True)
    (folder / "Documents").mkdir()
    (folder / "config.yaml").write_text("run: {dir: elsewhere}\n")
    (folder / "mydata" / "part.png").write_bytes(b"not really a png")
    (folder / "Documents" / "thesis.txt").write_text("four years of work")
    return folder


def assert_refused(result, folder, before, *words):
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for word in (str(folder), *words):
        assert word in errors[0], errors[0]
    assert snapshot(folder) == before


def test_train_overwrite_refuses_someones_folder(someones_folder, tiny_data, tmp_path):
    before = snapshot(someones_folder)
    config = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_data, someones_folder))
    assert_refused(invoke("train", "--config", config, "--overwrite"), someones_folder, before, "not created by "
                                                                                                "keras_ad")


@pytest.mark.parametrize("kind", [ownership.EXPORT, ownership.SCORES])
def test_train_overwrite_refuses_a_keras_ad_folder_of_another_kind(kind, tiny_data, tmp_path):
    folder = tmp_path / kind.name
    ownership.mark(str(folder), kind)
    (folder / "model.onnx").write_bytes(b"onnx")
    before = snapshot(folder)
    config = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_data, folder))
    assert_refused(invoke("train", "--config", config, "--overwrite"), folder, before, kind.description)


def test_overwrite_of_a_run_deletes_only_the_runs_own_entries(tiny_data, tmp_path):
    cfg = config_lib.load(str(write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_data, tmp_path / "run"))))
    run = Run.create(cfg)
    for name in ("model.weights.h5", "report.json", "checkpoints/epoch-00001/state.json", "plots/roc.png",
                 "scores/scores.csv", "notes/mine.txt", "my_export/model.onnx", "thesis.txt"):
        os.makedirs(os.path.dirname(run.file(name)), exist_ok=True)
        with open(run.file(name), "w") as f:
            f.write("x")
    ownership.mark(run.file("scores"), ownership.SCORES)  # the run's default scores folder goes with it
    outside = tmp_path / "data-outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    os.symlink(outside, run.file("logs"))  # a run entry that is a link: the link goes, never its target

    with pytest.raises(Exception, match="--overwrite"):
        Run.create(cfg)  # it trained: never replaced without being asked
    Run.create(cfg, overwrite=True)
    assert sorted(os.listdir(run.path)) == sorted([ownership.MARKER, "config.yaml", "notes", "my_export", "thesis.txt"])
    assert (outside / "keep.txt").read_text() == "keep"


def test_a_run_that_never_trained_is_reused_without_overwrite(tiny_data, tmp_path):
    cfg = config_lib.load(str(write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_data, tmp_path / "run"))))
    Run.create(cfg)  # a start that failed before the first checkpoint leaves this behind
    run = Run.create(cfg)
    assert sorted(os.listdir(run.path)) == [ownership.MARKER, "config.yaml"]


@pytest.fixture
def targets(run_copy, someones_folder, tmp_path):
    """The folders no `--overwrite` may replace: a run, the run the command reads, someone's files, and
    a keras_ad export that holds the run the command reads."""
    other = tmp_path / "other-run"
    other.mkdir()
    ownership.mark(str(other), ownership.RUN)
    (other / "config.yaml").write_text("x")
    (other / "model.weights.h5").write_bytes(b"weights")
    holder = tmp_path / "holder"
    ownership.mark(str(holder), ownership.EXPORT)
    os.rename(run_copy, holder / "run")
    return {"another run": (holder / "run", other, "is a keras_ad run"),
            "the run itself": (holder / "run", holder / "run", "is a keras_ad run"),
            "someone's folder": (holder / "run", someones_folder, "not created by keras_ad")}, holder


@pytest.mark.parametrize("target", ["another run", "the run itself", "someone's folder"])
@pytest.mark.parametrize("command", ["export", "score"])
def test_export_and_score_overwrite_refuse(command, target, targets, tiny_data):
    cases, _ = targets
    run, out, words = cases[target]
    before = snapshot(out)
    inputs = [tiny_data / "test" / "hole"] if command == "score" else []
    result = invoke(command, "--run", run, *inputs, "--out", out, "--overwrite")
    assert_refused(result, out, before, words)


def test_export_overwrite_refuses_an_export_that_holds_the_run(targets):
    _, holder = targets
    before = snapshot(holder)
    result = invoke("export", "--run", holder / "run", "--out", holder, "--overwrite")
    assert_refused(result, holder, before, "holds")


def test_export_overwrite_replaces_an_earlier_export(run_copy, tmp_path):
    out = tmp_path / "export"
    ownership.mark(str(out), ownership.EXPORT)
    (out / "model_int8.tflite").write_bytes(b"stale")
    result = invoke("export", "--run", run_copy, "--format", "onnx", "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (out / "model_int8.tflite").exists() and (out / "model.onnx").is_file()
    assert ownership.kind_of(str(out)) == "export"
    assert sorted(os.listdir(tmp_path)) == ["export", "run"]  # no temporary sibling left behind


def test_score_overwrite_replaces_only_its_own_earlier_output(run_copy, tiny_data, tmp_path):
    out = tmp_path / "scores"
    assert invoke("score", "--run", run_copy, tiny_data / "test" / "hole", "--out", out).exit_code == 0
    assert ownership.kind_of(str(out)) == "scores"
    (out / "mine.txt").write_text("keep")
    result = invoke("score", "--run", run_copy, tiny_data / "test" / "stain" / "000.png", "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "overlays").rglob("*.png")) == ["000.png"]  # the old ones are gone
    assert (out / "mine.txt").read_text() == "keep"


def test_score_refuses_an_out_folder_that_is_its_input(run_copy, tiny_data, tmp_path):
    out = tmp_path / "scores"
    assert invoke("score", "--run", run_copy, tiny_data / "test" / "hole", "--out", out).exit_code == 0
    before = snapshot(out)
    assert_refused(invoke("score", "--run", run_copy, out, "--out", out, "--overwrite"), out, before, "reads")


def test_bench_overwrite_replaces_only_its_own_table(tmp_path):
    mine = tmp_path / "notes.md"
    mine.write_text("my notes\n")
    result = invoke("bench", "--detectors", "cae", "--out", mine, "--overwrite")
    assert result.exit_code == 2 and "not written by keras-ad bench" in result.output
    assert mine.read_text() == "my notes\n"
    table = tmp_path / "bench.md"
    table.write_text(ownership.file_tag("bench") + "\n| old table |\n")
    ownership.check_file_replaceable(str(table), "bench", True, "--out")  # accepted: no error
    with pytest.raises(Exception, match="--overwrite"):
        ownership.check_file_replaceable(str(table), "bench", False, "--out")


def test_marker_is_json_naming_the_kind(tmp_path):
    ownership.mark(str(tmp_path / "x"), ownership.RUN)
    assert json.loads((tmp_path / "x" / ownership.MARKER).read_text())["kind"] == "run"
    (tmp_path / "x" / ownership.MARKER).write_text("{broken")
    assert ownership.kind_of(str(tmp_path / "x")) is None  # a broken marker claims nothing
