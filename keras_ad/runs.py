"""The run folder: where a run's config, weights, checkpoints, logs, reports and plots live.

Every file is written atomically (temp file + rename), so a killed process never leaves half a file
that a later load takes for whole. An existing run is never overwritten without `overwrite=True`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile

from keras_ad import config as config_lib
from keras_ad.errors import UsageError

CONFIG = "config.yaml"
WEIGHTS = "model.weights.h5"
CALIBRATION = "calibration.json"
REPORT = "report.json"


def atomic_write(path, data: bytes | str):
    """Write `data` to `path` through a temp file in the same folder and an atomic rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the user's usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save(path, save_fn):
    """Call `save_fn(tmp_path)` (e.g. a weights or figure writer) and rename the result onto `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    if base.endswith(".weights"):  # keras insists on the full ".weights.h5" suffix
        base, ext = base[:-len(".weights")], ".weights" + ext
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{base}{ext}")
    try:
        save_fn(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    """Atomic, strict JSON: numpy values become lists/numbers, NaN (a metric without data) becomes null."""
    atomic_write(path, json.dumps(_finite(obj), indent=2, default=_json_default, allow_nan=False) + "\n")


def _finite(obj):
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class Run:
    """Paths and helpers of one run folder."""

    def __init__(self, path: str):
        self.path = os.path.abspath(os.path.expanduser(path))
        self.name = os.path.basename(self.path.rstrip(os.sep))

    def file(self, *parts):
        return os.path.join(self.path, *parts)

    @property
    def checkpoints(self):
        return self.file("checkpoints")

    @property
    def is_run(self):
        return os.path.isfile(self.file(CONFIG))

    @classmethod
    def create(cls, cfg, overwrite=False, resume=False) -> "Run":
        """Prepare the run folder of `cfg`; refuse to clobber an existing one unless asked to."""
        run = cls(cfg.run_dir)
        exists = os.path.isdir(run.path) and os.listdir(run.path)
        if resume:
            if not run.is_run:
                raise UsageError(f"{run.path}: nothing to resume (no {CONFIG}); drop --resume to start a new run")
        elif exists:
            if not overwrite:
                raise UsageError(f"{run.path}: run folder exists; pass --overwrite to replace it, --resume to "
                                 f"continue it, or set run.dir to a new folder")
            if not run.is_run:
                raise UsageError(f"{run.path}: exists and is not a keras_ad run folder (no {CONFIG}); "
                                 f"refusing to delete it, set run.dir elsewhere")
            shutil.rmtree(run.path)
        os.makedirs(run.path, exist_ok=True)
        atomic_write(run.file(CONFIG), cfg.to_yaml())
        return run

    @classmethod
    def open(cls, path) -> "Run":
        run = cls(path)
        if not run.is_run:
            raise UsageError(f"{run.path}: not a run folder (no {CONFIG}); pass the folder that "
                             f"`keras-ad train` created (run.dir)")
        return run

    def config(self):
        return config_lib.load(self.file(CONFIG))

    def read_json(self, name):
        path = self.file(name)
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)
