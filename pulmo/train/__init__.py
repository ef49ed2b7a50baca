"""Training code for Pulmo's learned models (needs the ``train`` extra: PyTorch, onnx).

Nothing here is imported by the prediction path; the shipped models run through
``pulmo.ct.models`` with onnxruntime and numpy only. Nothing here imports ``pulmo.cli``:
each module is a library of plain functions (bad parameters raise
:class:`pulmo.errors.InputError`, unusable model files :class:`pulmo.errors.ModelError`), and
its ``python -m`` entry (``main(argv)`` at the bottom) is the only place with argparse and exit
statuses.

* ``python -m pulmo.train.seg`` trains the lung + lesion segmentation network and
  exports ``pulmo/ct/models/seg.onnx`` (see ``docs/models.md``); in Python,
  :func:`pulmo.train.seg.train` with a :class:`pulmo.train.seg.TrainConfig`,
  :func:`pulmo.train.seg.export`, :func:`pulmo.train.seg.pseudo_labels`.
* ``python -m pulmo.train.seg_eval`` evaluates it on the held-out sets
  (:func:`pulmo.train.seg_eval.evaluate`), scoring with :mod:`pulmo.ct.evaluate`.
"""
