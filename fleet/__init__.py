"""The fleet server: registry, provisioning, ingest, configuration, rollouts and API for many
gateways (docs/fleet-storage.md for the database; the contracts in ARCHITECTURE.md)."""
