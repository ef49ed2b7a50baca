"""File formats at the edge of Pulmo: tables and what their cells mean (:mod:`pulmo.io.cells`),
model files, images."""
