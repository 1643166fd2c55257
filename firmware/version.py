"""The firmware's version, reported in births, status messages and provisioning requests; one
place for app.py and provision.py (which runs before the app is loaded)."""

FW_VERSION = "fw-0.1.0"
