"""Alembic environment: runs on the connection given by :func:`pulmo.web.db.migrate`."""

from alembic import context

from pulmo.web.models import Base

connection = context.config.attributes.get("connection")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
