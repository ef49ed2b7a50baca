"""The segmentation network: a small 2D U-Net (FPN-style decoder) with one shared
encoder and two heads, built to fit a CPU budget.

Input ``(N, 1, 256, 256)`` float32 in 0..1 (an 8-bit image / 255, or HU in the lung
window scaled to 0..1). Training outputs are logits ``lungs`` ``(N, 3, 256, 256)``
(background, image-left lung, image-right lung) and ``lesions`` ``(N, 3, 256, 256)``
(background, ground-glass opacity, consolidation).

Cost: a stride-2 stem puts the main finest feature map at 128x128; the encoder goes
down to 16x16 (receptive field covers the whole thorax, needed to tell left from
right and lesion from chest wall); the decoder adds (not concatenates) 1x1-projected
coarse features to the skips, so each level costs one narrow 3x3 convolution.

Variants (``ARCHS``): widths per stage, ``deep`` (3x3 convolutions at 32x32 and pairs of
dilated ones at 16x16) and ``full_res``:

* ``full_res=0`` (``seg-2d-1``, ``seg-2d-2``, ``seg-2d-3``): logits at 256x256 by a learned
  2x sub-pixel (pixel-shuffle) head on the 128x128 features. ``seg-2d-1`` is shipped as
  ``seg.onnx`` (HU volumes), ``seg-2d-3`` as ``seg_8bit.onnx`` (8-bit slices).
* ``full_res=C`` (``seg-2d-2f``, tried, not shipped): a C-channel 3x3 convolution on the
  input at 256x256 is the finest skip; the 128x128 decoder output is pixel-shuffled up to
  it, added, refined by one C-channel 3x3 convolution at 256x256, and a 1x1 head gives
  the logits there.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from pulmo.errors import InputError


def conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=dilation * (k // 2), dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


ARCHS = {
    "seg-2d-1": dict(widths=(16, 32, 48, 96), full_res=0, deep=1),
    "seg-2d-2": dict(widths=(16, 32, 64, 128), full_res=0, deep=2),
    "seg-2d-2f": dict(widths=(16, 32, 64, 128), full_res=8, deep=2),
    "seg-2d-3": dict(widths=(24, 48, 96, 192), full_res=0, deep=2),
}


class SegNet(nn.Module):
    def __init__(self, widths=(16, 32, 48, 96), full_res: int = 0, deep: int = 1, dropout: float = 0.0):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.full_res = full_res
        # training only (identity in eval mode and absent from the export): on the head's input
        self.drop = nn.Dropout(dropout)
        if full_res:
            self.s0 = conv_bn(1, full_res)                                      # 256
            self.stem = conv_bn(full_res, w1, stride=2)                         # 128
        else:
            self.stem = conv_bn(1, w1, stride=2)                                # 128
        self.e2 = nn.Sequential(conv_bn(w1, w2, 2), conv_bn(w2, w2))           # 64
        self.e3 = nn.Sequential(conv_bn(w2, w3, 2), *[conv_bn(w3, w3) for _ in range(deep)])   # 32
        self.e4 = nn.Sequential(conv_bn(w3, w4, 2), *[m for _ in range(deep) for m in
                                                      (conv_bn(w4, w4, dilation=2), conv_bn(w4, w4, dilation=4))])  # 16
        self.p4 = conv_bn(w4, w3, k=1)
        self.d3 = conv_bn(w3, w3)
        self.p3 = conv_bn(w3, w2, k=1)
        self.d2 = conv_bn(w2, w2)
        self.p2 = conv_bn(w2, w1, k=1)
        self.d1 = conv_bn(w1, w1)
        if full_res:
            # 128 -> 256 by a learned sub-pixel upsampling into the full-resolution skip
            self.up0 = nn.Conv2d(w1, full_res * 4, 1)
            self.d0 = conv_bn(full_res, full_res)
            self.head = nn.Conv2d(full_res, 6, 1)
        else:
            # 3 lung + 3 lesion logits at 256x256 through a learned 2x sub-pixel upsampling
            # (1x1 conv to 6*4 channels + pixel shuffle): cheaper than bilinear resizing.
            self.head = nn.Conv2d(w1, 6 * 4, 1)

    @classmethod
    def from_arch(cls, arch: str, dropout: float = 0.0) -> "SegNet":
        if arch not in ARCHS:
            raise InputError(f"unknown network variant {arch!r}; known: {', '.join(sorted(ARCHS))}")
        return cls(**ARCHS[arch], dropout=dropout)

    @staticmethod
    def _up(x, ref):
        return F.interpolate(x, size=ref.shape[2:], mode="nearest")

    def head_input(self, x):
        """The last feature map (128x128 for ``full_res=0``, else 256x256) before the 1x1 head."""
        e0 = self.s0(x) if self.full_res else x
        e1 = self.stem(e0)
        e2 = self.e2(e1)
        e3 = self.e3(e2)
        e4 = self.e4(e3)
        d3 = self.d3(self._up(self.p4(e4), e3) + e3)
        d2 = self.d2(self._up(self.p3(d3), e2) + e2)
        d1 = self.d1(self._up(self.p2(d2), e1) + e1)
        if not self.full_res:
            return d1
        return self.d0(F.pixel_shuffle(self.up0(d1), 2) + e0)

    def features(self, x):
        z = self.head(self.drop(self.head_input(x)))
        return z if self.full_res else F.pixel_shuffle(z, 2)

    def forward(self, x):
        logits = self.features(x)
        return logits[:, :3], logits[:, 3:]


class ExportWrapper(nn.Module):
    """What is exported to ONNX: labels, not logits (argmax inside the graph, uint8 out).

    Lesion pixels farther than ``margin`` pixels (Chebyshev, network grid) from the lung
    mask are dropped: lesions are in the lung by definition.

    ``logits=True`` adds the float logits of both heads as a third output, ``logits``,
    as the 1x1 head computes them (no extra work in the graph): ``(N, 24, H/2, W/2)`` for
    ``full_res=0`` (class-major, then the 2x2 sub-pixel, as ``F.pixel_shuffle`` reads them:
    lung classes 0-2, then lesion classes 0-2), ``(N, 6, H, W)`` otherwise. Test-time
    augmentation (``pulmo.ct.models.runtime``) turns them into probabilities and averages them."""

    def __init__(self, net: SegNet, margin: int = 2, logits: bool = False):
        super().__init__()
        self.net = net
        self.margin = margin
        self.logits = logits

    def forward(self, x):
        net = self.net
        z = net.head(net.head_input(x))
        n, _, h, w = z.shape
        if net.full_res:
            lab = torch.argmax(z.view(n, 2, 3, h, w), dim=2).to(torch.uint8)   # (N, 2, h, w)
        else:
            # (N, 6*4, h, w): class-major, then sub-pixel. Arg-max over the 3 classes of each
            # head *before* the pixel shuffle: the shuffle then moves 8 uint8 channels instead
            # of 24 float ones (same result).
            lab = torch.argmax(z.view(n, 2, 3, 4, h, w), dim=2).to(torch.uint8).view(n, 8, h, w)
            lab = F.pixel_shuffle(lab, 2)                   # (N, 2, 2h, 2w)
        lungs, lesions = lab[:, 0], lab[:, 1]
        if self.margin > 0:
            k = 2 * self.margin + 1
            near = F.max_pool2d((lungs > 0).float()[:, None], k, stride=1, padding=self.margin)[:, 0] > 0
            lesions = lesions * near.to(torch.uint8)
        if not self.logits:
            return lungs, lesions
        return lungs, lesions, z
