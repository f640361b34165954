"""Collectors: one module per metric family, psutil injected; snapshot.py composes them."""

from watchkeeper.collectors.snapshot import SnapshotCollector

__all__ = ["SnapshotCollector"]
