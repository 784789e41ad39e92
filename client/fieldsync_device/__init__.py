"""fieldsync-device: the reference offline-first client for Fieldsync (docs/client.md)."""

__version__ = "0.1.0"
