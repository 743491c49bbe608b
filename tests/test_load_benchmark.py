"""The load benchmark runs at a small size (2 sessions x 3 rounds) in the test suite, so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT


@pytest.mark.slow
def test_load_benchmark_runs_small_with_no_errors():
    done = subprocess.run([sys.executable, "benchmarks/load.py", "--levels", "1,2", "--rounds", "3", "--settle", "1",
                           "--json"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["errors"] == 0 and report["box_events"] == 3 * (1 + 2)
    assert [row["sessions"] for row in report["levels"]] == [1, 2]
    for row in report["levels"]:
        assert 0 < row["p50_s"] <= row["p95_s"] <= row["max_s"] and row["bare_p50_s"] > 0
    assert report["memory_after_close_mb"] > 0 and report["gradio_cache_files"] >= 0
