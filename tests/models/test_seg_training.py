"""Training code (pulmo.train): labels, splits, augmentation, losses, export. Needs torch (the
``train`` extra); skipped without it. Shared-data parts skip when ../shared is absent."""

from __future__ import annotations

import numpy as np
import pytest

from pulmo.errors import InputError, ModelError
from pulmo.train import seg_data as D

pytestmark = pytest.mark.slow  # minutes of training / accuracy runs: the full suite only

try:
    import torch
except ImportError:  # the 'train' extra is not installed
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch (the 'train' extra) is not installed")


def test_split_lungs_left_right():
    m = np.zeros((64, 64), bool)
    m[10:50, 5:25] = True
    m[10:50, 40:60] = True
    lab = D.split_lungs(m)
    assert set(np.unique(lab[:, :30])) == {0, 1} and set(np.unique(lab[:, 35:])) == {0, 2}
    merged = m.copy()
    merged[20:25, 25:40] = True  # lungs touching in the middle: split at the thinnest column
    lab = D.split_lungs(merged)
    assert (lab[:, :20] != 2).all() and (lab[:, 45:] != 1).all() and (lab > 0).sum() == merged.sum()


def test_simulated_lesions_inside_lung():
    rng = np.random.default_rng(0)
    hu = np.full((128, 128), 40.0, np.float32)
    lungs = np.zeros((128, 128), np.uint8)
    lungs[20:110, 10:60], lungs[20:110, 68:118] = 1, 2
    hu[lungs > 0] = -850
    seen = set()
    for _ in range(10):
        new, lab = D.simulate_lesions(hu, lungs, rng)
        assert not (lab > 0)[lungs == 0].any()
        seen |= set(np.unique(lab).tolist())
        if (lab == 1).any():
            assert new[lab == 1].mean() > -700  # ground glass is denser than the lung
        if (lab == 2).any():
            assert new[lab == 2].mean() > -300  # consolidation is near soft tissue
    assert seen == {0, 1, 2}


def test_heldout_splits_disjoint():
    ms_root = D.default_data_root()
    if not (ms_root / "seg2d" / "medseg-train").is_dir():
        pytest.skip("shared test data not available: ../shared/data/seg2d")
    train, test = D.medseg_names(ms_root)
    assert len(test) == D.MEDSEG_N_TEST and not set(train) & set(test) and len(train) + len(test) == 50
    assert D.PNG_TEST_START - D.PNG_GAP > 1000


@needs_torch
def test_augment_swaps_left_right_with_flips():
    import torch.nn.functional as F

    from pulmo.train.seg import augment

    x = torch.zeros(16, 1, 32, 32)
    x[:, :, :, :16] = 1.0   # bright on the image's left: tells where the original left went
    lu = torch.zeros(16, 32, 32, dtype=torch.long)
    lu[:, 8:24, 2:14], lu[:, 8:24, 18:30] = 1, 2
    le = torch.zeros(16, 32, 32, dtype=torch.long)
    lm = torch.full((16,), D.LUNG_LR)
    gen = torch.Generator().manual_seed(3)
    xa, lua, lea, lma = augment(torch, F, x.clone(), lu.clone(), le.clone(), lm.clone(), gen)
    for i in range(16):
        if lma[i] != D.LUNG_LR:
            continue  # odd 90-degree rotation: only the union is supervised
        ones = (lua[i] == 1).nonzero()
        twos = (lua[i] == 2).nonzero()
        if len(ones) and len(twos):
            assert ones[:, 1].float().mean() < twos[:, 1].float().mean()  # 1 stays on the image's left
    assert (lma == D.LUNG_BINARY).any()


@needs_torch
def test_augment_keep_intensity_is_geometric_only():
    """Slices marked ``keep_intensity`` are moved but keep their grey levels; the others do not."""
    import torch.nn.functional as F

    from pulmo.train.seg import augment

    n = 8
    x = torch.full((n, 1, 32, 32), 0.5)
    lu = torch.zeros(n, 32, 32, dtype=torch.long)
    le = torch.zeros(n, 32, 32, dtype=torch.long)
    lm = torch.full((n,), D.LUNG_LR)
    keep = torch.tensor([True, False] * (n // 2))
    xa, *_ = augment(torch, F, x.clone(), lu, le, lm, torch.Generator().manual_seed(1), keep_intensity=keep)
    inside = xa[:, 0, 12:20, 12:20]  # the centre stays inside the moved image
    assert torch.allclose(inside[keep], torch.tensor(0.5))
    assert all(not torch.allclose(inside[i], torch.tensor(0.5), atol=1e-3) for i in range(n) if not keep[i])


@needs_torch
def test_losses_finite_and_marginal():
    import torch.nn.functional as F

    from pulmo.train.seg import losses

    n = 4
    lung_logits = torch.randn(n, 3, 16, 16, requires_grad=True)
    les_logits = torch.randn(n, 3, 16, 16, requires_grad=True)
    lu = torch.randint(0, 3, (n, 16, 16))
    le = torch.randint(0, 3, (n, 16, 16))
    lm = torch.tensor([D.LUNG_LR, D.LUNG_BINARY, D.LUNG_POSITIVE_ONLY, D.LUNG_LR])
    em = torch.tensor([D.LES_FULL, D.LES_BINARY, D.LES_FULL, D.LES_BINARY])
    total, parts = losses(torch, F, lung_logits, les_logits, lu, le, lm, em)
    assert torch.isfinite(total) and {"lung_ce", "les_ce", "les_bin"} <= set(parts)
    total.backward()
    assert les_logits.grad.abs().sum() > 0
    # the binary (marginal) lesion loss cannot tell GGO from consolidation: swapping them is free
    em = torch.full((n,), D.LES_BINARY)
    le_bin = (le > 0).long()
    a, _ = losses(torch, F, lung_logits, les_logits, lu, le_bin, lm, em)
    b, _ = losses(torch, F, lung_logits, les_logits[:, [0, 2, 1]], lu, le_bin, lm, em)
    assert torch.allclose(a, b)


@needs_torch
@pytest.mark.parametrize("arch", ["seg-2d-1", "seg-2d-2", "seg-2d-2f", "seg-2d-3"])
def test_export_wrapper_matches_argmax(tmp_path, arch):
    from pulmo.train.seg_net import ExportWrapper, SegNet

    torch.manual_seed(0)
    net = SegNet.from_arch(arch).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        lung_logits, les_logits = net(x)
        lu, le = ExportWrapper(net, margin=0)(x)
    assert lu.shape == (2, 64, 64) and lu.dtype == torch.uint8
    assert torch.equal(lu.long(), lung_logits.argmax(1)) and torch.equal(le.long(), les_logits.argmax(1))
    with torch.no_grad():
        lu2, le2 = ExportWrapper(net, margin=2)(x)
    far = torch.nn.functional.max_pool2d((lu2 > 0).float()[:, None], 5, 1, 2)[:, 0] == 0
    assert (le2[far] == 0).all()


def _tiny_cache(path, n=4):
    """A training cache of ``n`` random 256x256 slices per source (two box lungs), written to ``path``."""
    rng = np.random.default_rng(0)
    lu = np.zeros((n, 256, 256), np.uint8)
    lu[:, 60:200, 30:120], lu[:, 60:200, 136:226] = 1, 2
    np.savez_compressed(path, png_im=rng.integers(0, 255, (n, 256, 256), dtype=np.uint8), png_lu=lu,
                        png_le=(rng.random((n, 256, 256)) > 0.9).astype(np.uint8),
                        ms_im=rng.integers(0, 255, (n, 256, 256), dtype=np.uint8),
                        ms_le=rng.integers(0, 3, (n, 256, 256), dtype=np.uint8),
                        hu=np.where(lu > 0, -850, 40).astype(np.float32), hu_lu=lu)
    return path


@needs_torch
def test_training_smoke_and_resume(tmp_path):
    """A few iterations on a tiny synthetic cache; the second call resumes from the checkpoint."""
    from pulmo.train import seg

    cache = _tiny_cache(tmp_path / "cache.npz")
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--cache", str(cache), "--iters", "2", "--batch", "2", "--ckpt-every", "1"]
    assert seg.main(argv) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=False)["iter"] == 2
    argv[argv.index("--iters") + 1] = "3"
    assert seg.main(argv) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=False)["iter"] == 3
    assert "resumed" not in (out / "train.log").read_text()  # log holds losses only
    assert seg.main(["export", "--out", str(out), "--model", str(tmp_path / "m.onnx"), "--cache", str(cache)]) == 0
    from pulmo.ct.models import Segmenter

    s = Segmenter(tmp_path / "m.onnx", threads=1)
    assert s.version == "seg-2d-3.0"  # the default (shipped) variant, named by the checkpoint
    lungs, lesions = s.segment_slices(np.zeros((2, 100, 120), np.uint8), kind="8bit")
    assert lungs.shape == (2, 100, 120)
    # a checkpoint of one variant is never resumed as another
    with pytest.raises(SystemExit, match="seg-2d-3 network, not seg-2d-1"):
        seg.main(argv + ["--arch", "seg-2d-1"])
    with pytest.raises(SystemExit, match="unknown network variant"):
        seg.main(["train", "--out", str(tmp_path / "other"), "--cache", str(cache), "--iters", "1",
                  "--arch", "seg-9"])


@needs_torch
def test_dropout_acts_in_training_only_and_leaves_the_weights_alone(tmp_path):
    """``train --dropout``: the head's input is dropped in training mode only; the parameters (so
    checkpoints and exports) are those of the network without it; a bad value is refused first."""
    from pulmo.train import seg
    from pulmo.train.seg_net import SegNet

    torch.manual_seed(0)
    plain, dropped = SegNet.from_arch("seg-2d-1"), SegNet.from_arch("seg-2d-1", dropout=0.5)
    assert plain.state_dict().keys() == dropped.state_dict().keys()
    dropped.load_state_dict(plain.state_dict())
    x = torch.rand(1, 1, 64, 64)
    plain.eval()
    dropped.eval()
    with torch.no_grad():
        assert torch.equal(plain(x)[1], dropped(x)[1])
    dropped.train()                          # (this also moves its batch-norm statistics)
    with torch.no_grad():
        a, b = dropped(x)[1], dropped(x)[1]
    assert not torch.allclose(a, b)          # a fresh mask each pass
    for bad in ("1", "-0.1"):
        with pytest.raises(SystemExit, match="--dropout must lie in 0..1"):
            seg.main(["train", "--out", str(tmp_path / "r"), "--cache", str(tmp_path / "none.npz"),
                      "--dropout", bad])
    assert not (tmp_path / "r").exists()


def _calibration_cache(tmp_path):
    """A random cache with the arrays int8 calibration reads, and an empty run folder."""
    rng = np.random.default_rng(0)
    cache = tmp_path / "cache.npz"
    np.savez_compressed(cache, png_im=rng.integers(0, 255, (64, 256, 256), dtype=np.uint8),
                        ms_im=rng.integers(0, 255, (16, 256, 256), dtype=np.uint8),
                        hu=rng.uniform(-1000, 200, (64, 256, 256)).astype(np.float32))
    out = tmp_path / "run"
    out.mkdir()
    return cache, out


@needs_torch
def test_int8_export_keeps_image_convolution_float(tmp_path):
    """``quantize`` leaves the image convolution in float by default; ``float_image_conv`` turns an
    all-int8 graph into the same form, and the result still runs as a Pulmo segmenter."""
    import onnx

    from pulmo.ct.models import Segmenter
    from pulmo.train import seg
    from pulmo.train.seg_net import SegNet

    cache, out = _calibration_cache(tmp_path)
    torch.save({"arch": "seg-2d-1", "model": SegNet.from_arch("seg-2d-1").state_dict()}, out / "final.pt")
    assert seg.main(["export", "--out", str(out), "--model", str(tmp_path / "m.onnx"), "--cache", str(cache)]) == 0

    def image_users(path):
        g = onnx.load(str(path)).graph
        return [n.op_type for n in g.node if g.input[0].name in n.input]

    q = seg.quantize(out / "seg_fp32.onnx", out, cache)
    assert image_users(q) == ["Conv"]
    all_int8 = seg.quantize(out / "seg_fp32.onnx", out, cache, fp32_nodes=())
    assert image_users(all_int8) == ["QuantizeLinear"]
    fixed = tmp_path / "fixed.onnx"
    meta = onnx.load(str(tmp_path / "m.onnx")).metadata_props
    m = onnx.load(str(all_int8))
    m.metadata_props.extend(meta)
    onnx.save(m, str(all_int8))
    assert seg.float_image_conv(all_int8, fixed, version="seg-2d-1.9") == "/stem/stem.0/Conv"
    assert image_users(fixed) == ["Conv"]
    s = Segmenter(fixed, threads=1)
    assert s.version == "seg-2d-1.9"
    lungs, _ = s.segment_slices(np.zeros((1, 80, 90), np.uint8), kind="8bit")
    assert lungs.shape == (1, 80, 90)


@needs_torch
def test_int8_export_with_tta_sizes_has_float_probabilities(tmp_path):
    """``export --tta-sizes`` adds the float head output ``logits`` on a graph that takes any
    multiple-of-16 input size; int8 quantisation leaves it in float (not rounded to 8-bit levels),
    and its soft-max agrees with the label outputs; the runtime then averages the probabilities."""
    import onnx

    from pulmo.ct.models import Segmenter
    from pulmo.train import seg
    from pulmo.train.seg_net import SegNet

    rng = np.random.default_rng(0)
    cache, out = _calibration_cache(tmp_path)
    torch.manual_seed(0)
    torch.save({"arch": "seg-2d-1", "model": SegNet.from_arch("seg-2d-1").state_dict()}, out / "final.pt")
    for bad in ("250", "224,abc"):
        with pytest.raises(SystemExit, match="multiples of 16"):
            seg.main(["export", "--out", str(out), "--model", str(tmp_path / "bad.onnx"), "--tta-sizes", bad])
    model = tmp_path / "m.onnx"
    assert seg.main(["export", "--out", str(out), "--model", str(model), "--cache", str(cache), "--int8",
                     "--tta-sizes", "224,256"]) == 0
    g = onnx.load(str(model)).graph
    assert [o.name for o in g.output] == ["lungs", "lesions", "logits"]
    producer = {o: n for n in g.node for o in n.output}
    assert producer["logits"].op_type == "Conv"
    s = Segmenter(model, threads=1)
    assert s.metadata["tta_sizes"] == [224, 256] and s.metadata["quantization"] == "int8-qdq"
    x = np.random.default_rng(1).random((1, 1, 224, 224), dtype=np.float32)
    lu, _, logits = s._run(x, ("lungs", "lesions", "logits"))
    assert logits.shape == (1, 24, 112, 112)
    assert len(np.unique(logits)) > 256  # not 8-bit levels
    from pulmo.ct.models.runtime import class_probabilities

    probs = class_probabilities(logits)[0]
    assert probs.shape == (1, 3, 224, 224) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (probs.argmax(axis=1) == lu).mean() > 0.99
    lungs, lesions = s.segment_slices(rng.integers(0, 255, (2, 100, 120)).astype(np.uint8), kind="8bit", tta=True)
    assert lungs.shape == lesions.shape == (2, 100, 120)
    assert s.metadata["minor_lesion_share"] == 0.0
    ruled = tmp_path / "ruled.onnx"
    assert seg.main(["export", "--out", str(out), "--model", str(ruled), "--tta-sizes", "224",
                     "--minor-lesion-share", "0.02"]) == 0
    assert Segmenter(ruled, threads=1).metadata["minor_lesion_share"] == 0.02
    with pytest.raises(SystemExit, match="give --tta-sizes too"):
        seg.main(["export", "--out", str(out), "--model", str(tmp_path / "bad.onnx"), "--minor-lesion-share", "0.02"])
    with pytest.raises(SystemExit, match=r"must be in \[0, 0.5\)"):
        seg.main(["export", "--out", str(out), "--model", str(tmp_path / "bad.onnx"), "--tta-sizes", "224",
                  "--minor-lesion-share", "0.7"])
    assert not (tmp_path / "bad.onnx").exists()


def test_sampler_refuses_impossible_medseg_share():
    from pulmo.train.seg import Sampler

    data = {"ms_im": np.zeros((1, 8, 8), np.uint8)}
    with pytest.raises(InputError, match="'p_medseg' must lie in 0..0.55"):
        Sampler(data, np.random.default_rng(0), p_ms=0.6)
    assert Sampler(data, np.random.default_rng(0), p_ms=0.55).p[2] == 0  # no LIDC slices, no error


def test_sampler_png_share_sets_the_batch_mix():
    from pulmo.train.seg import Sampler

    data = {"ms_im": np.zeros((1, 8, 8), np.uint8)}
    s = Sampler(data, np.random.default_rng(0), p_ms=0.7, p_png=0.25)
    assert np.allclose(s.p, [0.7, 0.25, 0.05])
    with pytest.raises(InputError, match="'p_medseg' must lie in 0..0.75"):
        Sampler(data, np.random.default_rng(0), p_ms=0.8, p_png=0.25)
    with pytest.raises(InputError, match="'p_png' must lie in 0..1"):
        Sampler(data, np.random.default_rng(0), p_ms=0.1, p_png=1.5)


@needs_torch
def test_pseudo_labelled_png_slices_take_the_three_class_loss():
    """LES_PSEUDO slices are scored like full labels: swapping GGO and consolidation costs loss
    (it is free for binary slices, see test_losses_finite_and_marginal)."""
    import torch.nn.functional as F

    from pulmo.train.seg import losses

    torch.manual_seed(0)
    n = 2
    lung_logits, les_logits = torch.randn(n, 3, 16, 16), torch.randn(n, 3, 16, 16)
    lu = torch.randint(0, 3, (n, 16, 16))
    le = torch.randint(0, 3, (n, 16, 16))
    lm = torch.full((n,), D.LUNG_LR)
    pseudo = torch.full((n,), D.LES_PSEUDO)
    a, _ = losses(torch, F, lung_logits, les_logits, lu, le, lm, pseudo)
    full, _ = losses(torch, F, lung_logits, les_logits, lu, le, lm, torch.full((n,), D.LES_FULL))
    swapped, _ = losses(torch, F, lung_logits, les_logits[:, [0, 2, 1]], lu, le, lm, pseudo)
    assert torch.allclose(a, full) and not torch.allclose(a, swapped)


def test_sampler_uses_pseudo_labels_for_png_slices():
    from pulmo.train.seg import Sampler

    le = np.zeros((1, 8, 8), np.uint8)
    le[0, 2:5, 2:5] = 1
    le3 = le * 2
    data = {"ms_im": np.zeros((1, 8, 8), np.uint8), "png_im": np.zeros((1, 8, 8), np.uint8),
            "png_lu": np.ones((1, 8, 8), np.uint8), "png_le": le}
    x, lu, les, lm, em = Sampler(data, np.random.default_rng(0), p_ms=0, p_png=1).batch(3)
    assert (em == D.LES_BINARY).all() and les.max() == 1
    x, lu, les, lm, em = Sampler({**data, "png_le3": le3}, np.random.default_rng(0), p_ms=0, p_png=1).batch(3)
    assert (em == D.LES_PSEUDO).all() and les.max() == 2


def test_png_pseudo_file_is_checked_against_the_cache(tmp_path):
    from pulmo.train.seg import load_png_pseudo

    png_le = np.zeros((3, 8, 8), np.uint8)
    png_le[:, 2:6, 2:6] = 1
    good = png_le.copy()
    good[:, 2:4, 2:6] = 2
    np.savez(tmp_path / "ok.npz", le3=good)
    assert np.array_equal(load_png_pseudo(tmp_path / "ok.npz", png_le), good)
    with pytest.raises(InputError, match="no such file"):
        load_png_pseudo(tmp_path / "missing.npz", png_le)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a pseudo-labels .npz"):
        load_png_pseudo(tmp_path / "junk.npz", png_le)
    np.savez(tmp_path / "short.npz", le3=good[:2])
    with pytest.raises(InputError, match="do not fit the cache"):
        load_png_pseudo(tmp_path / "short.npz", png_le)
    wrong = good.copy()
    wrong[0, 0, 0] = 1  # a lesion pixel outside the reference infection mask
    np.savez(tmp_path / "wrong.npz", le3=wrong)
    with pytest.raises(InputError, match="lesion extent differs"):
        load_png_pseudo(tmp_path / "wrong.npz", png_le)


def test_split_infection_keeps_the_reference_extent(tmp_path):
    """Labels 1/2 exactly on the infection mask, 0 elsewhere, and inside the mask the class the
    runtime's own test-time augmentation gives wherever it finds a lesion (the shipped 8-bit
    network as teacher, without its minor-class rule)."""
    pytest.importorskip("onnx")
    from pulmo.ct.models import Segmenter
    from pulmo.ct.models.runtime import default_model
    from pulmo.train.seg import set_minor_lesion_share
    from pulmo.train.seg_pseudo import split_infection

    ms = D.default_data_root() / "seg2d" / "medseg-train"
    if not ms.is_dir():
        pytest.skip("shared test data not available: ../shared/data/seg2d/medseg-train")
    from PIL import Image

    from pulmo.ct.io.grey_image import read_gray_image

    set_minor_lesion_share(default_model("8bit"), tmp_path / "no_rule.onnx", 0.0)
    teacher = Segmenter(tmp_path / "no_rule.onnx", threads=1)
    img = read_gray_image(ms / "images" / "1.jpg")[None]  # a training slice with GGO and consolidation
    inf = (np.asarray(Image.open(ms / "labels" / "1.png")) > 0)[None].astype(np.uint8)
    out = split_infection(teacher, img, inf)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert ((out > 0) == (inf > 0)).all() and set(np.unique(out[inf > 0])) <= {1, 2}
    _, runtime = teacher.segment_slices(img, kind="8bit", tta=True)
    both = (runtime > 0) & (inf > 0)
    assert both.sum() > 1000 and set(np.unique(runtime[both])) == {1, 2}
    assert np.array_equal(out[both], runtime[both])
    with pytest.raises(ValueError, match="must both be"):
        split_infection(teacher, img, inf[:, :10])
    with pytest.raises(ValueError, match="no tta_sizes"):
        split_infection(Segmenter(default_model("hu"), threads=1), img, inf)


def test_pseudo_labels_command_refuses_a_bad_teacher(tmp_path):
    """Checked before the data cache is read: a missing or corrupt file, or one without tta_sizes."""
    from pulmo.ct.models.runtime import default_model
    from pulmo.train import seg

    out = tmp_path / "pseudo.npz"
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    cases = [(tmp_path / "missing.onnx", "not found"), (junk, "not a loadable ONNX model"),
             (default_model("hu"), "no tta_sizes")]
    for model, msg in cases:
        with pytest.raises(SystemExit, match=msg):
            seg.main(["pseudo-labels", "--model", str(model), "--out", str(out),
                      "--cache", str(tmp_path / "no-cache.npz"), "--data", str(tmp_path / "no-data")])
    # a good teacher, but neither a cache nor the training data
    with pytest.raises(SystemExit, match="no training data at seg2d/covid19-ct-seg-png/ct"):
        seg.main(["pseudo-labels", "--model", str(default_model("8bit")), "--out", str(out),
                  "--cache", str(tmp_path / "no-cache.npz"), "--data", str(tmp_path / "no-data")])
    assert not out.exists()


def test_pseudo_labels_command_on_a_small_cache(tmp_path):
    """End to end on a 2-slice cache: labels 1/2 exactly on the infection masks, usable by
    ``train --png-pseudo``; an unwritable --out is refused with nothing left behind."""
    from pulmo.ct.models.runtime import default_model
    from pulmo.train import seg

    rng = np.random.default_rng(0)
    le = np.zeros((2, 256, 256), np.uint8)
    le[:, 90:140, 60:110] = 1
    cache = tmp_path / "cache.npz"
    np.savez(cache, png_im=rng.integers(0, 255, (2, 256, 256), dtype=np.uint8), png_le=le)
    out = tmp_path / "pseudo.npz"
    argv = ["pseudo-labels", "--model", str(default_model("8bit")), "--cache", str(cache), "--threads", "1"]
    assert seg.main(argv + ["--out", str(out)]) == 0
    le3 = seg.load_png_pseudo(out, le)
    assert ((le3 > 0) == (le > 0)).all()
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SystemExit, match="cannot write"):
        seg.main(argv + ["--out", str(tmp_path / "a_file" / "pseudo.npz")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "cache.npz", "pseudo.npz"]


def _random_bn_net(arch):
    """A network whose batch norms have non-trivial statistics and affine parameters."""
    from pulmo.train.seg_net import SegNet

    torch.manual_seed(0)
    net = SegNet.from_arch(arch)
    net.train()
    with torch.no_grad():
        net(torch.rand(4, 1, 256, 256))
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


@needs_torch
def test_init_from_an_fp32_export_reproduces_the_network(tmp_path):
    """The export folds batch norm into the convolutions; initialising a fresh network from the
    file gives back the same function (eval mode exactly, training mode on the calibration
    batch too), and the training command starts from it."""
    from pulmo.train import seg
    from pulmo.train.seg_init import init_from_onnx, onnx_conv_weights
    from pulmo.train.seg_net import SegNet

    net = _random_bn_net("seg-2d-1")
    cache, out = _calibration_cache(tmp_path)
    torch.save({"arch": "seg-2d-1", "model": net.state_dict()}, out / "final.pt")
    model = tmp_path / "m.onnx"
    assert seg.main(["export", "--out", str(out), "--model", str(model), "--cache", str(cache)]) == 0
    x = np.random.default_rng(1).random((6, 256, 256)).astype(np.float32)
    fresh = SegNet.from_arch("seg-2d-1")
    assert init_from_onnx(fresh, onnx_conv_weights(model), x) == 15
    xt = torch.from_numpy(x)[:, None]
    with torch.no_grad():
        want = net.eval().features(xt)
        assert (fresh.eval().features(xt) - want).abs().max() < 1e-4 * want.abs().max()
        assert (fresh.train().features(xt) - want).abs().max() < 1e-3 * want.abs().max()
    # a random network would be far off: the comparison can fail
    with torch.no_grad():
        assert (SegNet.from_arch("seg-2d-1").eval().features(xt) - want).abs().max() > 0.1 * want.abs().max()
    small = _tiny_cache(tmp_path / "small.npz")
    run = tmp_path / "ft"
    argv = ["train", "--arch", "seg-2d-1", "--out", str(run), "--cache", str(small), "--iters", "1",
            "--batch", "2", "--lr", "0", "--init-onnx", str(model)]
    assert seg.main(argv) == 0  # lr 0: the weights stay those of the file
    assert "initialised 15 convolutions" not in (run / "train.log").read_text()  # the log holds losses
    tuned = torch.load(run / "final.pt", weights_only=False)["model"]
    for name, value in fresh.state_dict().items():
        if name.endswith(".weight") and value.ndim == 4:  # the convolutions: the file's, untouched at lr 0
            assert torch.equal(tuned[name], value), name
    assert seg.main(argv[:-2]) == 0 and seg.main(argv) == 0  # with a checkpoint there: resumed, file ignored


@needs_torch
def test_init_from_the_shipped_int8_model(tmp_path):
    """The int8 weights of seg_8bit.onnx are dequantised into a seg-2d-3 network that labels like
    the file does under onnxruntime; another variant, a junk file and a missing one are refused,
    before any data are read."""
    from pulmo.ct.models.runtime import default_model
    from pulmo.train import seg
    from pulmo.train.seg_init import init_from_onnx, onnx_conv_weights
    from pulmo.train.seg_net import SegNet

    import onnxruntime as ort

    shipped = default_model("8bit")
    yy, xx = np.mgrid[:256, :256]
    phantom = np.full((256, 256), 0.55, np.float32)  # soft tissue, two dark lungs, a dense patch
    phantom[((yy - 128) / 80) ** 2 + ((xx - 80) / 45) ** 2 < 1] = 0.08
    phantom[((yy - 128) / 80) ** 2 + ((xx - 176) / 45) ** 2 < 1] = 0.08
    phantom[120:140, 60:85] = 0.45
    x = np.stack([phantom, phantom[:, ::-1].copy(), np.clip(phantom + 0.05, 0, 1)])
    net = SegNet.from_arch("seg-2d-3")
    assert init_from_onnx(net, onnx_conv_weights(shipped), x) == 18
    lu, le = ort.InferenceSession(str(shipped), providers=["CPUExecutionProvider"]).run(
        ["lungs", "lesions"], {"image": x[:, None]})
    with torch.no_grad():
        tl, te = net.eval()(torch.from_numpy(x)[:, None])
    assert (lu > 0).sum() > 10000  # the file finds lungs in the phantom
    # int8 activations (onnxruntime) against float ones (torch): a few boundary pixels differ; a
    # wrong or shifted weight mapping labels at random
    assert (tl.argmax(1).numpy() == lu).mean() > 0.95
    near = torch.nn.functional.max_pool2d(torch.from_numpy(lu > 0).float()[:, None], 5, 1, 2)[:, 0].numpy() > 0
    assert ((te.argmax(1).numpy() * near) == le).mean() > 0.95
    with pytest.raises(ModelError, match="do not fit this 'arch'"):
        init_from_onnx(SegNet.from_arch("seg-2d-1"), onnx_conv_weights(shipped), x)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    for bad, msg in ((junk, "not a readable ONNX model"), (tmp_path / "missing.onnx", "not a readable ONNX model"),
                     (shipped, "do not fit this --arch")):
        with pytest.raises(SystemExit, match=msg):
            seg.main(["train", "--arch", "seg-2d-1", "--out", str(tmp_path / "run"), "--init-onnx", str(bad),
                      "--cache", str(tmp_path / "no-cache.npz"), "--data", str(tmp_path / "no-data")])
    assert not (tmp_path / "run").exists()


@needs_torch
def test_onnx_conv_weights_dequantises_and_refuses_non_constant_weights(tmp_path):
    """Per-channel and per-tensor DequantizeLinear (the zero point is optional in ONNX) give
    ``scale * (q - zero_point)``; a convolution whose weight is computed at run time is refused."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pulmo.train.seg_init import onnx_conv_weights

    q = np.arange(-8, 10, dtype=np.int8).reshape(2, 1, 3, 3)
    inits = [numpy_helper.from_array(q, "wq"), numpy_helper.from_array(np.array([0.5, 2.0], np.float32), "ws"),
             numpy_helper.from_array(np.array([1, -1], np.int8), "wz"),
             numpy_helper.from_array(np.array(0.25, np.float32), "ts"),
             numpy_helper.from_array(np.array([0.1, 0.2], np.float32), "b")]
    nodes = [helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w1"], axis=0),
             helper.make_node("DequantizeLinear", ["wq", "ts"], ["w2"]),
             helper.make_node("Conv", ["x", "w1", "b"], ["y1"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w2"], ["y2"], pads=[1, 1, 1, 1])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])
    ys = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y1", "y2")]
    path = tmp_path / "q.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], ys, inits)), str(path))
    (w1, b1), (w2, b2) = onnx_conv_weights(path)
    assert np.allclose(w1[0], 0.5 * (q[0] - 1)) and np.allclose(w1[1], 2.0 * (q[1] + 1))
    assert np.allclose(b1, [0.1, 0.2]) and b2 is None
    assert np.allclose(w2, 0.25 * q)
    nodes[1] = helper.make_node("Identity", ["x"], ["w2"])  # a weight that is not a constant
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], ys, inits)), str(path))
    with pytest.raises(ModelError, match="is not a constant"):
        onnx_conv_weights(path)


@needs_torch
def test_train_and_export_as_library_functions(tmp_path):
    """``train(TrainConfig(...))`` with explicit parameters, no command line: progress lines go to
    ``log``, the result names the files; a second call resumes; ``export`` returns the file."""
    import dataclasses

    from pulmo.ct.models import Segmenter
    from pulmo.train.seg import TrainConfig, TrainResult, export, train

    config = TrainConfig(out=str(tmp_path / "run"), cache=_tiny_cache(tmp_path / "cache.npz"), arch="seg-2d-1",
                         iters=2, batch=2, ckpt_every=1)
    assert config.out == tmp_path / "run"  # paths as Path
    lines = []
    result = train(config, log=lines.append)
    assert isinstance(result, TrainResult) and (result.iterations, result.started) == (2, 0)
    assert result.final.is_file() and torch.load(result.checkpoint, weights_only=False)["iter"] == 2
    assert not lines  # a fresh run logs every 20 iterations
    again = train(dataclasses.replace(config, iters=3), log=lines.append)
    assert again.started == 2 and lines == [f"resumed from {result.checkpoint} at iteration 2"]
    model = export(config.out, tmp_path / "m.onnx", version="test-1.0", tta_sizes=[64])
    assert model == tmp_path / "m.onnx"
    s = Segmenter(model, threads=1)
    assert s.version == "test-1.0" and s.metadata["tta_sizes"] == [64]


@needs_torch
def test_bad_training_parameters_raise_input_error_not_system_exit(tmp_path):
    """The library refuses bad values with InputError, naming the parameter (not a flag), before
    anything is read or written; the command line words the same refusal with its flags."""
    from pulmo.train import seg
    from pulmo.train.seg import TrainConfig, export, train

    out = tmp_path / "run"
    for bad, msg in (({"dropout": 1.0}, "'dropout' must lie in 0..1"),
                     ({"p_medseg": 0.6}, r"'p_medseg' must lie in 0..0.55"),
                     ({"p_png": -0.1}, "'p_png' must lie in 0..1"),
                     ({"batch": 0}, "'batch' must be a whole number of at least 1"),
                     ({"iters": 2.5}, "'iters' must be a whole number")):
        with pytest.raises(InputError, match=msg) as caught:
            TrainConfig(out=out, **bad)
        assert "--" not in str(caught.value)
    with pytest.raises(InputError, match="unknown network variant 'seg-9'"):
        train(TrainConfig(out=out, arch="seg-9", cache=tmp_path / "none.npz"))
    with pytest.raises(InputError, match="'data' .*: no training data"):
        train(TrainConfig(out=out, cache=tmp_path / "none.npz", data=tmp_path / "no-data"))
    with pytest.raises(InputError, match="'tta_sizes' must be multiples of 16 of at least 64, not 224,250"):
        export(out, tta_sizes=[224, 250])
    with pytest.raises(InputError, match="give 'tta_sizes' too"):
        export(out, minor_lesion_share=0.02)
    with pytest.raises(InputError, match="no final.pt or checkpoint.pt"):
        export(out)
    assert not out.exists()
    with pytest.raises(SystemExit, match="^--p-png must lie in 0..1, not -0.1$"):
        seg.main(["train", "--out", str(out), "--p-png", "-0.1"])


def test_command_line_wording_of_library_messages():
    """Quoted parameter names become the flags of the parser (sub-commands included); other
    quoted words stay."""
    from pulmo.train._cli import command_line_message
    from pulmo.train.seg import _parser

    ap = _parser()
    assert command_line_message("'minor_lesion_share' needs 'tta_sizes'; 'p_png' 'seg-9' 'other'", ap) == \
        "--minor-lesion-share needs --tta-sizes; --p-png 'seg-9' 'other'"


def _imported_modules(path):
    import ast

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def test_training_library_does_not_import_the_command_line():
    """pulmo.train uses the library (pulmo.ct.evaluate, ...), never pulmo.cli; pulmo.ct.evaluate
    imports neither argparse nor tqdm and reads no environment variable."""
    import ast
    from pathlib import Path

    import pulmo.ct.evaluate
    import pulmo.train

    files = sorted(Path(pulmo.train.__file__).parent.glob("*.py"))
    assert len(files) >= 8
    for f in files:
        bad = [m for m in _imported_modules(f) if m == "pulmo.cli" or m.startswith("pulmo.cli.")]
        assert not bad, f"{f.name} imports {bad}"
        names = [c.value for c in ast.walk(ast.parse(f.read_text(encoding="utf-8")))
                 if isinstance(c, ast.Constant) and isinstance(c.value, str)]
        assert not [n for n in names if n == "pulmo.cli" or n.startswith("pulmo.cli.")], f.name  # importlib
    lib = Path(pulmo.ct.evaluate.__file__)
    assert not {"argparse", "tqdm", "os"} & {m.split(".")[0] for m in _imported_modules(lib)}
    assert "environ" not in lib.read_text(encoding="utf-8") and "getenv" not in lib.read_text(encoding="utf-8")


def test_library_error_messages_name_no_flags():
    """Every InputError / ModelError raised in pulmo.train and pulmo.ct.evaluate names parameters,
    not command-line flags (the command lines add those)."""
    import ast
    import re
    from pathlib import Path

    import pulmo.ct.evaluate
    import pulmo.train

    files = [*Path(pulmo.train.__file__).parent.glob("*.py"), Path(pulmo.ct.evaluate.__file__)]
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("InputError", "ModelError"):
                texts = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
                assert not [t for t in texts if re.search(r"(^|[\s(])--[a-z]", t)], (f.name, node.lineno, texts)
