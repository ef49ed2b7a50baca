"""The shipped lung + lesion model and its runtime (pulmo.ct.models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pulmo.ct.models import (DEFAULT_MODEL, DEFAULT_MODEL_8BIT, Segmenter, default_model, load_segmenter,
                              read_gray_image)
from pulmo.ct.models.runtime import MODEL_DIR
from pulmo.errors import InputError, ModelError


@pytest.fixture(scope="module")
def seg():
    return load_segmenter()


def _chest_slice_8bit(size=256):
    """A crude chest-like 8-bit slice: dark outside, grey body, two dark lungs."""
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    img = np.full((size, size), 5, np.uint8)
    img[(xx / 0.45) ** 2 + (yy / 0.35) ** 2 < 1] = 200
    for cx in (-0.2, 0.2):
        img[((xx - cx) / 0.15) ** 2 + (yy / 0.25) ** 2 < 1] = 40
    return img


# ----------------------------------------------------------------------------- the shipped file

def test_shipped_model_present_small_and_documented():
    assert DEFAULT_MODEL.is_file(), "pulmo/ct/models/seg.onnx is missing"
    assert DEFAULT_MODEL_8BIT.is_file(), "pulmo/ct/models/seg_8bit.onnx is missing"
    total = sum(p.stat().st_size for p in MODEL_DIR.glob("*.onnx"))
    assert total <= 20 * 2**20
    for card in ("lungs.md", "lesions.md"):
        text = (MODEL_DIR / card).read_text()
        assert "non-commercial" in text and "Dice" in text
        assert "seg.onnx" in text and "seg_8bit.onnx" in text  # each card covers both networks


@pytest.mark.parametrize("path", [DEFAULT_MODEL, DEFAULT_MODEL_8BIT], ids=["hu", "8bit"])
def test_image_convolution_is_float(path):
    """The convolution on the image is never int8: onnxruntime's u8 x s8 kernels saturate on x86
    CPUs without VNNI, which made the shipped network's output machine-dependent (see
    pulmo.train.seg.float_image_conv)."""
    onnx = pytest.importorskip("onnx")
    g = onnx.load(str(path)).graph
    image = g.input[0].name
    users = [n for n in g.node if image in n.input]
    assert [n.op_type for n in users] == ["Conv"]


def test_default_model_by_kind():
    assert default_model("hu") == DEFAULT_MODEL and default_model("8bit") == DEFAULT_MODEL_8BIT
    hu, eight = load_segmenter(kind="hu"), load_segmenter(kind="8bit")
    assert hu is not eight and load_segmenter() is hu and load_segmenter(kind="8bit") is eight  # both cached
    assert hu.version.startswith("seg-2d-1") and eight.version.startswith("seg-2d-3")
    with pytest.raises(InputError, match="kind must be one of"):
        default_model("rgb")


def test_segmenter_cache_keeps_the_two_most_recently_used(tmp_path):
    import shutil

    other = tmp_path / "other.onnx"
    shutil.copy(DEFAULT_MODEL, other)
    first = load_segmenter(other)
    hu = load_segmenter(kind="hu")  # cache: other, hu
    assert load_segmenter(other) is first  # used again: hu is now the least recently used
    eight = load_segmenter(kind="8bit")  # evicts hu, not other
    assert load_segmenter(other) is first and load_segmenter(kind="8bit") is eight
    assert load_segmenter(kind="hu") is not hu  # reloaded


def test_metadata(seg):
    meta = seg.metadata
    assert meta["input_size"] == [256, 256]
    lo, hi = meta["hu_window"]
    assert -1200 <= lo < -800 and 0 <= hi <= 400
    assert meta["lesion_classes"] == {0: "background", 1: "ground-glass opacity", 2: "consolidation"}
    assert set(meta["lung_classes"]) == {0, 1, 2}
    assert seg.version and seg.version != "unknown"
    assert "non-commercial" in meta["licence"]
    json.dumps(meta)  # serialisable for results.json


def test_load_segmenter_is_cached(seg):
    assert load_segmenter() is seg


# ----------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("shape", [(256, 256), (512, 512), (301, 217), (2, 64, 96)])
def test_output_shape_and_values(seg, shape):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, shape).astype(np.uint8)
    lungs, lesions = seg.segment_slices(img, kind="8bit")
    assert lungs.shape == shape and lesions.shape == shape
    assert lungs.dtype == np.uint8 and lesions.dtype == np.uint8
    assert set(np.unique(lungs)) <= {0, 1, 2} and set(np.unique(lesions)) <= {0, 1, 2}


def test_batches_give_same_result_as_single(seg):
    imgs = np.stack([_chest_slice_8bit(), np.flipud(_chest_slice_8bit()), _chest_slice_8bit()[::-1, ::-1]])
    lu_all, le_all = seg.segment_slices(imgs, kind="8bit", batch=2)
    for i in range(3):
        lu, le = seg.segment_slices(imgs[i], kind="8bit")
        assert np.array_equal(lu, lu_all[i]) and np.array_equal(le, le_all[i])


def test_hu_window_equivalent_to_8bit(seg):
    """kind='hu' is the fixed lung window then the same network."""
    lo, hi = seg.metadata["hu_window"]
    img8 = _chest_slice_8bit().astype(np.float32)
    hu = lo + img8 / 255.0 * (hi - lo)
    a = seg.segment_slices(img8, kind="8bit")
    b = seg.segment_slices(hu, kind="hu")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("arr, kind, msg", [
    (np.zeros((64, 64, 3), np.uint8) + 0, "8bit", "colour"),
    (np.zeros((2, 64, 64, 3), np.uint8), "8bit", "colour"),
    (np.full((64, 64), 4000, np.uint16), "8bit", "0..255"),
    (np.full((64, 64), np.nan, np.float32), "hu", "NaN"),
    (np.zeros((8, 8), np.uint8), "8bit", "size"),
    (np.zeros((5, 6000, 40), np.uint8), "8bit", "size"),
    (np.zeros((0, 64, 64), np.uint8), "8bit", "empty"),
    (np.zeros((64, 64), np.uint8), "png", "kind"),
    (np.full((64, 64), 100, np.uint8), "hu", "8-bit"),
    (np.zeros((64, 64), bool), "8bit", "numeric"),
    (np.zeros((1, 2, 64, 64), np.float32), "hu", "shape"),
])
def test_bad_input_refused(seg, arr, kind, msg):
    with pytest.raises(InputError, match=msg):
        seg.segment_slices(arr, kind=kind)


def test_bad_spacing_refused(seg):
    with pytest.raises(InputError, match="spacing"):
        seg.segment_slices(_chest_slice_8bit(), kind="8bit", spacing=(0, 1, 1))


# ----------------------------------------------------------------------------- bad model files

def test_missing_model(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        Segmenter(tmp_path / "nope.onnx")


def test_corrupt_model(tmp_path):
    bad = tmp_path / "seg.onnx"
    bad.write_bytes(DEFAULT_MODEL.read_bytes()[:5000])
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        Segmenter(bad)
    bad.write_bytes(b"garbage" * 100)
    with pytest.raises(ModelError):
        load_segmenter(bad)


def test_onnx_without_pulmo_metadata(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])
    y = helper.make_tensor_value_info("lungs", TensorProto.FLOAT, ["N", 1, 8, 8])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["image"], ["lungs"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="metadata"):
        Segmenter(tmp_path / "m.onnx")


# ----------------------------------------------------------------------------- image folders

def _segment_folder(src, out, seg):
    """``pulmo ct segment SRC -o OUT`` through the library: one record per image (name, ok, error,
    warning), masks written for the images that could be segmented."""
    from pulmo.ct import AnalysisOptions, analyze, write_outputs

    a = analyze(src, AnalysisOptions(seg_model=seg.path, plugin_models=False, segment_only=True))
    write_outputs(a, out)
    return {r.name: {"status": "ok" if r.ok else "error", "error": r.error or "", **r.summary} for r in a.images}


def test_segment_image_folder(tmp_path, seg):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_chest_slice_8bit(300)[:, :280]).save(src / "a.png")
    g = _chest_slice_8bit(200)
    Image.fromarray(np.stack([g, g, g], -1)).save(src / "b.jpg", quality=95)          # grey stored as RGB: ok
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(src / "c.png")                                             # colour: refused
    Image.fromarray(np.full((64, 64), 3000, np.uint16)).save(src / "d.png")              # 16-bit: refused
    (src / "e.png").write_bytes(b"not an image")                                         # corrupt: refused
    (src / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    recs = _segment_folder(src, out, seg)
    assert set(recs) == {"a", "b", "c", "d", "e"}
    assert recs["a"]["status"] == "ok" and recs["b"]["status"] == "ok"
    assert "colour" in recs["c"]["error"] and "16-bit" in recs["d"]["error"] and "readable" in recs["e"]["error"]
    for name, shape in (("a", (300, 280)), ("b", (200, 200))):
        for kind in ("lungs", "lesions"):
            arr = np.asarray(Image.open(out / f"{name}_{kind}.png"))
            assert arr.shape == shape and arr.dtype == np.uint8 and arr.max() <= 2
    assert not (out / "c_lungs.png").exists()


def test_segment_image_folder_bad_folder(tmp_path):
    from pulmo.ct import analyze

    with pytest.raises(InputError, match="no such file or folder"):
        analyze(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="the folder is empty"):
        analyze(tmp_path / "empty")


def test_read_gray_image_modes(tmp_path):
    Image.fromarray(np.zeros((40, 40), np.uint8)).convert("1").save(tmp_path / "bw.png")
    with pytest.raises(InputError, match="1-bit"):
        read_gray_image(tmp_path / "bw.png")
    Image.fromarray(np.full((40, 40), 0.5, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(InputError, match="floating-point"):
        read_gray_image(tmp_path / "f.tif")


def test_not_a_ct_refused_or_flagged(tmp_path, seg):
    """Blank images are refused; images where the 'lung' is not darker than the rest are flagged."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((256, 256), 255, np.uint8)).save(src / "white.png")
    doc = np.full((256, 256), 230, np.uint8)
    doc[40:200:12, 20:230] = 20                         # a page of text lines
    Image.fromarray(doc).save(src / "document.png")
    Image.fromarray(np.tile(np.linspace(0, 255, 300), (200, 1)).astype(np.uint8)).save(src / "gradient.png")
    Image.fromarray(_chest_slice_8bit()).save(src / "chest.png")
    recs = _segment_folder(src, tmp_path / "out", seg)
    assert recs["white"]["status"] == "error" and "blank" in recs["white"]["error"]
    for name in ("document", "gradient"):
        assert recs[name]["status"] == "ok" and "chest-CT" in recs[name]["warning"]


# ----------------------------------------------------------------------------- flip test-time augmentation

def test_vote():
    from pulmo.ct.models.runtime import _counts, _decide

    a = np.array([[0, 1, 2, 1]], np.uint8)
    b = np.array([[0, 1, 2, 2]], np.uint8)
    c = np.array([[1, 0, 2, 2]], np.uint8)
    d = np.array([[0, 0, 0, 1]], np.uint8)
    counts = _counts([a[None], b[None], c[None], d[None]])
    assert counts.shape == (1, 3, 1, 4) and counts[0, :, 0, 3].tolist() == [0, 2, 2]
    assert _decide(counts).tolist() == [[[0, 1, 2, 1]]]


def test_tta_votes_are_resized_smoothly():
    """Resizing the vote counts (bilinear) before deciding follows a round border more closely
    than nearest-neighbour resizing of the decided labels (the network grid's blocks)."""
    from pulmo.ct.models.runtime import _decide, _resize_counts

    def disk(n, r):
        y, x = np.mgrid[:n, :n] + 0.5
        return (y - n / 2) ** 2 + (x - n / 2) ** 2 <= r * r

    for n, size in ((8, 13), (16, 37), (32, 45)):
        c1 = disk(n, 0.33 * n).astype(np.float32) * 4
        counts = np.stack([4 - c1, c1, np.zeros_like(c1)])[None]
        smooth = _decide(_resize_counts(counts, (size, size)))[0] == 1
        idx = np.minimum((np.arange(size) * n) // size, n - 1)
        nearest = (c1 > 0)[idx][:, idx]
        truth = disk(size, 0.33 * size)
        assert (smooth != truth).sum() < (nearest != truth).sum()
    assert np.array_equal(_resize_counts(counts, (n, n)), counts)


def test_tta_is_flip_equivariant(seg):
    """Voting over the flip group: segmenting a flipped image gives the flipped result
    (exactly, for lesions and the lung union); a wrong un-flip would break this."""
    rng = np.random.default_rng(1)
    img = _chest_slice_8bit().astype(np.int16)
    img = np.clip(img + rng.integers(-30, 30, img.shape), 0, 255).astype(np.uint8)
    img[100:130, 40:70] = 150  # an asymmetric dense patch in the image-left lung
    lu, le = seg.segment_slices(img, kind="8bit", tta=True)
    lu_f, le_f = seg.segment_slices(img[:, ::-1], kind="8bit", tta=True)
    assert np.array_equal(le_f[:, ::-1], le)
    assert np.array_equal(lu_f[:, ::-1] > 0, lu > 0)
    lu_v, le_v = seg.segment_slices(img[::-1], kind="8bit", tta=True)
    assert np.array_equal(le_v[::-1], le) and np.array_equal(lu_v[::-1], lu)


# ----------------------------------------------------------------------------- probability-averaging TTA

@pytest.fixture(scope="module")
def seg8():
    return load_segmenter(kind="8bit")


def test_8bit_model_averages_probabilities_over_sizes(seg8):
    """seg_8bit.onnx has a float logits output and TTA sizes; the HU model keeps label votes."""
    from pulmo.ct.models.runtime import class_probabilities

    assert seg8.metadata["tta_sizes"] == [224, 256, 288]
    assert load_segmenter(kind="hu").metadata["tta_sizes"] == []
    img = _chest_slice_8bit()
    x = seg8._prepare(img[None], "8bit", (288, 288))
    (logits,) = seg8._run(x, ("logits",))
    assert logits.shape == (1, 24, 144, 144)
    lu_p, le_p = class_probabilities(logits)
    assert lu_p.shape == le_p.shape == (1, 3, 288, 288) and lu_p.dtype == np.float32
    assert np.allclose(lu_p.sum(axis=1), 1, atol=1e-4) and np.allclose(le_p.sum(axis=1), 1, atol=1e-4)
    lu, le = seg8._run(x)  # the label outputs: the arg-max of the same logits, int8-rounded (ties)
    assert (lu_p.argmax(axis=1) == lu).mean() > 0.99
    near = lu > 0  # (lesion labels are also masked to the lung's surroundings in the graph)
    assert (le_p.argmax(axis=1)[near] == le[near]).mean() > 0.99


def test_probability_tta_matches_a_direct_computation(seg8):
    """segment_slices(tta=True) equals averaging, by hand, the softmax of the 12 views
    (4 flips x 3 sizes) resized to the slice, then taking the arg-max (lungs; lesions also
    within the lung margin). A wrong un-flip, a missed left/right swap or a wrong size would differ."""
    from PIL import Image

    from pulmo.ct.models.runtime import class_probabilities

    rng = np.random.default_rng(3)
    img = np.clip(_chest_slice_8bit(240).astype(int) + rng.integers(-25, 25, (240, 240)), 0, 255).astype(np.uint8)
    img[90:120, 50:80] = 150
    lungs, lesions = seg8.segment_slices(img, kind="8bit", tta=True)
    acc_lu = np.zeros((3, 240, 240))
    acc_le = np.zeros((3, 240, 240))
    for size in (224, 256, 288):
        small = np.asarray(Image.fromarray(img.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))
        for fy in (False, True):
            for fx in (False, True):
                view = small[::-1] if fy else small
                view = view[:, ::-1] if fx else view
                x = np.clip(np.ascontiguousarray(view)[None, None] / 255.0, 0, 1).astype(np.float32)
                pl, pe = (p[0] for p in class_probabilities(seg8._run(x, ("logits",))[0]))
                if fx:
                    pl, pe = pl[[0, 2, 1], :, ::-1], pe[:, :, ::-1]
                if fy:
                    pl, pe = pl[:, ::-1], pe[:, ::-1]
                for acc, p in ((acc_lu, pl), (acc_le, pe)):
                    for k in range(3):
                        acc[k] += np.asarray(Image.fromarray(np.ascontiguousarray(p[k]), mode="F")
                                             .resize((240, 240), Image.BILINEAR))
    ref_lu = acc_lu.argmax(axis=0)
    assert (ref_lu == lungs).mean() > 0.999
    assert (lungs == 1).sum() > 1000 and (lungs == 2).sum() > 1000
    ref_le = acc_le.argmax(axis=0)
    inside = lungs > 0
    assert (ref_le[inside] == lesions[inside]).mean() > 0.999


def test_probability_tta_is_flip_equivariant(seg8):
    rng = np.random.default_rng(1)
    img = _chest_slice_8bit().astype(np.int16)
    img = np.clip(img + rng.integers(-30, 30, img.shape), 0, 255).astype(np.uint8)
    img[100:130, 40:70] = 150
    lu, le = seg8.segment_slices(img, kind="8bit", tta=True)
    lu_f, le_f = seg8.segment_slices(img[:, ::-1], kind="8bit", tta=True)
    swap = np.array([0, 2, 1], np.uint8)
    assert (swap[lu_f[:, ::-1]] == lu).mean() > 0.999  # left and right trade places
    assert (le_f[:, ::-1] == le).mean() > 0.999
    lu_v, le_v = seg8.segment_slices(img[::-1], kind="8bit", tta=True)
    assert (lu_v[::-1] == lu).mean() > 0.999 and (le_v[::-1] == le).mean() > 0.999


def test_probability_tta_drops_lesions_outside_the_lung(seg8):
    """A dense patch in the body wall, far from both lungs, is not a lesion; batches give the
    same result as single slices."""
    img = _chest_slice_8bit(320)
    img[150:175, 20:45] = 150  # outside both lungs, inside the body
    imgs = np.stack([img, img[::-1].copy()] * 5)  # more than one TTA batch
    lungs, lesions = seg8.segment_slices(imgs, kind="8bit", tta=True)
    assert lungs.shape == lesions.shape == imgs.shape
    from scipy import ndimage
    near = ndimage.binary_dilation(lungs > 0, np.ones((1, 13, 13), bool))  # 2 network px at 320/256 -> 4 px reach
    assert not (lesions > 0)[~near].any()
    assert not lesions[:, 150:175, 20:45].any()
    one_lu, one_le = seg8.segment_slices(img, kind="8bit", tta=True)
    assert np.array_equal(one_lu, lungs[0]) and np.array_equal(one_le, lesions[0])


@pytest.mark.parametrize("key, value, match", [
    ("pulmo.tta_sizes", "abc", "metadata"), ("pulmo.tta_sizes", "8,256", "metadata"),
    ("pulmo.tta_sizes", "256,99999", "metadata"),
    *[("pulmo.minor_lesion_share", v, "minor_lesion_share") for v in ("abc", "0.5", "-0.1", "nan")]])
def test_bad_metadata_values(tmp_path, key, value, match):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(DEFAULT_MODEL_8BIT))
    for p in model.metadata_props:
        if p.key == key:
            p.value = value
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(ModelError, match=match):
        Segmenter(tmp_path / "m.onnx")


def test_merge_minor_lesion_class():
    from pulmo.ct.models.runtime import merge_minor_lesion_class

    sl = np.zeros((2, 20, 20), np.uint8)
    sl[0, :10] = 1            # 200 px ground glass ...
    sl[0, 15, :3] = 2         # ... and a 3 px consolidation speck (1.5 %)
    sl[1, :10] = 2            # 200 px consolidation ...
    sl[1, 15, :5] = 1         # ... and a 5 px ground-glass speck (2.4 %)
    out = merge_minor_lesion_class(sl, 0.02)
    assert out.dtype == np.uint8 and out is not sl
    assert np.array_equal(out > 0, sl > 0)            # the lesion extent never changes
    assert set(np.unique(out[0])) == {0, 1}           # the speck became ground glass
    assert np.array_equal(out[1], sl[1])              # 2.4 % >= 2 %: kept
    assert np.array_equal(merge_minor_lesion_class(sl, 0.03)[1] > 0, sl[1] > 0)
    assert set(np.unique(merge_minor_lesion_class(sl, 0.03)[1])) == {0, 2}
    assert np.array_equal(merge_minor_lesion_class(sl, 0.0), sl)
    assert np.array_equal(merge_minor_lesion_class(sl[0], 0.02), out[0])   # one (H, W) slice
    empty = np.zeros((1, 5, 5), np.uint8)
    assert np.array_equal(merge_minor_lesion_class(empty, 0.02), empty)
    assert sl[0, 15, 0] == 2                          # the input is not modified


def test_minor_lesion_share_metadata():
    assert load_segmenter(kind="8bit").metadata["minor_lesion_share"] == 0.02
    assert load_segmenter(kind="hu").metadata["minor_lesion_share"] == 0.0  # volumes: no such rule


def test_set_minor_lesion_share_keeps_the_weights(tmp_path):
    onnx = pytest.importorskip("onnx")
    from pulmo.train import seg as train_seg

    out = tmp_path / "m.onnx"
    assert train_seg.main(["set-minor-lesion-share", str(DEFAULT_MODEL_8BIT), str(out), "--share", "0.1",
                           "--version", "test-9.9"]) == 0
    s = Segmenter(out)
    assert s.metadata["minor_lesion_share"] == 0.1 and s.version == "test-9.9"
    assert onnx.load(str(out)).graph == onnx.load(str(DEFAULT_MODEL_8BIT)).graph
    with pytest.raises(SystemExit, match="pulmo.tta_sizes"):
        train_seg.main(["set-minor-lesion-share", str(DEFAULT_MODEL), str(tmp_path / "x.onnx"), "--share", "0.1"])
    with pytest.raises(SystemExit, match=r"\[0, 0.5\)"):
        train_seg.main(["set-minor-lesion-share", str(DEFAULT_MODEL_8BIT), str(tmp_path / "x.onnx"), "--share", "2"])
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(SystemExit, match="not a readable ONNX model"):
        train_seg.main(["set-minor-lesion-share", str(tmp_path / "bad.onnx"), str(tmp_path / "x.onnx"), "--share", "0"])
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(SystemExit, match="cannot write"):
        train_seg.main(["set-minor-lesion-share", str(DEFAULT_MODEL_8BIT), str(tmp_path / "no" / "x.onnx"),
                        "--share", "0.02"])
