"""bench/run.py must keep running: `--quick` (tiny counts) exits 0 and prints every section.

Only that: the figures of a quick run mean nothing, and nothing here is timed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_bench_quick_run_prints_every_section():
    sys.path.insert(0, str(ROOT))
    from bench.run import SECTIONS

    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    assert len(SECTIONS) == 6
    for title in SECTIONS:
        assert f"== {title} ==" in done.stdout, done.stdout
    assert "done in" in done.stdout
