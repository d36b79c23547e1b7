#!/usr/bin/env python3
"""The test suite's time on a slower CPU, estimated from two timed runs on this one.

    python -m pytest -q tests --durations=0 > default.log
    ONEDNN_MAX_CPU_ISA=SSE41 python -m pytest -q tests --durations=0 > sse41.log
    python scripts/estimate_suite_time.py default.log sse41.log [--compute-ratio 5.3] [--other-ratio 2.42]

oneDNN runs TensorFlow's convolutions and matmuls; capped at SSE4.1 they run `--isa-slowdown` times slower
(measured here with --measure-isa-slowdown, which times a 3x3 convolution both ways) while Python,
tracing and everything else run as fast as before. Each test's extra time under the cap therefore splits
its time into compute and the rest; the slower CPU's time is then `other_ratio x rest + compute_ratio x
compute` per test, summed over the suite and divided among its worker processes, plus the session's own
time (starting the workers, collecting; pytest's "passed in" less the tests' share), which is all rest.
The default ratios are the 2-core AVX2 machine's against the AVX-512 one, measured on a whole suite
(docs/stack.md#5-suite-time). Prints the estimate and the tests that cost most there.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

DURATION = re.compile(r"^\s*([\d.]+)s (call|setup|teardown)\s+(\S+)")
SESSION = re.compile(r"\bpassed.* in ([\d.]+)s\b")


def read_durations(path: str) -> dict[tuple[str, str], float]:
    """{(phase, test id): seconds} from pytest's --durations=0 report."""
    with open(path) as f:
        return {(m.group(2), m.group(3)): float(m.group(1)) for m in map(DURATION.match, f) if m}


def session_seconds(path: str) -> float | None:
    """The whole session's seconds from pytest's last "N passed ... in S s" line, None if there is none."""
    with open(path) as f:
        found = [float(m.group(1)) for m in map(SESSION.search, f) if m]
    return found[-1] if found else None


def estimate(default: dict, capped: dict, isa_slowdown: float, compute_ratio: float, other_ratio: float) -> dict:
    """{test: (seconds here, compute seconds here, estimated seconds on the slower CPU)} for the tests in both."""
    rows = {}
    for key, seconds in default.items():
        if key in capped:
            compute = min(seconds, max(0.0, (capped[key] - seconds) / (isa_slowdown - 1.0)))
            rows[key] = (seconds, compute, other_ratio * (seconds - compute) + compute_ratio * compute)
    return rows


def measure_isa_slowdown() -> float:
    """How much slower a float32 3x3 convolution runs with oneDNN capped at SSE4.1 than uncapped."""
    code = ("import time, tensorflow as tf\n"
            "x, k = tf.random.normal([32, 64, 64, 64]), tf.random.normal([3, 3, 64, 64])\n"
            "tf.nn.conv2d(x, k, 1, 'SAME').numpy(); t = time.perf_counter()\n"
            "for _ in range(20): y = tf.nn.conv2d(x, k, 1, 'SAME')\n"
            "y.numpy(); print(time.perf_counter() - t)\n")
    times = {}
    for isa in ("ALL", "SSE41"):
        env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa, "TF_CPP_MIN_LOG_LEVEL": "3"}
        times[isa] = float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                          check=True).stdout.split()[-1])
    return times["SSE41"] / times["ALL"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("default_log")
    parser.add_argument("sse41_log")
    parser.add_argument("--isa-slowdown", type=float, default=5.4,
                        help="compute under ONEDNN_MAX_CPU_ISA=SSE41 over uncapped (measured here: 5.2-5.6)")
    parser.add_argument("--measure-isa-slowdown", action="store_true", help="measure it now instead")
    parser.add_argument("--compute-ratio", type=float, default=5.3, help="slower CPU's matmul time over this one's")
    parser.add_argument("--other-ratio", type=float, default=2.42, help="slower CPU's time for everything else")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist processes (setup.cfg)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    slowdown = measure_isa_slowdown() if args.measure_isa_slowdown else args.isa_slowdown
    if slowdown <= 1.0:
        parser.error(f"--isa-slowdown must be > 1, got {slowdown:.2f}")
    default, capped = read_durations(args.default_log), read_durations(args.sse41_log)
    if not default or not capped:
        parser.error("both logs need pytest's --durations=0 report")
    rows = estimate(default, capped, slowdown, args.compute_ratio, args.other_ratio)
    here, compute, there = (sum(row[i] for row in rows.values()) for i in range(3))
    print(f"{len(rows)} timed test phases; ISA slowdown {slowdown:.2f}, compute ratio {args.compute_ratio}, "
          f"other ratio {args.other_ratio}")
    session = session_seconds(args.default_log)
    overhead = max(0.0, session - here / args.workers) if session else 0.0
    print(f"here: {here:.0f} s of test time ({compute:.0f} s compute), {here / args.workers / 60:.1f} min "
          f"over {args.workers} workers, {overhead:.0f} s of session overhead")
    suite = there / args.workers + args.other_ratio * overhead
    print(f"estimated on the slower CPU: {there:.0f} s of test time, {there / args.workers / 60:.1f} min over "
          f"{args.workers} workers; the suite {suite / 60:.1f} min")
    print("\n| estimated s | here s | compute s | test |\n|---:|---:|---:|---|")
    for (phase, test), (seconds, part, estimated) in sorted(rows.items(), key=lambda kv: -kv[1][2])[:args.top]:
        print(f"| {estimated:.1f} | {seconds:.1f} | {part:.1f} | {phase} {test} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
