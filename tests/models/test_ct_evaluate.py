"""``pulmo ct evaluate``: Dice per image and mean, binary and 3-class ground truth, bad input."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from PIL import Image

from pulmo.cli.ct_evaluate import add_command
from pulmo.ct.evaluate import dice, evaluate_dirs
from pulmo.errors import InputError


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8)).save(path)


def _run(argv):
    """Parse like the ``pulmo ct`` group will (the lead wires add_command into it)."""
    parser = argparse.ArgumentParser()
    add_command(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def dirs(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    g = np.zeros((20, 20), np.uint8)
    g[:10, :10] = 1          # 100 px GGO
    g[10:, 10:] = 2          # 100 px consolidation
    p = np.zeros((20, 20), np.uint8)
    p[:10, :5] = 1           # 50 px GGO, all correct
    p[10:, 10:] = 2          # consolidation exact
    p[0, 19] = 2             # one false consolidation pixel
    lungs = np.zeros((20, 20), np.uint8)
    lungs[:, :10] = 1
    lungs[:, 10:] = 2
    lungs[0, 19] = 0         # the false pixel is outside the lung
    _save(gt / "labels" / "a.png", g)
    _save(pred / "a_lesions.png", p)
    _save(pred / "a_lungs.png", lungs)
    # image b: no consolidation anywhere -> consolidation Dice undefined for b
    g2 = np.zeros((20, 20), np.uint8)
    g2[5:15, 5:15] = 1
    _save(gt / "b_lesions.png", g2)
    _save(pred / "b_lesions.png", g2)
    return pred, gt


def test_dice_values(dirs):
    pred, gt = dirs
    res = evaluate_dirs(pred, gt)
    rows = {r["name"]: r for r in res["per_image"]}
    assert rows["a"]["ggo"] == pytest.approx(2 * 50 / 150)
    assert rows["a"]["consolidation"] == pytest.approx(2 * 100 / 201)
    assert rows["a"]["lesion"] == pytest.approx(2 * 150 / 351)
    assert rows["a"]["lesion_in_lung_pct"] == pytest.approx(100 * 150 / 151)
    assert rows["b"]["ggo"] == 1.0 and math.isnan(rows["b"]["consolidation"])
    assert res["dice"]["consolidation"]["n"] == 1
    assert res["dice"]["ggo"]["mean"] == pytest.approx((2 * 50 / 150 + 1) / 2)
    assert res["dice"]["ggo"]["pooled"] == pytest.approx(2 * 150 / (150 + 200))
    assert res["dice"]["lung"]["n"] == 0  # no lung ground truth
    # bootstrap CI of the mean over images: two images -> resampled means lie in [0.667, 1]
    assert res["dice"]["ggo"]["ci95"] == pytest.approx([2 * 50 / 150, 1.0])
    assert res["dice"]["consolidation"]["ci95"] is None  # one image: no interval


def test_binary_gt_and_lungs(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    cov = np.zeros((16, 16), np.uint8)
    cov[2:6, 2:6] = 255
    lung = np.zeros((16, 16), np.uint8)
    lung[1:15, 1:15] = 255
    _save(gt / "covid" / "0001.png", cov)
    _save(gt / "lungs" / "0001.png", lung)
    p = np.zeros((16, 16), np.uint8)
    p[2:6, 2:4] = 1
    p[2:6, 4:6] = 2          # GGO + consolidation = union matches the binary mask
    pl = np.zeros((16, 16), np.uint8)
    pl[1:15, 1:8] = 1
    pl[1:15, 8:15] = 2
    _save(pred / "0001_lesions.png", p)
    _save(pred / "0001_lungs.png", pl)
    res = evaluate_dirs(pred, gt)
    row = res["per_image"][0]
    assert row["lesion"] == 1.0 and row["lung"] == 1.0
    assert row["ggo"] is None and row["consolidation"] is None  # binary truth: no class split


def test_cli_table_json_csv(dirs, tmp_path, capsys):
    pred, gt = dirs
    assert _run(["evaluate", str(pred), str(gt), "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "mean" in out and "pooled" in out and "0.6667" in out
    assert "95% CI of mean" in out and "0.667-1.000" in out
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("name,ggo,consolidation,lesion,lung")
    assert _run(["evaluate", str(pred), str(gt), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_images"] == 2 and res["dice"]["consolidation"]["mean"] == pytest.approx(200 / 201)


def test_missing_prediction_exit_1(dirs, capsys):
    pred, gt = dirs
    (pred / "b_lesions.png").unlink()
    assert _run(["evaluate", str(pred), str(gt)]) == 1
    assert "no prediction: b" in capsys.readouterr().err


def test_bad_input(tmp_path, dirs):
    pred, gt = dirs
    with pytest.raises(InputError, match="not a folder"):
        evaluate_dirs(tmp_path / "nope", gt)
    with pytest.raises(InputError, match="no ground-truth"):
        (tmp_path / "empty").mkdir()
        evaluate_dirs(pred, tmp_path / "empty")
    _save(pred / "a_lesions.png", np.zeros((10, 10)))
    with pytest.raises(InputError, match="differ in size"):
        evaluate_dirs(pred, gt)
    _save(pred / "a_lesions.png", np.full((20, 20), 7))
    with pytest.raises(InputError, match="label values"):
        evaluate_dirs(pred, gt)
    (pred / "a_lesions.png").write_bytes(b"junk")
    with pytest.raises(InputError, match="readable"):
        evaluate_dirs(pred, gt)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(InputError, match="no predictions"):
        evaluate_dirs(other, gt)


def test_refusals_that_protect_the_score_and_the_files(tmp_path, dirs, capsys):
    pred, gt = dirs
    with pytest.raises(InputError, match="the same folder"):      # would score 1.0 against itself
        evaluate_dirs(pred, pred)
    with pytest.raises(InputError, match="the same folder"):
        evaluate_dirs(pred, tmp_path / "pred" / ".." / "pred")
    (gt / "c.png").mkdir()                                        # a folder named like a mask ...
    (gt / "d.png").symlink_to(gt / "nowhere.png")                 # ... and a dangling link: not masks
    _save(gt / "_lesions.png", np.zeros((20, 20)))                # no name
    assert [r["name"] for r in evaluate_dirs(pred, gt)["per_image"]] == ["a", "b"]
    binary = np.zeros((20, 20), np.uint8)
    binary[5:15, 5:15] = 255
    _save(pred / "b_lesions.png", binary)                          # a 0/255 prediction: which class?
    with pytest.raises(InputError, match="predictions are labelled 0 background, 1 ground glass"):
        evaluate_dirs(pred, gt)
    _save(pred / "b_lesions.png", np.zeros((20, 20)))               # an empty prediction is fine
    assert evaluate_dirs(pred, gt)["n_images"] == 2
    mask = gt / "labels" / "a.png"
    before = mask.read_bytes()
    for target, msg in ((tmp_path, "a folder"), (mask, "an image file name"), (tmp_path / "no" / "x.csv", "does not exist")):
        with pytest.raises(InputError, match=msg):
            _run(["evaluate", str(pred), str(gt), "--csv", str(target)])
    assert mask.read_bytes() == before
    Image.new("L", (5000, 4)).save(gt / "e.png")
    _save(pred / "e_lesions.png", np.zeros((4, 5000)))
    with pytest.raises(InputError, match="too large for a slice mask"):
        evaluate_dirs(pred, gt)
    (gt / "e.png").unlink()
    assert _run(["evaluate", str(pred), str(gt)]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["image", "ggo", "consolidation", "lesion", "lung", "lesion_in_lung_%"]


def test_dice_empty():
    z = np.zeros((4, 4), bool)
    assert math.isnan(dice(z, z))
    assert dice(z, ~z) == 0.0


def test_library_scores_plain_arrays_2d_and_3d():
    """pulmo.ct.evaluate on arrays: one Dice for slices and volumes; the pooled Dice is the Dice of
    the summed overlap counts; a binary truth scores the lesion union only."""
    from pulmo.ct.evaluate import class_masks, dice_from_overlap, lesion_in_lung, overlap

    truth = np.zeros((3, 8, 8), np.uint8)
    truth[0, :4, :4] = 1
    truth[1, 4:, 4:] = 2
    pred = truth.copy()
    pred[1, 4:, 6:] = 1                                     # half the consolidation called GGO
    masks = class_masks(pred, truth)
    assert dice(*masks["lesion"]) == 1.0 and dice(*masks["consolidation"]) == pytest.approx(2 * 8 / 24)
    assert overlap(*masks["ggo"]) == (16, 40)
    per_slice = [overlap(p, g) for p, g in zip(*masks["ggo"])]
    pooled = dice_from_overlap(*np.sum(per_slice, axis=0))
    assert pooled == pytest.approx(dice(*masks["ggo"]))     # pooled over slices = Dice of the volume
    p_cons, g_cons = masks["consolidation"]
    assert math.isnan(dice(p_cons[0], g_cons[0]))           # slice 0: no consolidation in either
    assert set(class_masks(pred, truth > 0, truth_binary=True)) == {"lesion"}
    lungs = np.zeros_like(truth)
    lungs[:, :, :6] = 1
    assert lesion_in_lung(pred, lungs) == (16 + 8, 16 + 16)
    with pytest.raises(InputError, match="differ in shape"):
        overlap(pred[0], truth)


def test_cli_names_the_folders_as_on_the_command_line(tmp_path, dirs):
    """The library names its parameters ('pred_dir'); ``pulmo ct evaluate`` says PRED_DIR / GT_DIR."""
    pred, gt = dirs
    with pytest.raises(InputError, match="^'pred_dir' .*: not a folder$"):
        evaluate_dirs(tmp_path / "nope", gt)
    with pytest.raises(InputError, match="^PRED_DIR .*: not a folder$"):
        _run(["evaluate", str(tmp_path / "nope"), str(gt)])
    with pytest.raises(InputError, match="^PRED_DIR and GT_DIR are the same folder"):
        _run(["evaluate", str(pred), str(pred)])
