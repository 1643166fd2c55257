"""Alembic migrations of the fleet database (both engines); run them with fleet.db.migrate."""
