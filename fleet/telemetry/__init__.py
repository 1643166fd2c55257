"""Telemetry: ingest of uplink batches (ingest.py) and their compact storage, aggregates and
queries (storage.py, blocks.py). Speaks SQL only through fleet.db."""
