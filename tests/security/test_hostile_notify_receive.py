"""Security corpus: the notification route field ``receive`` (issue 13), as a hand-edited
file or a reload could give it. The promise: a clear config error naming the route field,
and nothing applied."""

from __future__ import annotations

from typing import Any

import pytest

from watchkeeper.config import ConfigError, validate

OPS = {"name": "ops", "url": "json://127.0.0.1:9/ops", "escalate_to": "boss"}


@pytest.mark.parametrize("value", [
    pytest.param("escalations; rm -rf /", id="shell-text"),
    pytest.param("ESCALATIONS", id="upper-case"),
    pytest.param(["escalations"], id="a-list"),
    pytest.param(None, id="null"),
    pytest.param(1, id="a-number"),
    pytest.param("escalations\n", id="trailing-newline"),
])
def test_a_receive_value_that_is_not_all_or_escalations_is_refused(value: Any) -> None:
    routes = [OPS, {"name": "boss", "url": "json://127.0.0.1:9/boss", "receive": value}]
    with pytest.raises(ConfigError, match=r"notify\.routes\.1\.receive"):
        validate({"notify": {"routes": routes}})


@pytest.mark.parametrize(("routes", "says"), [
    pytest.param([{"name": "boss", "url": "json://127.0.0.1:9/b", "receive": "escalations"}],
                 "no route escalates to it", id="an-escalation-route-nobody-escalates-to"),
    pytest.param([{**OPS, "escalate_to": None},
                  {"name": "boss", "url": "json://127.0.0.1:9/b", "receive": "escalations"}],
                 "no route escalates to it", id="escalate-to-removed-by-an-edit"),
    pytest.param([{"name": "am", "alertmanager": "http://127.0.0.1:9093",
                   "receive": "escalations"}], "needs a url route",
                 id="an-alertmanager-route-that-would-hear-nothing"),
])
def test_a_route_that_would_never_hear_anything_is_refused(routes: list[dict[str, Any]],
                                                           says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        validate({"notify": {"routes": routes}})
