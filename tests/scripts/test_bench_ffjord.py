"""scripts/bench_ffjord.py --quick runs and writes finite numbers for every contestant."""

from __future__ import annotations

import json
import math

import pytest

from tests.scripts.script_loader import load_script as load_named_script


def load_script():
    return load_named_script("bench_ffjord")


@pytest.mark.slow
@pytest.mark.usefixtures("single_thread")
def test_quick_run_writes_finite_numbers(tmp_path, capsys):
    bench = load_script()
    out = tmp_path / "bench.json"
    bench.main(["--quick", "--out", str(out), "--contestants", "glowlab", "glowlab+rnode"])
    data = json.loads(out.read_text())
    for problem in ("moons", "digits"):
        rows = data["results"][problem]
        assert set(rows) == {"glowlab", "glowlab+rnode"}
        for r in rows.values():
            assert r["steps"] == 3 and r["nfe_per_step"] > 0
            assert all(math.isfinite(r[k]) for k in ("s_per_step", "held_out_nats", "held_out_bpd"))
    assert "| moons | glowlab |" in capsys.readouterr().out
