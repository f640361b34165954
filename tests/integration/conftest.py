"""Fixtures shared by the integration tests that talk to a real `watchkeeper serve`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alertmanager_server import Alertmanager, WebhookReceiver

from .served import Server, free_port, ready, serve, stop, write_config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per test module (see served.py for how it differs from the defaults)."""
    root = tmp_path_factory.mktemp("served")
    port = free_port()
    config = write_config(root, port)
    proc = serve(root)
    try:
        yield ready(root, config, port)
    finally:
        stop(proc)


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A loopback receiver of what a real Alertmanager delivers."""
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def am(tmp_path: Path, webhook: WebhookReceiver) -> Iterator[Alertmanager]:
    """A real Alertmanager (Debian's) on a free loopback port, sending to ``webhook``."""
    root = tmp_path / "am"
    root.mkdir()
    manager = Alertmanager(root, webhook.url)
    manager.start()
    try:
        yield manager
    finally:
        manager.stop()
