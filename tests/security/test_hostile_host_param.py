"""Security corpus: hostile ``host=`` parameters (GET /api/metrics, /api/metrics/history,
/api/alerts, /api/hosts?health=). A reader names a host; the answer is that host's data, a 404
saying no such host reports here, or a 422 for what is not a name, never another host's data,
a 500, or the name echoed with its control characters (a NUL is refused before any route:
400)."""

from __future__ import annotations

from pathlib import Path

from ..integration.test_api_harness import api_settings, serve_api, until

HOSTILE = {
    "path-traversal": "../../etc/passwd",
    "nats-wildcard-star": "*",
    "nats-wildcard-tail": ">",
    "sql-quote": "web-1' OR '1'='1",
    "glob": "web-?",
    "newline": "web-1\nX-Injected: 1",
    "nul": "web-1\x00",
    "bidi-override": "web\u202e1",
    "too-long": "h" * 300,
    "empty": "",
}


async def test_hostile_host_names_are_refused_or_unknown(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        async def ticked() -> bool:
            return (await api.client.get("/api/metrics")).status_code == 200
        await until(ticked)
        for name, host in HOSTILE.items():
            for path in ("/api/metrics", "/api/metrics/history?metric=cpu.percent"):
                r = await api.client.get(path, params={"host": host})
                assert r.status_code in (400, 404, 422), (name, path, r.status_code, r.text)
                assert "X-Injected" not in r.headers and "\x00" not in r.text, name
                if r.status_code == 404:
                    assert "no host" in r.json()["detail"], name
            r = await api.client.get("/api/alerts", params={"host": host})
            assert r.status_code in (200, 400, 422), (name, r.status_code)
            if r.status_code == 200:
                assert r.json() == {"alerts": []}, name  # nobody's alerts, not everybody's
        bad = await api.client.get("/api/hosts", params={"health": "ok' OR 1=1"})
        assert bad.status_code == 422
