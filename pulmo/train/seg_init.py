"""Start training from an exported ONNX model instead of a checkpoint.

An exported file (``seg.onnx``, ``seg_8bit.onnx``, fp32 or int8 QDQ) is the only form in which
the shipped weights travel: checkpoints stay in ``build/``. ``init_from_onnx`` loads its
convolution weights into a :class:`~pulmo.train.seg_net.SegNet` so that a site can fine-tune
the shipped network on its own slices, or a later session can continue the recipe.

The export folds every batch normalisation into the convolution before it (``W_f``, ``b_f``)
and int8 files store ``W_f`` per output channel as ``scale * (q - zero_point)``. Unfolding is
not unique; this module picks the one that keeps training-mode batch normalisation close to the
folded network: with ``mu`` and ``var`` the per-channel mean and variance of ``W_f * x`` over
calibration images, it sets the convolution to ``W_f``, the running statistics to ``mu`` and
``var``, ``gamma = sqrt(var + eps)`` and ``beta = b_f + mu``. In evaluation mode the network
then computes exactly the folded (dequantised) graph; in training mode, batch statistics near
``mu`` and ``var`` give nearly the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pulmo.errors import ModelError


def onnx_conv_weights(path: Path) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """``(weight, bias)`` of every ``Conv`` node of ``path`` in graph order, dequantised to
    float32 where the file stores them through ``DequantizeLinear``. A file that is not readable
    ONNX, or whose convolution parameters are not constants, raises :class:`ModelError`."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 -- missing, truncated, not ONNX: one message
        raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}

    def const(name: str) -> np.ndarray:
        if name in inits:
            return inits[name].astype(np.float32)
        node = producers.get(name)
        ins = [i for i in node.input[:3] if i] if node is not None else []
        if node is not None and node.op_type == "DequantizeLinear" and len(ins) >= 2 and all(i in inits for i in ins):
            q, scale = inits[ins[0]], inits[ins[1]]
            zero = inits[ins[2]] if len(ins) == 3 else np.zeros((), np.float32)  # the zero point is optional
            axis = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            if scale.ndim == 1 and scale.size > 1:
                shape[axis] = scale.size
            return ((q.astype(np.float32) - zero.astype(np.float32).reshape(shape))
                    * scale.astype(np.float32).reshape(shape))
        raise ModelError(f"{path}: convolution parameter {name!r} is not a constant "
                         "(not a file written by pulmo.train.seg.export)")

    convs = []
    for node in g.node:
        if node.op_type == "Conv":
            convs.append((const(node.input[1]), const(node.input[2]) if len(node.input) > 2 and node.input[2] else None))
    return convs


def _conv_call_order(net, size: int):
    """The network's ``Conv2d`` modules in the order its forward pass calls them (the order the
    ONNX export wrote them), each with the ``BatchNorm2d`` that follows it in its block or None."""
    import torch
    from torch import nn

    following = {}
    for mod in net.modules():
        if isinstance(mod, nn.Sequential):
            kids = list(mod)
            for a, b in zip(kids, kids[1:]):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    following[a] = b
    order = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m))
             for m in net.modules() if isinstance(m, nn.Conv2d)]
    was_training = net.training
    net.eval()  # a training-mode pass would move the batch-norm running statistics
    try:
        with torch.no_grad():
            net.features(torch.zeros(1, 1, size, size))
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    return [(c, following.get(c)) for c in order]


def matched_convolutions(net, convs: list[tuple[np.ndarray, np.ndarray | None]], source: str = "the ONNX file",
                         size: int = 256) -> list:
    """``(conv, batch_norm_or_None)`` of ``net`` for each of ``convs``, in order; a file whose
    convolutions do not fit ``net`` one for one (another variant, another network) is refused
    (:class:`ModelError`, the message starting with ``source``)."""
    pairs = _conv_call_order(net, size)
    if len(convs) != len(pairs) or any(w.shape != tuple(c.weight.shape) for (w, _), (c, _) in zip(convs, pairs)):
        got = [tuple(w.shape) for w, _ in convs]
        want = [tuple(c.weight.shape) for c, _ in pairs]
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise ModelError(f"{source}: its {len(got)} convolutions do not fit this 'arch' "
                         f"({len(want)} convolutions; the first difference is at convolution {first}): "
                         "give the 'arch' it was exported from")
    for i, ((_, b), (conv, bn)) in enumerate(zip(convs, pairs)):
        if b is not None and bn is None and conv.bias is None:
            raise ModelError(f"{source}: convolution {i} has a bias that this 'arch' has no place for")
    return pairs


def init_from_onnx(net, convs: list[tuple[np.ndarray, np.ndarray | None]], images: np.ndarray,
                   batch: int = 16, source: str = "the ONNX file") -> int:
    """Load ``convs`` (from :func:`onnx_conv_weights`) into ``net`` (a :class:`SegNet` of the
    variant they were exported from) in place.

    ``images``: calibration slices ``(N, 256, 256)`` in 0..1 for the batch-norm statistics (see
    the module docstring). Returns the number of convolutions loaded. Convolutions that do not
    match ``net``'s one for one are refused (:func:`matched_convolutions`)."""
    import torch

    pairs = matched_convolutions(net, convs, source, images.shape[-1])
    bns = []
    with torch.no_grad():
        for (w, b), (conv, bn) in zip(convs, pairs):
            conv.weight.copy_(torch.from_numpy(w))
            bias = torch.from_numpy(b) if b is not None else torch.zeros(w.shape[0])
            if bn is None:
                if conv.bias is not None:
                    conv.bias.copy_(bias)
                continue
            # the identity normalisation: eval mode now computes W_f * x + b_f
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)
            bn.weight.fill_(float(np.sqrt(1.0 + bn.eps)))
            bn.bias.copy_(bias)
            bns.append((bn, bias))
    # per-channel moments of each batch norm's input (W_f * x) over the calibration images
    sums = {bn: [0.0, 0.0, 0] for bn, _ in bns}

    def record(mod, inp, _out):
        y = inp[0].double()
        s = sums[mod]
        s[0] = s[0] + y.sum(dim=(0, 2, 3))
        s[1] = s[1] + (y * y).sum(dim=(0, 2, 3))
        s[2] += y.numel() // y.shape[1]

    was_training = net.training
    net.eval()
    hooks = [bn.register_forward_hook(record) for bn, _ in bns]
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch):
                net.features(torch.from_numpy(np.ascontiguousarray(images[i:i + batch], dtype=np.float32))[:, None])
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for bn, bias in bns:
            s, ss, n = sums[bn]
            mu = s / n
            var = (ss / n - mu * mu).clamp_min(0.0)
            bn.running_mean.copy_(mu.float())
            bn.running_var.copy_(var.float())
            bn.weight.copy_(torch.sqrt(var + bn.eps).float())
            bn.bias.copy_((bias.double() + mu).float())
    net.train(was_training)
    return len(convs)


def calibration_images(data: dict, n: int = 64) -> np.ndarray:
    """``n`` training slices in 0..1, spread evenly over the MedSeg and PNG sets of the cache."""
    ms = data["ms_im"][np.linspace(0, len(data["ms_im"]) - 1, n // 4).astype(int)]
    png = data["png_im"][np.linspace(0, len(data["png_im"]) - 1, n - n // 4).astype(int)]
    return np.concatenate([ms, png]).astype(np.float32) / 255.0
