"""The export benchmark runs at a smoke size (``--quick``) in the test suite, so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

pytest.importorskip("ray")


@pytest.mark.slow
def test_export_benchmark_runs_quick_and_prints_every_ratio():
    done = subprocess.run([sys.executable, "benchmarks/export.py", "--quick"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    throughput = [line for line in lines if line.startswith("export 24 composites")]
    assert len(throughput) == 2 and all("I/O floor" in line and "| ratio " in line for line in throughput)
    assert any(line.startswith("ray runner") and "| ratio " in line and "same tree as local: True" in line
               for line in lines)  # fmt: skip
    assert any(line.startswith("memory, 200 composites") and "peak" in line and "ratio" in line for line in lines)
    assert any(line.startswith("resume of 24 finished jobs") and "ratio" in line for line in lines)
    assert "trees of 1 and 2 workers identical: True" in done.stdout
    assert isinstance(json.loads(lines[-1])["all_targets_met"], bool)
