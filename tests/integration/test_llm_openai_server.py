"""The fixture server itself, and OpenAiClient's error mapping against it."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time

import pytest

from watchkeeper.analysis.llm.client import (
    LlmBadReply,
    LlmConnectionError,
    LlmRateLimited,
    LlmRequestRejected,
    LlmServerError,
    LlmTimeout,
)
from watchkeeper.analysis.llm.openai_client import OpenAiClient

from ..openai_server import (
    OpenAIServer,
    completion,
    hang,
    http_error,
    rate_limited,
    raw,
    tool_calls,
)

HI = [{"role": "user", "content": "hi"}]


def post(port: int, body: bytes, headers: dict[str, str] | None = None,
         timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_records_every_byte_and_follows_the_script() -> None:
    with OpenAIServer([completion({"a": 1})]) as srv:
        status, body = post(srv.port, b'{"model":"m","messages":[]}', {"X-Secret": "s3"})
        assert status == 200
        assert json.loads(json.loads(body)["choices"][0]["message"]["content"]) == {"a": 1}
        status, _ = post(srv.port, b"{}")
        assert status == 500 and srv.unexpected == 1  # nothing scripted left
        [first, _] = srv.chat_requests
        assert first.raw.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert b"X-Secret: s3\r\n" in first.raw and first.raw.endswith(first.body)
        assert first.json() == {"model": "m", "messages": []}


def test_chunked_request_bodies_are_recorded() -> None:
    with OpenAIServer(default=completion("ok")) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        try:
            conn.request("POST", "/v1/chat/completions", body=iter([b'{"a":', b"1}"]),
                         encode_chunked=True)
            assert conn.getresponse().status == 200
        finally:
            conn.close()
        assert srv.chat_requests[0].json() == {"a": 1}


def test_a_hang_is_released_when_the_server_stops() -> None:
    srv = OpenAIServer(default=hang()).start()
    errors: list[BaseException] = []

    def client() -> None:
        try:
            post(srv.port, b"{}", timeout=30)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + 5
    while not srv.chat_requests and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.monotonic()
    srv.stop()
    thread.join(5)
    assert time.monotonic() - start < 2.0
    assert not thread.is_alive() and len(errors) == 1


def test_an_idle_connection_does_not_block_stop() -> None:
    srv = OpenAIServer().start()
    with socket.create_connection(("127.0.0.1", srv.port)):
        time.sleep(0.05)
        start = time.monotonic()
        srv.stop()
        assert time.monotonic() - start < 2.0


# --------------------------------------------------------------------------- OpenAiClient


@pytest.mark.parametrize(("reply", "error"), [
    (rate_limited("7"), LlmRateLimited),
    (http_error(500), LlmServerError),
    (http_error(503), LlmServerError),
    (http_error(408), LlmServerError),
    (http_error(401), LlmRequestRejected),
    (http_error(404), LlmRequestRejected),
    (raw("<html>not json</html>", content_type="text/html"), LlmBadReply),
    (raw(json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                     "choices": []})), LlmBadReply),
])
async def test_errors_are_mapped(reply: object, error: type[Exception]) -> None:
    with OpenAIServer(default=reply) as srv:  # type: ignore[arg-type]
        client = OpenAiClient(model="m", base_url=srv.base_url, timeout=2.0)
        try:
            with pytest.raises(error) as info:
                await client.chat(HI)
        finally:
            await client.aclose()
        assert len(srv.chat_requests) == 1  # the openai client's own retries are off
    if isinstance(info.value, LlmRateLimited):
        assert info.value.retry_after == 7.0


async def test_timeout_and_refused_connection() -> None:
    with OpenAIServer(default=hang()) as srv:
        client = OpenAiClient(model="m", base_url=srv.base_url, timeout=0.2)
        start = time.monotonic()
        try:
            with pytest.raises(LlmTimeout):
                await client.chat(HI)
        finally:
            await client.aclose()
        assert time.monotonic() - start < 1.5
        port = srv.port
    client = OpenAiClient(model="m", base_url=f"http://127.0.0.1:{port}/v1", timeout=1.0)
    try:
        with pytest.raises(LlmConnectionError):
            await client.chat(HI)
    finally:
        await client.aclose()


async def test_reply_mapping() -> None:
    with OpenAIServer([tool_calls(("get_process", {"pid": 1})),
                       completion("done", usage=(11, 4))]) as srv:
        client = OpenAiClient(model="m", base_url=srv.base_url, api_key="k", json_mode=True)
        try:
            first = await client.chat(HI, [{"type": "function", "function": {
                "name": "get_process", "parameters": {"type": "object", "properties": {}}}}])
            second = await client.chat(HI)
        finally:
            await client.aclose()
        assert first.tool_calls[0].name == "get_process"
        assert json.loads(first.tool_calls[0].arguments) == {"pid": 1}
        assert first.finish_reason == "tool_calls"
        assert second.content == "done" and second.usage is not None
        assert second.usage.total_tokens == 15
        body = srv.chat_requests[0].json()
        assert body["response_format"] == {"type": "json_object"} and "tools" in body
        assert "tools" not in srv.chat_requests[1].json()


async def test_concurrent_requests_are_served() -> None:
    with OpenAIServer(default=completion("ok")) as srv:
        client = OpenAiClient(model="m", base_url=srv.base_url)
        try:
            replies = await asyncio.gather(*(client.chat(HI) for _ in range(8)))
        finally:
            await client.aclose()
    assert [r.content for r in replies] == ["ok"] * 8
