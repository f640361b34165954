"""The dashboard's page and files over a real server: CSP, caching, gzip, no traversal."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from pathlib import Path

import pytest

from watchkeeper.api.routes import dashboard

from .test_api_harness import Api, api_settings, serve_api


def _directives(csp: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


async def test_page_is_html_under_a_strict_csp(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        r = await api.client.get("/")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "'unsafe-eval'" not in csp
        rules = _directives(csp)
        assert rules["script-src"] == ["'self'"]
        assert rules["style-src"] == ["'self'"]  # stricter than /docs: no inline styles
        assert rules["default-src"] == ["'none'"]
        assert rules["connect-src"] == ["'self'"]
        assert rules["frame-ancestors"] == ["'none'"]
        # The docs page keeps what Swagger UI needs; the dashboard's rule is its own.
        docs = _directives((await api.client.get("/docs")).headers["content-security-policy"])
        assert "'unsafe-inline'" in docs["style-src"]
        html = r.text
        assert "<script>" not in html  # no inline scripts
        assert not re.search(r"\son[a-z]+\s*=", html)  # no inline event handlers
        assert "style=" not in html
        for url in re.findall(r"https?://[^\s\"'<>]+", html):
            host = re.sub(r"^https?://", "", url).split("/")[0].split(":")[0]
            assert host in ("127.0.0.1", "localhost"), url
        assert 'src="/static/app.js"' in html
        version = dashboard.plotly_version()
        assert version is not None
        assert f'src="/static/vendor/plotly-{version}.min.js"' in html
        assert r.headers["cache-control"] == "no-cache"


async def test_plotly_is_served_gzipped_and_immutable(tmp_path: Path) -> None:
    path = dashboard.plotly_path()
    assert path is not None, "the plotly wheel must be installed"
    url = dashboard.plotly_url(dashboard.plotly_version() or "")
    async with serve_api(api_settings(tmp_path)) as api:
        r = await api.client.get(url, headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200
        assert r.headers["content-encoding"] == "gzip"
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert r.headers["content-type"].startswith("text/javascript")
        assert "accept-encoding" in r.headers["vary"].lower()
        # httpx decodes gzip; the compressed size proves it was compressed on the wire.
        assert int(r.headers["content-length"]) < path.stat().st_size // 2
        assert r.content == path.read_bytes()
        raw = await api.client.get(url, headers={"Accept-Encoding": "gzip"})
        assert raw.headers["content-length"] == r.headers["content-length"]
        # Without gzip (or gzip refused): the plain file.
        for accept in ("identity", "gzip;q=0"):
            plain = await api.client.get(url, headers={"Accept-Encoding": accept})
            assert plain.status_code == 200
            assert "content-encoding" not in plain.headers
            assert plain.content == path.read_bytes()
        # Another version's name is not served.
        r = await api.client.get("/static/vendor/plotly-0.0.1.min.js")
        assert r.status_code == 404


async def test_gzip_bytes_match_the_installed_file(tmp_path: Path) -> None:
    found = dashboard.plotly()
    path = dashboard.plotly_path()
    assert found is not None and path is not None
    assert gzip.decompress(found.gzipped) == path.read_bytes()
    assert found.gzipped is found.gzipped  # compressed once


async def test_own_files_revalidate_by_etag(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css"),
                           ("favicon.svg", "image/svg+xml")):
            r = await api.client.get(f"/static/{name}")
            assert r.status_code == 200, name
            assert r.headers["content-type"].startswith(kind)
            assert r.headers["cache-control"] == "no-cache"
            etag = r.headers["etag"]
            again = await api.client.get(f"/static/{name}", headers={"If-None-Match": etag})
            assert again.status_code == 304
            assert again.content == b""
            assert again.headers["etag"] == etag
            other = await api.client.get(f"/static/{name}", headers={"If-None-Match": '"x"'})
            assert other.status_code == 200


@pytest.mark.parametrize("path", [
    "/static/nope.js",
    "/static/index.html",
    "/static/../app.py",
    "/static/%2e%2e/x",
    "/static/%2e%2e/%2e%2e/pyproject.toml",
    "/static/..%2fapp.py",
    "/static/vendor/..%2f..%2fapp.py",
    "/static/vendor/plotly.min.js",
    "/static/app.js/..",
])
async def test_unknown_or_traversing_paths_are_json_404(tmp_path: Path, path: str) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        await _assert_404(api, path)


async def _raw_get(api: Api, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` exactly as written (httpx would resolve the dot segments first)."""
    host, port = api.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                     .encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


async def _assert_404(api: Api, path: str) -> None:
    status, headers, body = await _raw_get(api, path)
    assert status == 404, (path, status)
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"] == "not_found"


async def test_page_works_without_plotly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setattr(dashboard, "plotly_path", lambda: None)
    dashboard.plotly.cache_clear()
    dashboard.index_html.cache_clear()
    try:
        async with serve_api(api_settings(tmp_path)) as api:
            r = await api.client.get("/")
            assert r.status_code == 200
            assert "/static/vendor/" not in r.text
            assert 'src="/static/app.js"' in r.text
            r = await api.client.get(dashboard.plotly_url(dashboard.plotly_version() or ""))
            assert r.status_code == 404
    finally:
        dashboard.plotly.cache_clear()
        dashboard.index_html.cache_clear()


@pytest.mark.parametrize("header,accepted", [
    ("gzip", True), ("gzip, deflate, br", True), ("br;q=1.0, gzip;q=0.8", True),
    ("*", True), ("identity", False), ("gzip;q=0", False), ("", False), ("gzip;q=x", False),
])
def test_accept_encoding(header: str, accepted: bool) -> None:
    assert dashboard._accepts_gzip(header) is accepted
