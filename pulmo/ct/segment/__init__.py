"""Segmentation: numpy in, numpy out (canonical LPS (z, y, x) arrays, spacing (z, y, x) mm).

* :mod:`.lungs`   classical lung mask, right/left split, airway removal
* :mod:`.regions` zones (thirds by height) and lobes via a model plug-in
* :mod:`.lesions` density-based ground-glass / consolidation mask
* :mod:`.models`  ONNX plug-in interface for learned lung / lobe / lesion models
"""
