"""Fixtures shared by the integration tests that talk to a real `watchkeeper serve`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
