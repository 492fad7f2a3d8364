"""glowlab.atomic: the destination holds the old bytes or the new ones, never a part."""

from __future__ import annotations

import errno
import os

import pytest

from glowlab import atomic
from glowlab.atomic import TMP_PREFIX, atomic_write, atomic_write_text


def test_writes_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "status.json"
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~atomic._umask())  # not mkstemp's 0o600


def test_rename_happens_in_the_destination_folder_after_fsync(tmp_path, monkeypatch):
    """The temporary file is beside the destination (same filesystem, so the rename is atomic)
    and is fsync-ed before it replaces the destination."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])

    def replace(src, dst):
        events.append(("replace", os.path.dirname(src), os.path.dirname(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    atomic_write_text(tmp_path / "a.txt", "x")
    assert events[0] == "fsync"
    assert events[1] == ("replace", str(tmp_path), str(tmp_path))


@pytest.mark.parametrize("stage", ["write", "fsync", "replace"])
def test_failure_keeps_the_old_file_and_cleans_up(tmp_path, monkeypatch, stage):
    """Disk full while writing, while syncing or at the rename: the old content stays readable."""
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"old content")
    full = OSError(errno.ENOSPC, "No space left on device")

    def write(f):
        f.write(b"new partial")
        if stage == "write":
            raise full

    if stage == "fsync":
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(full))
    if stage == "replace":
        monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(full))
    with pytest.raises(OSError, match="No space"):
        atomic_write(path, write)
    assert path.read_bytes() == b"old content"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]
