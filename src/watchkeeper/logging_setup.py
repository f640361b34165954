"""Logging: a colourful console (rich) and a rotating file, both from LoggingConfig."""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from watchkeeper.config import LoggingConfig
from watchkeeper.safetext import printable

LOG_FILE_NAME = "agent_system.log"
_FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_MARK = "_watchkeeper_handler"

#: Loggers that hostile network traffic can drive (one line per refused connection, per bad
#: request, per failed accept): each of their lines is logged once a minute at most.
DAMPED_LOGGERS = ("asyncio", "uvicorn", "uvicorn.error", "watchkeeper.api.connections",
                  "watchkeeper.api.hosts")

#: Seconds during which a line that repeats is counted rather than logged again.
REPEAT_INTERVAL_S = 60.0


class RepeatFilter(logging.Filter):
    """Lets a line through once per interval; the next one says how many were held back.

    Lines are the same when their logger, level and message template are (a flood of
    "socket.accept() out of system resource", or a refused Host naming a new name each
    time, is one line a minute, with a count).
    """

    def __init__(self, interval: float = REPEAT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic, keep: int = 256) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self.keep = keep
        self._seen: OrderedDict[tuple[str, int, str], list[float]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval:
            seen[1] += 1
            return False
        held = 0 if seen is None else int(seen[1])
        self._seen[key] = [now, 0]
        self._seen.move_to_end(key)
        while len(self._seen) > self.keep:
            self._seen.popitem(last=False)
        if held:
            # Appended as text after formatting: a % in it must not meet the arguments.
            record.msg = record.getMessage() + (
                f" ({held} more like this in the last {self.interval:.0f} s not logged)")
            record.args = None
        return True


#: Secret strings no log line may hold (route URLs and their tokens), by owner.
_SECRETS: dict[str, tuple[str, ...]] = {}
_MASKED: tuple[str, ...] = ()


def set_log_secrets(owner: str, pieces: tuple[str, ...] | list[str]) -> None:
    """Replace ``owner``'s secret strings, which every watchkeeper handler masks."""
    global _MASKED
    _SECRETS[owner] = tuple(p for p in pieces if len(p) >= 3)
    _MASKED = tuple(sorted({p for ps in _SECRETS.values() for p in ps}, key=len, reverse=True))


def mask_logged(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``, as every log line is."""
    for piece in _MASKED:
        if piece in text:
            text = text.replace(piece, "***")
    return text


class SecretFilter(logging.Filter):
    """Masks the registered secrets (see :func:`set_log_secrets`) in every record, including
    third-party ones (apprise logs the URLs it posts to) and their tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = _MASKED
        if not secrets:
            return True
        message = record.getMessage()
        masked = mask_logged(message)
        if masked != message:
            record.msg = masked
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            text = record.exc_text
            for piece in secrets:
                text = text.replace(piece, "***")
            record.exc_text = text
        return True


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
        handler.addFilter(SecretFilter())
        root.addHandler(handler)
    for name in DAMPED_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RepeatFilter)]:
            logger.removeFilter(old)
        logger.addFilter(RepeatFilter())
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
