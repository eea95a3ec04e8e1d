"""valkey_reconciler: forms, scales, drains and heals a Valkey cluster from Helm hook Jobs or by hand."""

__version__ = "0.1.0"
