"""``pulmo.io.atomic.atomic_path``: whole file or nothing, with ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from pulmo.io.atomic import atomic_path


def test_new_file_gets_the_umask_mode_and_an_existing_one_keeps_its_mode(tmp_path):
    old = os.umask(0o022)
    try:
        new = tmp_path / "out.csv"
        with atomic_path(new) as tmp:
            tmp.write_text("a\n")
        assert stat.S_IMODE(new.stat().st_mode) == 0o644 and new.read_text() == "a\n"
        os.chmod(new, 0o640)
        with atomic_path(new) as tmp:
            tmp.write_text("b\n")
        assert stat.S_IMODE(new.stat().st_mode) == 0o640 and new.read_text() == "b\n"
    finally:
        os.umask(old)


def test_failure_leaves_the_target_untouched_and_no_temporary_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("keep\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "keep\n" and [p.name for p in tmp_path.iterdir()] == ["out.csv"]
