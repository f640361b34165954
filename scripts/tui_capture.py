"""Render views of `watchkeeper cli` headless at 100x30 and print them as plain text.

Usage: python scripts/tui_capture.py --url http://127.0.0.1:8000 [VIEW ...]  (default: 1 5)
The README's text capture of views 1 and 5 was made this way, against a running server.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from watchkeeper.cli.client import find_token
from watchkeeper.cli.tui.app import WatchkeeperApp
from watchkeeper.cli.tui.capture import screen_text
from watchkeeper.config import load_settings

SIZE = (100, 30)


async def capture(url: str, views: list[int], token: str | None, plain: bool) -> list[str]:
    """The text of each view, once it has loaded from the server."""
    app = WatchkeeperApp(url, lambda: find_token(token, load_settings), plain=plain,
                         offer_local=False)
    shots = []
    async with app.run_test(size=SIZE) as pilot:
        for number in views:
            await pilot.press(str(number))
            await app.reload()  # the view as the server has it now
            await pilot.pause(0.3)
            shots.append(screen_text(app))
        await pilot.press("q")
    return shots


def main() -> None:
    """Print the views asked for, one after the other."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("views", nargs="*", type=int, default=[1, 5])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--token", default=None)
    parser.add_argument("--plain", action="store_true", help="no emoji")
    args = parser.parse_args()
    for shot in asyncio.run(capture(args.url, args.views, args.token, args.plain)):
        sys.stdout.write(shot + "\n")


if __name__ == "__main__":
    main()
