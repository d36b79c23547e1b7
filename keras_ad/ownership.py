"""Which folders keras_ad may replace: every folder it creates carries a marker file naming its kind.

`--overwrite` clears a folder only when its marker says it is of the kind the command writes (a run for
`train`, an export for `export`, a scores folder for `score`), and then deletes only the entries that
kind writes. A folder without the marker, or of another kind, is refused with one line, so nothing of
the user's is ever deleted (docs/robustness.md#overwrite).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from dataclasses import dataclass

from keras_ad.errors import UsageError

MARKER = ".keras_ad.json"


@dataclass(frozen=True)
class Kind:
    """A kind of folder keras_ad writes: its name and the entries (glob patterns) it may delete again."""

    name: str
    description: str
    entries: tuple[str, ...]


RUN = Kind("run", "a keras_ad run", (
    MARKER, "config.yaml", "model.weights.h5", "calibration.json", "report.json", "report.md", "report.html",
    "history.csv", "checkpoints", "plots", "samples", "logs", "gallery", ".tmp-*"))
EXPORT = Kind("export", "a keras_ad export", ("*",))  # assembled whole in a sibling folder and swapped in
SCORES = Kind("scores", "a keras_ad scores folder", (
    MARKER, "scores.csv", "*_overlay.png", "*_scores_over_time.png", "overlays", "report.html", ".tmp-*"))
KINDS = {k.name: k for k in (RUN, EXPORT, SCORES)}
# A run's default scores folder lives inside it; it goes with the run when it is marked as scores.
NESTED = {RUN.name: {"scores": SCORES}}


def mark(folder: str, kind: Kind) -> None:
    """Create `folder` if needed and write its marker (atomically: a half marker claims nothing)."""
    from keras_ad import __version__
    from keras_ad.runs import atomic_write

    os.makedirs(folder, exist_ok=True)
    atomic_write(os.path.join(folder, MARKER), json.dumps({"kind": kind.name, "keras_ad_version": __version__}) + "\n")


def kind_of(folder: str) -> str | None:
    """The kind named by `folder`'s marker; None for a folder keras_ad did not create (or a broken marker)."""
    path = os.path.join(folder, MARKER)
    if os.path.islink(path) or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            kind = json.load(f).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if kind in KINDS else None


def is_empty(folder: str) -> bool:
    """True for a missing folder or one without entries."""
    return not os.path.isdir(folder) or not os.listdir(folder)


def check_replaceable(folder: str, kind: Kind, overwrite: bool, flag: str, protected: tuple[str, ...] = ()) -> None:
    """Refuse, with one line, to write `kind` into an existing non-empty `folder` unless `overwrite` was
    given, the marker says the folder is of that kind, and it holds none of the `protected` paths."""
    if is_empty(folder):
        return
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f"{folder}: is a file, not a folder; choose another {flag}")
    if not overwrite:
        raise UsageError(f"{folder}: exists and is not empty; pass --overwrite to replace {kind.description} "
                         f"there, or choose another {flag}")
    found = kind_of(folder)
    if found != kind.name:
        what = f"is {KINDS[found].description}" if found else "was not created by keras_ad (no marker)"
        raise UsageError(f"{folder}: {what}, not {kind.description}; --overwrite replaces only that, so "
                         f"nothing was deleted; choose another {flag}")
    for path in protected:
        if is_within(path, folder):
            raise UsageError(f"{folder}: holds {path}, which this command reads; nothing was deleted; choose "
                             f"another {flag}")


def clear(folder: str, kind: Kind) -> list[str]:
    """Delete the entries of `folder` that `kind` writes; returns the names of the entries kept."""
    kept = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        nested = NESTED.get(kind.name, {}).get(name)
        if nested is not None and kind_of(path) == nested.name:
            _remove(path)
        elif any(fnmatch.fnmatchcase(name, pattern) for pattern in kind.entries):
            _remove(path)
        else:
            kept.append(name)
    return kept


def _remove(path: str) -> None:
    """Remove a file or folder; a symbolic link is removed itself, never what it points to."""
    if os.path.islink(path) or not os.path.isdir(path):
        os.remove(path)
    else:
        shutil.rmtree(path)


def is_within(path: str, folder: str) -> bool:
    """True when `path` is `folder` or lies inside it (symbolic links resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def file_tag(command: str) -> str:
    """The first line of a text file that `keras-ad <command>` writes, which lets --overwrite replace it."""
    return f"<!-- written by keras-ad {command} -->"


def check_file_replaceable(path: str, command: str, overwrite: bool, flag: str) -> None:
    """Refuse, with one line, to replace an existing file unless `overwrite` was given and the file starts
    with `command`'s tag (see `file_tag`)."""
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise UsageError(f"{flag} {path}: exists; pass --overwrite to replace it or choose another file")
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline().rstrip("\n")
    except (OSError, UnicodeDecodeError):
        first = None
    if os.path.islink(path) or first != file_tag(command):
        raise UsageError(f"{flag} {path}: was not written by keras-ad {command}; --overwrite replaces only such a "
                         f"file, so nothing was changed; choose another file")
