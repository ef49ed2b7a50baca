"""The Pulmo web platform (``pulmo serve``): studies in, AI results, worklist, viewer, reports,
triage calculator, roles and organisations, consultation, share links and an audit log.

A face over the same library as the command line: CT analysis runs :func:`pulmo.ct.analyze`
in worker processes, the calculator calls :func:`pulmo.triage.predict_records`. Layers:

* :mod:`pulmo.web.settings`  configuration (built by the command line from flags and env);
* :mod:`pulmo.web.db`, :mod:`pulmo.web.models`, ``migrations/``  the store (SQLAlchemy 2,
  Alembic; SQLite in WAL mode by default, PostgreSQL by URL);
* :mod:`pulmo.web.storage`  files (images, results) under the data folder;
* :mod:`pulmo.web.services`  what the routes and workers do (ingest, jobs, analysis, sharing,
  audit, reports, triage), no HTTP in it;
* :mod:`pulmo.web.api` (JSON), :mod:`pulmo.web.pages` (HTML): thin routes;
* :mod:`pulmo.web.worker`  the analysis worker processes.

Pulmo is a research tool, not a certified medical device; every page says so.
"""
