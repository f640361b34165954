"""system_status.json: agent health and the latest metrics, rewritten atomically."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

STATUS_FILE_NAME = "system_status.json"


def write_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` so that a reader never sees a half-written file.

    Written to a temporary file in the same directory, then renamed over the target:
    rename is atomic on POSIX and on Windows (os.replace).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # Compact on purpose: json.dumps without indent runs the C encoder, about ten times
        # faster than the pure-Python indenting one (this runs every cycle). `jq .` reads it.
        text = json.dumps(data, default=str, separators=(",", ":"))
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
