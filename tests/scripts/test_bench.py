"""scripts/bench.py runs end to end (on a tiny config) and writes its table and JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_tiny_config(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--config", "tiny", "--baseline",
         "--memory-saving", "none,reversible", "--steps", "10", "--warmup", "1", "--sample-reps", "1",
         "--eval-reps", "1", "--profile", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| tiny | glowlab | reversible |" in proc.stdout
    assert proc.stderr.count("convolutions (forward and backward)") == 3  # --profile: one per row
    data = json.loads(out.read_text())
    rows = {(r["impl"], r["memory_saving"]): r for r in data["results"]}
    assert set(rows) == {("plain", "none"), ("glowlab", "none"), ("glowlab", "reversible")}
    for r in rows.values():
        assert r["train_img_s"] > 0 and r["sample_img_s"] > 0 and r["log_prob_img_s"] > 0
        assert r["sample_finite"]
        assert r["peak_mem_gb"] >= r["steady_mem_gb"] >= r["runtime_mem_gb"] > 0
    assert rows[("plain", "none")]["optimizer"] == "torch default"
    assert rows[("glowlab", "none")]["optimizer"] == "fused"
    assert data["machine"]["torch"]


def test_bench_rejects_bad_arguments():
    for args in (["--config", "huge"], ["--memory-saving", "revnet"], ["--steps", "3"]):
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0
