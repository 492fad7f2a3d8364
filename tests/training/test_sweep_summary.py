"""The sweep summary tolerates jobs that died: an empty status.json (full disk), a job killed while
running, a truncated metrics.json; status files are written atomically."""

from __future__ import annotations

import json
import os

from glowlab.training import sweeps
from glowlab.training.sweeps import STATUS_FILE, collect_jobs, write_summary


def _job(sweep, num, status=None, metrics=None):
    d = sweep / str(num)
    d.mkdir(parents=True)
    if status is not None:
        (d / STATUS_FILE).write_text(status if isinstance(status, str) else json.dumps(status))
    if metrics is not None:
        (d / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    return d


def test_summary_survives_empty_and_unfinished_jobs(tmp_path):
    _job(tmp_path, 0, {"job": 0, "status": "ok", "overrides": ["a=1"]},
         {"best/val_bpd": 3.5, "test/bpd": 3.6, "wall_time_s": 9.0})
    _job(tmp_path, 1, "")  # emptied by a full disk
    _job(tmp_path, 2, {"job": 2, "status": "running", "overrides": ["a=3"]})  # killed
    _job(tmp_path, 3, {"job": 3, "status": "ok", "overrides": ["a=4"]}, '{"test/bpd": 3.')  # truncated
    rows = {str(r["job"]): r for r in write_summary(tmp_path)}
    assert rows["0"]["status"] == "ok" and rows["0"]["best_val_bpd"] == 3.5
    assert rows["1"]["status"] == "unknown" and "status.json unreadable" in rows["1"]["error"]
    assert rows["2"]["status"] == "died" and "never finished" in rows["2"]["error"]
    assert rows["3"]["status"] == "ok" and "metrics.json unreadable" in rows["3"]["error"]
    md = (tmp_path / "summary.md").read_text()
    assert "| died |" in md and "Best: job 0" in md
    assert len(collect_jobs(tmp_path)) == 4


def test_status_is_written_atomically_in_its_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    renamed = []
    real = os.replace

    def replace(src, dst):
        renamed.append((os.path.dirname(src), str(dst)))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    sweeps._write_status(tmp_path, status="running")
    sweeps._write_status(tmp_path, status="ok", wall_time_s=1.0)
    assert json.loads((tmp_path / STATUS_FILE).read_text()) == {"status": "ok", "wall_time_s": 1.0}
    assert renamed == [(str(tmp_path), str(tmp_path / STATUS_FILE))] * 2
