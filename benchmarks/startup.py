"""Seconds from starting the studio to its page answering HTTP 200, next to a bare Gradio app.

    python benchmarks/startup.py [--runs 5]

Both are started as fresh processes the same way, alternately, and timed until ``GET /`` answers 200.
Prints the median of each, and our median divided by the anchor's (target: at most 1.25).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import free_port, wait_for_http  # noqa: E402

TARGET_RATIO = 1.25


def time_to_200(command: list[str], port: int, env: dict) -> float:
    """Start ``command``; return the seconds until http://127.0.0.1:port/ answers 200."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", timeout=120, process=process)
        return time.perf_counter() - start
    finally:
        process.terminate()
        process.wait(timeout=20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    workspace = tempfile.mkdtemp(prefix="segstudio-bench-")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "SEGSTUDIO_WORKSPACE": workspace}
    ours, anchor = [], []
    for run in range(args.runs):
        port = free_port()
        anchor.append(time_to_200([sys.executable, "benchmarks/bare_app.py", str(port)], port, env))
        port = free_port()
        ours.append(time_to_200([sys.executable, "launch.py", "--port", str(port)], port, env))
        print(f"run {run + 1}: segstudio {ours[-1]:.2f} s, bare gradio {anchor[-1]:.2f} s", flush=True)
    ratio = statistics.median(ours) / statistics.median(anchor)
    print(f"startup median: segstudio {statistics.median(ours):.2f} s | bare Gradio Blocks + Image "
          f"{statistics.median(anchor):.2f} s | ratio {ratio:.2f} (target <= {TARGET_RATIO})")  # fmt: skip
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
