"""Logging: a colourful console (rich) and a rotating file, both from LoggingConfig."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from watchkeeper.config import LoggingConfig
from watchkeeper.safetext import printable

LOG_FILE_NAME = "agent_system.log"
_FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_MARK = "_watchkeeper_handler"


class SafeFormatter(logging.Formatter):
    """Every message on one line with control characters escaped (see safetext.printable).

    Messages carry host text (process names, command lines, service output, the LLM's
    answer): raw, it could retitle or recolour the operator's terminal or forge log lines.
    A traceback, which is ours, keeps its lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


def setup_logging(config: LoggingConfig, *, console: bool = True) -> Path:
    """Install watchkeeper's handlers on the root logger (idempotent); returns the log file."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(config.level)
    log_dir = config.dir.expanduser()
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / LOG_FILE_NAME
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=config.max_bytes, backupCount=config.backups, encoding="utf-8")
    file_handler.setFormatter(SafeFormatter(_FILE_FORMAT))
    handlers: list[logging.Handler] = [file_handler]
    if console:
        handlers.append(_console_handler(config))
    for handler in handlers:
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    return path


def _console_handler(config: LoggingConfig) -> logging.Handler:
    if config.color:
        # rich is imported here only: `config validate` and friends never pay for it.
        from rich.console import Console
        from rich.logging import RichHandler

        rich = RichHandler(console=Console(stderr=True), show_path=False, markup=False,
                           rich_tracebacks=False, log_time_format="[%X]")
        rich.setFormatter(SafeFormatter("%(message)s"))
        return rich
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(_FILE_FORMAT))
    return handler
