"""``python -m pulmo.train.seg_eval --compare``: paired per-image differences between two
evaluation folders (how the model cards compare candidates)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pulmo.errors import InputError
from pulmo.train.seg_eval import main, paired_differences


def _work(path, medseg, png):
    path.mkdir()
    for key, rows in (("medseg", medseg), ("png", png)):
        (path / f"{key}_per_image.json").write_text(json.dumps(rows))
    return path


def _row(name, ggo=None, cons=None, lesion=None, lung=None):
    return {"name": name, "ggo": ggo, "consolidation": cons, "lesion": lesion, "lung": lung}


def test_paired_differences_over_images_scored_in_both(tmp_path, capsys):
    new = _work(tmp_path / "new", [_row("a", 0.6, 0.5, 0.8), _row("b", 0.7, math.nan, 0.9), _row("c", 0.2, None, 0.5)],
                [_row("p1", lesion=0.6, lung=0.97), _row("p2", lesion=0.5, lung=0.96)])
    old = _work(tmp_path / "old", [_row("a", 0.5, 0.5, 0.8), _row("b", 0.6, 0.3, 0.85), _row("c", 0.3, 0.4, 0.5)],
                [_row("p1", lesion=0.5, lung=0.97), _row("p2", lesion=0.5, lung=0.95)])
    d = paired_differences(new, old)
    assert d["medseg"]["ggo"]["n"] == 3 and d["medseg"]["ggo"]["mean"] == pytest.approx(0.1 / 3)
    assert d["medseg"]["consolidation"] == {"mean": 0.0, "ci95": [None, None], "n": 1}  # NaN, None out
    lo, hi = d["medseg"]["ggo"]["ci95"]
    assert -0.1 <= lo < d["medseg"]["ggo"]["mean"] < hi <= 0.1
    assert d["png"]["lung"]["mean"] == pytest.approx(0.005) and "ggo" not in d["png"]
    assert "medseg_train" not in d  # only when both folders have it
    assert main(["--work", str(new), "--compare", str(old)]) == 0
    out = capsys.readouterr().out
    assert "medseg  ggo            +0.0333" in out and "png     lesion         +0.0500" in out
    assert "consolidation  +0.0000 (no interval), n=1" in out


def test_paired_differences_refuses_folders_that_do_not_pair(tmp_path):
    new = _work(tmp_path / "new", [_row("a", 0.6, 0.5, 0.8)], [_row("p1", lesion=0.6, lung=0.97)])
    other = _work(tmp_path / "other", [_row("z", 0.6, 0.5, 0.8)], [_row("p1", lesion=0.6, lung=0.97)])
    with pytest.raises(InputError, match="score different images"):
        paired_differences(new, other)
    with pytest.raises(InputError, match="missing"):
        paired_differences(new, tmp_path / "nothing-here")
    assert np.isfinite(paired_differences(new, new)["medseg"]["lesion"]["mean"])
    for junk in ("{not json", json.dumps([{"ggo": 0.5}]), json.dumps([_row("a", "high", 0.5, 0.8)]), "[1, 2]"):
        (other / "medseg_per_image.json").write_text(junk)
        with pytest.raises(InputError, match="not a per-image file"):
            paired_differences(new, other)
