"""Alembic environment for Keel's metadata database.

Keel runs its migrations itself (``MetadataStore`` on open), on a connection it passes in
``config.attributes["connection"]``; there is no ``alembic.ini`` and no URL to read here.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    msg = (
        "Keel's migrations run on the connection MetadataStore passes in "
        "config.attributes['connection']; open the database with "
        "keel.store.MetadataStore(url) instead of running alembic directly."
    )
    raise RuntimeError(msg)

context.configure(
    connection=connection,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
