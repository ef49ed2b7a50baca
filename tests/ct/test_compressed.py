"""Compressed DICOM transfer syntaxes are decoded exactly (pydicom + pylibjpeg / pyjpegls).

The series are encoded here with pydicom 3's encoders; a syntax whose encoder is not installed
is skipped with the reason (decoding is what the pipeline needs, encoding only builds the test).
pydicom has no JPEG Lossless (process 14) encoder, so that one is written by a minimal encoder
below (the most common compressed syntax of CT archives); the exact round trip through the
loader (pylibjpeg-libjpeg decoding) checks both.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from ct_synth import SPACING, write_series
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless

from pulmo.ct.io import load


def _encode_jpeg_lossless_sv1(img: np.ndarray) -> bytes:
    """Minimal JPEG lossless encoder (ITU T.81 process 14, predictor 1 = left, Pt 0), 16-bit greyscale.
    One Huffman table: the 17 difference categories (SSSS 0..16) all get 5-bit codes."""
    img = np.asarray(img, np.uint16)
    rows, cols = img.shape
    x = img.astype(np.int64)
    pred = np.empty_like(x)
    pred[0, 0] = 1 << 15
    pred[0, 1:] = x[0, :-1]
    pred[1:, 0] = x[:-1, 0]
    pred[1:, 1:] = x[1:, :-1]
    diff = (x - pred) % 65536
    diff = np.where(diff >= 32768, diff - 65536, diff)  # -32768..32767 (modulo 2^16)
    ssss = np.where(diff == 0, 0, np.floor(np.log2(np.maximum(np.abs(diff), 1))).astype(np.int64) + 1)
    ssss = np.where(diff == -32768, 16, ssss)
    extra = np.where(diff >= 0, diff, diff + (1 << ssss) - 1)
    out = bytearray()
    acc = nbits = 0
    for s, e in zip(ssss.ravel().tolist(), extra.ravel().tolist()):
        acc = (acc << 5) | s  # canonical code of symbol s: s itself on 5 bits
        nbits += 5
        if 0 < s < 16:
            acc = (acc << s) | (e & ((1 << s) - 1))
            nbits += s
        while nbits >= 8:
            nbits -= 8
            byte = (acc >> nbits) & 0xFF
            out.append(byte)
            if byte == 0xFF:
                out.append(0)
        acc &= (1 << nbits) - 1
    if nbits:
        byte = ((acc << (8 - nbits)) | ((1 << (8 - nbits)) - 1)) & 0xFF
        out.append(byte)
        if byte == 0xFF:
            out.append(0)
    bits = [0] * 16
    bits[4] = 17
    dht = bytes([0x00]) + bytes(bits) + bytes(range(17))
    sof = bytes([16]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    sos = bytes([1, 1, 0x00, 1, 0, 0])

    def seg(marker, payload):
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    return b"\xff\xd8" + seg(0xC4, dht) + seg(0xC3, sof) + seg(0xDA, sos) + bytes(out) + b"\xff\xd9"


def _recompress_jpeg_lossless(folder):
    from pydicom.encaps import encapsulate

    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.PixelData = encapsulate([_encode_jpeg_lossless_sv1(ds.pixel_array)])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.save_as(f, enforce_file_format=True)


def _encoder_missing(uid) -> str | None:
    try:
        from pydicom.pixels.encoders.base import get_encoder

        enc = get_encoder(uid)
    except (NotImplementedError, ValueError, ImportError) as exc:
        return f"pydicom has no encoder for {uid.name} ({exc})"
    if not enc.is_available:
        return f"no {uid.name} encoder installed ({enc.missing_dependencies})"
    return None


@pytest.mark.parametrize("uid", [JPEGLSLossless, JPEGLosslessSV1, JPEG2000Lossless, RLELossless],
                         ids=["jpeg-ls", "jpeg-lossless-sv1", "jpeg2000-lossless", "rle"])
def test_compressed_series_decoded_exactly(tmp_path, phantom_data, uid):
    reason = _encoder_missing(uid)
    hand_made = reason is not None and uid == JPEGLosslessSV1
    if reason and not hand_made:
        pytest.skip(reason)
    hu, _ = phantom_data
    sub = hu[20:32]
    write_series(sub, tmp_path / "s", SPACING, compress=None if hand_made else uid)
    if hand_made:
        _recompress_jpeg_lossless(tmp_path / "s")
    first = pydicom.dcmread(next((tmp_path / "s").iterdir()), stop_before_pixels=True)
    assert first.file_meta.TransferSyntaxUID == uid
    vol = load(tmp_path / "s")
    # the writer stores clip(round(HU + 1024)); lossless decoding must give exactly that back
    expected = np.clip(np.round(sub + 1024.0), 0, 65535) - 1024.0
    assert vol.array.shape == sub.shape
    assert np.array_equal(vol.array, np.clip(expected, -1024, 3071))
    assert vol.spacing == pytest.approx(SPACING)
