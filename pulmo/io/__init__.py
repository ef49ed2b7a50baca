"""File formats at the edge of Pulmo: tables, model files, images."""
