"""The demo managed service of ``simulate service|crashloop``:
``python -m watchkeeper.simulate.demo_service --port N --crash-flag PATH --until EPOCH``.

An HTTP server on 127.0.0.1:N that answers 200 to any GET (its health check). While the file
PATH exists it exits at once with status 3 (a crash at start: the crash loop). It exits on
its own at EPOCH, so it never outlives its simulation even if the server that started it is
killed. The server chooses every argument; nothing in it comes from a request.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from watchkeeper.simulate.worker import set_name


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # its health checks every tick would fill the journal


def main(argv: list[str]) -> None:
    """Serve until --until, or exit 3 at once while --crash-flag exists."""
    parser = argparse.ArgumentParser(prog="demo_service")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--crash-flag", required=True)
    parser.add_argument("--until", type=float, required=True)
    args = parser.parse_args(argv)
    set_name("wk-sim-demo")
    if os.path.exists(args.crash_flag):
        print("demo service: told to crash at start (simulate crashloop)", file=sys.stderr)
        sys.exit(3)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Health)
    left = max(0.0, args.until - time.time())
    threading.Timer(left, server.shutdown).start()
    server.serve_forever(poll_interval=0.5)


if __name__ == "__main__":
    main(sys.argv[1:])
