"""What the platform does, without HTTP: the routes (:mod:`pulmo.web.api`, :mod:`pulmo.web.pages`)
and the workers call these functions with a database session."""
