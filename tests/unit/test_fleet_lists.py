"""A central's lists gathered from every host (api/routes/deps.py ask_each_host): each host
answers, fails or times out on its own; a host's bad answer is its own problem; past the
list's budget the hosts not asked are named, never silently left out."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel

from watchkeeper.api.routes.deps import FANOUT, ask_each_host
from watchkeeper.runtime import Runtime

from ..conftest import make_settings


class Row(BaseModel):
    name: str


def runtime(tmp_path: Path) -> Runtime:
    return Runtime(make_settings(tmp_path), agents=[])


async def test_each_host_answers_or_is_named_with_why_in_host_order(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    try:
        async def ask(host: str, timeout: float) -> Row:
            assert timeout == 2.0  # the per-host wait, below api.command_timeout_s (10)
            if host == "dead":
                raise HTTPException(503, "host dead did not answer")
            if host == "junk":
                return Row.model_validate({"nom": 1})
            if host == "slow":
                await asyncio.Event().wait()  # never answers: cut at its timeout
            return Row(name=host)

        hosts = ["b", "dead", "a", "junk", "slow"]
        answers, problems = await ask_each_host(rt, hosts, ask)
        assert [(h, r.name) for h, r in answers] == [("b", "b"), ("a", "a")]
        assert [(p.host, p.status) for p in problems] == [("dead", 503), ("junk", 502),
                                                          ("slow", 504)]
        assert "did not answer within 2s" in problems[2].detail
    finally:
        await rt.audit.close()
        await rt.store.close()


async def test_past_the_budget_the_hosts_not_asked_are_named(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    asked: list[str] = []
    try:
        async def ask(host: str, _timeout: float) -> Any:
            asked.append(host)
            return host

        hosts = [f"web-{i}" for i in range(FANOUT * 2)]
        answers, problems = await ask_each_host(rt, hosts, ask, budget_s=0)
        assert answers == [] and asked == []
        assert [p.host for p in problems] == hosts
        assert all(p.status == 504 and "ask it alone with host=" in p.detail
                   for p in problems)
    finally:
        await rt.audit.close()
        await rt.store.close()
