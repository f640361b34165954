"""The web dashboard: its page, its own static files, and plotly.js from the plotly wheel.

Everything is served from the package; nothing is fetched from another host at run time.
The page holds no data (it reads the API with the stored token), so these routes need none.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import logging
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

#: The only files /static/{name} serves: a fixed allow-list, so no path reaches the disk.
_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

#: Our own files change with the package: the browser revalidates them every time (ETag).
REVALIDATE = "no-cache"
#: The vendored plotly.js has its version in its URL: it never changes under that name.
IMMUTABLE = "public, max-age=31536000, immutable"

#: Where index.html names the plotly.js script; replaced when the page is rendered.
_PLOTLY_MARK = "<!--plotly-->"

Name = Annotated[str, PathParam(max_length=100)]


@dataclass(frozen=True)
class Asset:
    """One file held in memory with its validator."""

    body: bytes
    media_type: str
    etag: str


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _read_static(name: str) -> bytes:
    folder = importlib.resources.files("watchkeeper.api").joinpath("static")
    return folder.joinpath(name).read_bytes()


@lru_cache(maxsize=len(_TYPES))
def _asset(name: str) -> Asset:
    body = _read_static(name)
    return Asset(body, _TYPES[name], _etag(body))


class Plotly:
    """plotly.min.js from the installed plotly wheel: its bytes, gzipped once, and its URL."""

    def __init__(self, version: str, plain: bytes) -> None:
        self.version = version
        self.plain = plain
        self._gzipped: bytes | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return plotly_url(self.version)

    @property
    def gzipped(self) -> bytes:
        """The file gzipped (about 1.5 MB instead of 4.8), compressed on first use only."""
        with self._lock:
            if self._gzipped is None:
                # mtime=0: the same bytes every time, so the compressed file is reproducible.
                self._gzipped = gzip.compress(self.plain, compresslevel=9, mtime=0)
            return self._gzipped

    def style_guards(self) -> list[str]:
        """Ids of the <style> elements plotly.js would insert unless one already exists."""
        return [m.decode("ascii") for m in _STYLE_GUARD.findall(self.plain)]


#: plotly.js bundles maplibre's CSS and inserts it as an inline <style> when loaded, unless
#: an element with its id exists; a strict CSP (no inline styles) would report that.
_STYLE_GUARD = re.compile(
    rb'getElementById\("([0-9A-Za-z_-]{8,128})"\)\)\{var [\w$]+=document\.createElement\("style"\)')


def plotly_url(version: str) -> str:
    """The versioned URL of plotly.js (a new plotly release is a new URL)."""
    return f"/static/vendor/plotly-{version}.min.js"


def plotly_path() -> Path | None:
    """Where the plotly wheel keeps plotly.min.js, found without importing plotly."""
    # Importing plotly would pull in its Python graphing library; only the file is wanted.
    try:
        spec = importlib.util.find_spec("plotly")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "package_data" / "plotly.min.js"
        if candidate.is_file():
            return candidate
    return None


def plotly_version() -> str | None:
    """The installed plotly distribution's version, or None without plotly."""
    try:
        return importlib.metadata.version("plotly")
    except importlib.metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def plotly() -> Plotly | None:
    """plotly.js as installed, read once on first use; None without plotly."""
    path, version = plotly_path(), plotly_version()
    if path is None or version is None:
        log.warning("plotly is not installed: the dashboard shows numbers without charts")
        return None
    try:
        return Plotly(version, path.read_bytes())
    except OSError as exc:
        log.warning("cannot read %s (%s): the dashboard shows numbers without charts",
                    path, exc)
        return None


def _plotly_tags(found: Plotly | None) -> str:
    """The script tag for plotly.js (and its style guards), or nothing: no charts then."""
    if found is None:
        return ""
    guards = "".join(f'<meta name="watchkeeper-style-guard" content="plotly" id="{g}">\n'
                     for g in found.style_guards())
    # async, not defer: the page (agents, alerts, approvals, buttons) works while the
    # 1.4 MB chart library is still on its way; app.js draws the charts once it is there.
    return f'{guards}<script src="{found.url}" async id="plotly-script"></script>'


@lru_cache(maxsize=1)
def index_html() -> bytes:
    """The page with plotly's URL filled in, rendered once."""
    text = _read_static("index.html").decode("utf-8")
    return text.replace(_PLOTLY_MARK, _plotly_tags(plotly()), 1).encode("utf-8")


def _accepts_gzip(header: str) -> bool:
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().lower()
            if q.startswith("q="):
                try:
                    return float(q[2:]) > 0
                except ValueError:
                    return False
            return True
    return False


def _not_modified(request: Request, etag: str) -> bool:
    given = request.headers.get("if-none-match", "")
    tags = {t.strip().removeprefix("W/") for t in given.split(",")}
    return etag in tags or "*" in tags


@router.get("/", response_class=HTMLResponse)
def page() -> HTMLResponse:
    """The dashboard page."""
    return HTMLResponse(index_html(), headers={"Cache-Control": REVALIDATE})


@router.get("/static/vendor/{name}")
def vendor(name: Name, request: Request) -> Response:
    """plotly.js under its versioned name, gzipped when the browser accepts it."""
    found = plotly()
    if found is None or name != found.url.rsplit("/", 1)[1]:
        raise HTTPException(404, "no such file")
    headers = {"Cache-Control": IMMUTABLE, "Vary": "Accept-Encoding"}
    if _accepts_gzip(request.headers.get("accept-encoding", "")):
        headers["Content-Encoding"] = "gzip"
        return Response(found.gzipped, media_type=_TYPES["app.js"], headers=headers)
    return Response(found.plain, media_type=_TYPES["app.js"], headers=headers)


@router.get("/static/{name}")
def static(name: Name, request: Request) -> Response:
    """The dashboard's own script, style sheet and icon, revalidated by ETag."""
    if name not in _TYPES:
        raise HTTPException(404, "no such file")
    asset = _asset(name)
    headers = {"Cache-Control": REVALIDATE, "ETag": asset.etag}
    if _not_modified(request, asset.etag):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)
