"""Collectors: one module per metric family, psutil injected; snapshot.py composes them."""

from watchkeeper.collectors.redact import (
    REDACTION_RULES,
    RedactionRule,
    redact_cmdline,
    redact_text,
)
from watchkeeper.collectors.snapshot import SnapshotCollector

__all__ = [
    "REDACTION_RULES",
    "RedactionRule",
    "SnapshotCollector",
    "redact_cmdline",
    "redact_text",
]
