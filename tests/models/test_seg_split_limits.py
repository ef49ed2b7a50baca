"""Upper bounds of the ground-glass / consolidation split (``seg_eval --split-limits``), on
synthetic slices whose answer is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from pulmo.errors import InputError
from pulmo.train.seg_split_limits import best_threshold, perfect_split, split_limits, threshold_split


def _slice():
    """A 64x64 slice: ground glass (grey 100) on the left of a lesion, consolidation (grey 180) on
    the right, air (30) around it; labels to match."""
    img = np.full((64, 64), 30.0, np.float32)
    truth = np.zeros((64, 64), np.uint8)
    img[16:48, 10:32], truth[16:48, 10:32] = 100, 1
    img[16:48, 32:54], truth[16:48, 32:54] = 180, 2
    return img, truth


def test_perfect_split_keeps_the_outline_and_takes_the_nearest_true_class():
    _, truth = _slice()
    pred = np.zeros_like(truth)
    pred[14:50, 8:56] = 2                   # outline 2 pixels too large on every side, all consolidation
    pred[30, 60] = 1                        # a false-positive speck far right
    out = perfect_split(pred, truth)
    assert ((out > 0) == (pred > 0)).all()  # the extent never changes
    assert (out[truth > 0] == truth[truth > 0]).all()
    assert (out[14:50, 8:10] == 1).all() and (out[14:50, 54:56] == 2).all() and out[30, 60] == 2
    assert (perfect_split(pred, np.zeros_like(truth)) == (pred > 0)).all()  # no true lesion: all GGO
    with pytest.raises(ValueError, match="one shape"):
        perfect_split(pred, truth[:10])


def test_oracle_threshold_finds_the_density_boundary():
    img, truth = _slice()
    t = best_threshold(img, truth, sigma=0)
    assert 100 < t <= 180                   # between the two grey levels
    split = threshold_split(img, truth, t, sigma=0)
    assert (split == truth).all()
    # a threshold that is too high calls everything ground glass
    assert set(np.unique(threshold_split(img, truth, 200, sigma=0))) == {0, 1}
    # the minor-class rule applies: 1 % consolidation inside a ground-glass lesion is merged
    img2 = img.copy()
    img2[16:48, 10:54] = 100
    img2[20, 20] = 250
    assert (threshold_split(img2, truth > 0, 150, sigma=0, min_share=0.02) <= 1).all()
    assert math.isnan(best_threshold(img, np.zeros_like(truth)))


def test_split_limits_scores_the_network_and_both_bounds(tmp_path):
    img, truth = _slice()
    net = np.zeros_like(truth)
    net[16:48, 10:54] = 1                   # right outline, but the network calls it all ground glass
    d = tmp_path / "medseg"
    for sub in ("images", "pred", "gt/labels"):
        (d / sub).mkdir(parents=True)
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(d / "images" / "a.png")
    Image.fromarray(net).save(d / "pred" / "a_lesions.png")
    Image.fromarray((truth > 0).astype(np.uint8)).save(d / "pred" / "a_lungs.png")
    Image.fromarray(truth).save(d / "gt" / "labels" / "a.png")
    out = split_limits(tmp_path, min_share=0.02)
    assert set(out) == {"medseg"}           # no medseg_train folder: skipped
    r = out["medseg"]
    assert r["network"]["dice"]["consolidation"]["mean"] == 0.0
    assert r["perfect_split"]["dice"]["consolidation"]["mean"] == 1.0
    assert r["density_oracle"]["dice"]["consolidation"]["mean"] > 0.95
    assert r["network"]["dice"]["lesion"]["mean"] == r["perfect_split"]["dice"]["lesion"]["mean"] == 1.0
    assert 100 < r["oracle_threshold"]["a"] <= 180
    assert (d / "pred_perfect_split" / "a_lungs.png").is_file()
    saved = json.loads((tmp_path / "medseg_split_limits.json").read_text())
    assert saved["perfect_split"]["dice"]["ggo"]["mean"] == 1.0
    (d / "pred" / "a_lesions.png").unlink()
    with pytest.raises(InputError, match="missing"):
        split_limits(tmp_path)
    with pytest.raises(InputError, match="run the evaluation first"):
        split_limits(tmp_path / "nothing")
