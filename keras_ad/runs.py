"""The run folder: where a run's config, weights, checkpoints, logs, reports and plots live.

Every file is written atomically (temp file + rename), so a killed process never leaves half a file
that a later load takes for whole. A run folder carries keras_ad's run marker (keras_ad.ownership):
only a marked run is ever replaced, only with `overwrite=True`, and only the run's own files go.
"""

from __future__ import annotations

import glob
import json
import math
import os
import sys
import tempfile

import numpy as np

from keras_ad import config as config_lib
from keras_ad import ownership
from keras_ad.errors import UsageError

CONFIG = "config.yaml"
WEIGHTS = "model.weights.h5"
CALIBRATION = "calibration.json"
CALIBRATION_ARRAYS = "calibration.npz"  # per-pixel map statistics (postprocess.normalize), beside the JSON
REPORT = "report.json"
HISTORY = "history.csv"


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
    """Call `save_fn(tmp_path)` (e.g. a weights or figure writer), rename the result onto `path` and return
    what `save_fn` returned."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    if base.endswith(".weights"):  # keras insists on the full ".weights.h5" suffix
        base, ext = base[:-len(".weights")], ".weights" + ext
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{base}{ext}")
    try:
        result = save_fn(tmp)
        os.replace(tmp, path)
        return result
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_weights(model, path, fix: str):
    """`model.load_weights(path)`, or one UsageError line naming the damaged file and `fix`: a truncated or
    foreign weights file otherwise surfaces as an h5py or zip traceback."""
    from keras_ad.errors import DamagedFile, first_line

    if not os.path.isfile(path):
        raise DamagedFile(f"{path}: missing; {fix}")
    try:
        model.load_weights(path)
    except Exception as e:  # OSError (h5py), ValueError (Keras: other layers), KeyError
        raise DamagedFile(f"{path}: unreadable weights ({first_line(e)}); {fix}") from None


def weights_damage(path) -> str | None:
    """Why a weights file does not read back (missing, truncated, not HDF5), or None: every dataset is read."""
    import h5py

    from keras_ad.errors import first_line

    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda _, item: item[()] if isinstance(item, h5py.Dataset) else None)
    except Exception as e:  # OSError and the like: h5py's errors for a file that is not whole
        return first_line(e)
    return None


def remove_temporaries(folder):
    """Delete the `.tmp-*` files and folders that a killed atomic write left in run `folder` and in the
    sub-folders the run writes atomically (checkpoints, samples, plots); a user's own folders are not searched."""
    import shutil

    places = [folder] + [os.path.join(folder, sub) for sub in ("checkpoints", "samples", "plots")]
    for path in [p for place in places for p in glob.glob(os.path.join(place, ".tmp-*"))]:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)


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


def _split_arrays(calibration: dict) -> tuple[dict, dict]:
    """({"key" or "variant/key": array}, the rest as plain JSON values)."""
    arrays, plain = {}, {}
    for key, value in calibration.items():
        if isinstance(value, np.ndarray):
            arrays[key] = value
        elif key == "variants":
            plain[key] = {}
            for variant, own in value.items():
                own_arrays, own_plain = _split_arrays(own)
                arrays.update({f"{variant}/{k}": v for k, v in own_arrays.items()})
                plain[key][variant] = own_plain
        else:
            plain[key] = value
    return arrays, plain


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
        return ownership.kind_of(self.path) == ownership.RUN.name and os.path.isfile(self.file(CONFIG))

    @property
    def has_trained(self):
        """True once training saved anything (a checkpoint or the final weights)."""
        return os.path.isfile(self.file(WEIGHTS)) or bool(glob.glob(os.path.join(self.checkpoints, "epoch-*")))

    @classmethod
    def create(cls, cfg, overwrite=False, resume=False) -> Run:
        """Prepare the run folder of `cfg`; refuse to clobber an existing one unless asked to.

        With `overwrite`, only a marked run is replaced and only its own entries are deleted; a run that
        never trained (a failed start) is reused without `overwrite`."""
        run = cls(cfg.run_dir)
        if resume:
            if not run.is_run:
                raise UsageError(f"{run.path}: nothing to resume (not a keras_ad run); drop --resume to start a "
                                 f"new run")
            _check_resume_config(run, cfg)
            remove_temporaries(run.path)  # half-written files of the killed process
        elif not ownership.is_empty(run.path):
            failed_start = run.is_run and not run.has_trained
            if not failed_start:
                ownership.check_replaceable(run.path, ownership.RUN, overwrite, "run.dir")
            kept = ownership.clear(run.path, ownership.RUN)
            if kept:
                print(f"{run.path}: kept {len(kept)} entries that are not the run's: {', '.join(kept[:5])}"
                      f"{', ...' if len(kept) > 5 else ''}", file=sys.stderr)
        ownership.mark(run.path, ownership.RUN)
        atomic_write(run.file(CONFIG), cfg.to_yaml())
        return run

    @classmethod
    def open(cls, path) -> Run:
        run = cls(path)
        if not run.is_run:
            hint = (f"; if keras_ad wrote it before it marked its runs, add the marker: "
                    f"echo '{{\"kind\": \"run\"}}' > {run.file(ownership.MARKER)}"
                    if os.path.isfile(run.file(CONFIG)) else "")
            raise UsageError(f"{run.path}: not a keras_ad run folder; pass the folder that `keras-ad train` "
                             f"created (run.dir){hint}")
        return run

    def config(self):
        return config_lib.load(self.file(CONFIG))

    def write_calibration(self, calibration: dict):
        """calibration.json, and its arrays (a variant's under "<variant>/<key>") in calibration.npz."""
        arrays, plain = _split_arrays(calibration)
        if arrays:
            atomic_save(self.file(CALIBRATION_ARRAYS), lambda p: np.savez(p, **arrays))
            plain["arrays"] = CALIBRATION_ARRAYS
        write_json(self.file(CALIBRATION), plain)

    def read_calibration(self) -> dict | None:
        """calibration.json with its arrays back in place; None when the run was never calibrated."""
        calibration = self.read_json(CALIBRATION)
        if not calibration or "arrays" not in calibration:
            return calibration
        with np.load(self.file(calibration.pop("arrays"))) as arrays:
            for key in arrays.files:
                variant, _, name = key.rpartition("/")
                (calibration["variants"][variant] if variant else calibration)[name] = arrays[key]
        return calibration

    def read_json(self, name):
        path = self.file(name)
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)


def _check_resume_config(run, cfg):
    """A resumed run keeps its data and model; only train.epochs may change, and run.dir (a run moved or
    copied elsewhere resumes where it is now)."""
    saved = run.config().to_dict()
    new = cfg.to_dict()
    saved["train"]["epochs"] = new["train"]["epochs"]
    saved["run"]["dir"] = new["run"]["dir"]
    changed = [f"{s}.{k}" for s in new for k in new[s] if saved.get(s, {}).get(k) != new[s][k]]
    if changed:
        raise UsageError(f"{run.path}: resuming with a config that differs from the run's in {', '.join(changed)}; "
                         f"resume with the same config or start a new run.dir")
