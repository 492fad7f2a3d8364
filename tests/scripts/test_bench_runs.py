"""scripts/bench_runs.py: the run specs, the NFE summary of a CSV log, and one side-by-side pair of
tiny digits runs whose table agrees with what the runs themselves wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts.script_loader import load_script as load_named_script

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    return load_named_script("bench_runs")


def test_a_run_spec_is_a_name_and_shell_quoted_overrides():
    bench = load_script()
    assert bench.parse_run('glow=experiment=mnist_idx_glow "model.coupling_kwargs={bins: 4}"') == (
        "glow", ["experiment=mnist_idx_glow", "model.coupling_kwargs={bins: 4}"])
    with pytest.raises(SystemExit, match="NAME="):
        bench.parse_run("experiment_without_a_name")


def test_nfe_summary_adds_forward_and_backward_per_step(tmp_path):
    bench = load_script()
    (tmp_path / "csv").mkdir()
    lines = ["step,train/nfe_forward,train/nfe_backward,train/bpd"]
    lines += [f"{i},{10 + i},{20 + i}," for i in range(20)] + ["20,,,3.0"]
    (tmp_path / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    assert bench.nfe_summary(tmp_path) == {"nfe_per_step_first": 30.0, "nfe_per_step_last": 68.0,
                                           "nfe_per_step_last_tenth": (66.0 + 68.0) / 2}
    assert bench.nfe_summary(tmp_path / "nowhere") == {}


@pytest.mark.slow
def test_two_runs_side_by_side_report_their_own_figures(tmp_path):
    out = tmp_path / "table.json"
    tiny = ("experiment=digits_glow model.depth=2 model.hidden_channels=8 trainer.max_steps=3 "
            "trainer.limit_val_batches=1")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_runs.py"), "--parallel", "2", "--k", "2",
                           "--workdir", str(tmp_path / "runs"), "--out", str(out), "--run", f"uniform={tiny}",
                           "--run", f"variational={tiny} ++objective.dequantization.kind=variational "
                           "++objective.dequantization.depth=1 ++objective.dequantization.hidden_channels=4"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads(out.read_text())
    rows = {r["name"]: r for r in table["rows"]}
    assert set(rows) == {"uniform", "variational"} and not any("error" in r for r in rows.values())
    for name, row in rows.items():
        own = json.loads((tmp_path / "runs" / f"{name}_s0" / "metrics.json").read_text())
        assert row["test_bpd"] == own["test/bpd"] and row["steps"] == 3
        # eval.py k=2 ran on the run's checkpoint: a bound of the same size as its k=1 test bpd
        assert abs(row["test_bpd_k2"] - row["test_bpd"]) < 0.05
        # eval.py's own k = 1 figure (fp32, fresh dequantisation noise) on the same checkpoint
        assert abs(row["test_bpd_eval"] - row["test_bpd"]) < 0.05
    assert rows["uniform"]["params"] == rows["variational"]["params"]
    assert rows["uniform"]["dequantizer_params"] == 0 < rows["variational"]["dequantizer_params"]
    assert [s["name"] for s in table["summary"]] == ["uniform", "variational"]
