"""``python -m watchkeeper.simulate.watchdog RUN_DIR``: waits for its stdin to close (the
``simulate`` that started it has ended, however), then cleans up what the run left."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    """Block until stdin reaches end of file, then clean up RUN_DIR if it is still there."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C at the terminal is for simulate
    while os.read(0, 4096):
        pass
    run_dir = Path(argv[1])
    if run_dir.exists():
        from watchkeeper.simulate.lifecycle import clean_up

        clean_up(run_dir)


if __name__ == "__main__":
    main(sys.argv)
