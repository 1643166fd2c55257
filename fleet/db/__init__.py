"""The fleet database: engines (engine.py), the schema (tables.py), Alembic migrations
(migrate.py, migrations/) and the repository functions; the only package that writes SQL."""
