"""Training code for Pulmo's learned models (needs the ``train`` extra: PyTorch, onnx).

Nothing here is imported by the prediction path; the shipped models run through
``pulmo.ct.models`` with onnxruntime and numpy only.

* ``python -m pulmo.train.seg`` trains the lung + lesion segmentation network and
  exports ``pulmo/ct/models/seg.onnx`` (see ``docs/models.md``).
"""
