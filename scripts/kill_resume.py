#!/usr/bin/env python
"""Kill a training with SIGKILL at random moments, then resume it, and check that nothing is corrupt.

    python scripts/kill_resume.py [--trials 20] [--epochs 6] [--seed 0] [--work DIR] [--span SECONDS]

Each trial starts a fresh `keras-ad train --no-evaluate` of the tiny `cae` on a small synthetic set written
into --work and kills it a delay after its "training ..." line, drawn uniformly over the span that follows
that line in an uninterrupted run (measured first: the epochs, the checkpoint writes and the final save;
--span gives it instead, and saves that run).
Then it runs `keras-ad train --resume` (or, when the kill came before the first checkpoint, the same command
without --resume, which reuses a run that never trained) and checks: exit code 0; every checkpoint and the
final weights read back; history.csv holds each epoch exactly once; no `.tmp-*` file is left. Prints one
line per trial and a summary; exit code 1 if any trial failed.
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import yaml


def tiny_config(work: str, epochs: int) -> str:
    """A config that trains the tests' tiny cae (its spec's) on a small synthetic set, about a second an epoch."""
    from keras_ad.data import synthetic
    from keras_ad.specs import SPECS

    data = os.path.join(work, "data")
    synthetic.write(data, ["object"], n_train=40, n_test_good=4, n_per_defect=2)
    cfg = {"data": {"layout": "folder", "root": os.path.join(data, "object"), "image_size": 32, "channels": 3},
           "detector": SPECS["cae"].tiny["cae"],
           "train": {"epochs": epochs, "batch_size": 8, "sample_every": 1}}
    path = os.path.join(work, "kill_resume.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def train_command(config: str, run_dir: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "keras_ad.cli", "train", "--config", config, "--set", f"run.dir={run_dir}",
            "--no-evaluate", *extra]


def problems(run_dir: str, epochs: int) -> list[str]:
    """What is wrong with a finished run folder (see the module docstring); [] when nothing is."""
    from keras_ad.runs import WEIGHTS, weights_damage
    from keras_ad.training import checkpoint_damage

    damaged = {os.path.basename(folder): checkpoint_damage(folder)
               for folder in glob.glob(os.path.join(run_dir, "checkpoints", "epoch-*"))}
    damaged[WEIGHTS] = weights_damage(os.path.join(run_dir, WEIGHTS))
    found = [f"{name}: {problem}" for name, problem in sorted(damaged.items()) if problem]
    with open(os.path.join(run_dir, "history.csv")) as f:
        rows = [line.split(",")[0] for line in f.read().splitlines()[1:]]
    if rows != [str(e) for e in range(1, epochs + 1)]:
        found.append(f"history.csv epochs {rows}")
    leftovers = glob.glob(os.path.join(run_dir, ".tmp-*")) + glob.glob(os.path.join(run_dir, "*", ".tmp-*"))
    if leftovers:
        found.append(f"left behind: {', '.join(os.path.basename(p) for p in leftovers)}")
    return found


def trial(config: str, run_dir: str, delay: float, epochs: int) -> dict:
    """Start, kill `delay` seconds after the training's first line, resume; the trial's record."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(train_command(config, run_dir), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:  # a few short lines: the pipe never fills while we sleep below
        if line.startswith("training "):
            break
    time.sleep(delay)
    finished = proc.poll() is not None
    if not finished:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    checkpoints = sorted(glob.glob(os.path.join(run_dir, "checkpoints", "epoch-*")))
    resume = ["--resume"] if checkpoints else []
    again = subprocess.run(train_command(config, run_dir, *resume), env=env, capture_output=True, text=True)
    found = [f"exit {again.returncode}: {again.stderr.strip().splitlines()[-1:]}"] if again.returncode else []
    found += [] if again.returncode else problems(run_dir, epochs)
    newest = int(os.path.basename(checkpoints[-1]).split("-")[1]) if checkpoints else 0
    return {"delay": delay, "killed": not finished, "epochs_checkpointed": newest,
            "then": "resume" if resume else "restart", "problems": found}


def time_training(config: str, run_dir: str) -> float:
    """Seconds from the training's first line to the end of the process in one whole run: the span the
    kills fall in (the epochs, the checkpoint writes and the final save), not the imports."""
    proc = subprocess.Popen(train_command(config, run_dir), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    training_starts = None
    for line in proc.stdout:
        if training_starts is None and line.startswith("training "):
            training_starts = time.perf_counter()
    if proc.wait() != 0 or training_starts is None:
        raise RuntimeError(f"the uninterrupted run in {run_dir} failed (exit {proc.returncode})")
    return time.perf_counter() - training_starts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument("--work", help="folder for the data and runs (default: a temporary one)")
    parser.add_argument("--span", type=float, help="seconds the kill delays are drawn from (default: measured by "
                                                   "an uninterrupted run)")
    args = parser.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="kill_resume-")
    config, epochs = tiny_config(work, args.epochs), args.epochs

    if args.span is None:
        training = time_training(config, os.path.join(work, "uninterrupted"))
        print(f"an uninterrupted run trains for {training:.1f} s after its 'training ...' line", flush=True)
    else:
        training = args.span
    print(f"killing {args.trials} runs at uniform random moments of the {training:.1f} s after 'training ...'",
          flush=True)
    rng, failed = random.Random(args.seed), 0
    for index in range(args.trials):
        record = trial(config, os.path.join(work, f"trial{index:02d}"), rng.uniform(0, training), epochs)
        failed += bool(record["problems"])
        state = (f"killed {record['delay']:.1f} s into training, {record['epochs_checkpointed']} epoch(s) "
                 f"checkpointed, {record['then']}" if record["killed"] else
                 f"finished before {record['delay']:.1f} s")
        print(f"trial {index + 1}/{args.trials}: {state}: {'; '.join(record['problems']) or 'ok'}", flush=True)
    print(f"{args.trials - failed} of {args.trials} trials complete with no corrupt checkpoint")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
