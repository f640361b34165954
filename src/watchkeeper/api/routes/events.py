"""The live event stream (every bus event as Server-Sent Events) and the recent activity."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from starlette.types import Receive, Scope, Send

from watchkeeper import __version__
from watchkeeper.api.auth import require_read
from watchkeeper.api.routes.deps import RuntimeDep
from watchkeeper.api.schemas import ActivityBody, ActivityItem, Text
from watchkeeper.bus import BusClosedError, Subscription, topic_matches
from watchkeeper.events import Command, CommandReply, Event, MetricSnapshot
from watchkeeper.series import flatten

router = APIRouter(tags=["events"])

#: Events a browser may not keep up with are dropped oldest-first, never held for it.
STREAM_QUEUE = 512

#: Milliseconds a client waits before it reconnects (sent once, at the start).
RETRY_MS = 2000

#: A comment line this often keeps proxies and browsers from closing an idle stream.
KEEPALIVE_S = 15.0

Snapshots = Literal["summary", "full", "none"]


def snapshot_summary(snap: MetricSnapshot) -> dict[str, Any]:
    """A sensor tick as a dashboard needs it: flat values, services and the comment."""
    return {
        "host": snap.host, "at": snap.at.isoformat(), "seq": snap.seq,
        "interval_s": snap.interval_s,
        "values": [{"metric": s.metric, "dimension": s.dimension, "value": s.value}
                   for s in flatten(snap)],
        "services": [s.model_dump(mode="json") for s in snap.services],
        "comment": snap.comment,
        "missing": [m.model_dump(mode="json") for m in snap.missing],
    }


def _message(event: Event, snapshots: Snapshots, seq: int) -> bytes | None:
    """One SSE message (event, id, data lines), or None for what this stream leaves out."""
    if isinstance(event, (Command, CommandReply)):
        return None  # request/reply plumbing, not news
    if isinstance(event, MetricSnapshot) and snapshots != "full":
        if snapshots == "none":
            return None
        return _sse("metrics", seq, json.dumps(snapshot_summary(event)))
    return _sse(str(getattr(event, "kind", type(event).__name__)), seq,
                event.model_dump_json())


def _sse(kind: str, seq: int, data: str, *, retry_ms: int | None = None) -> bytes:
    # JSON from json.dumps / pydantic has no raw newlines, so one data line is enough.
    head = f"retry: {retry_ms}\n" if retry_ms is not None else ""
    return f"{head}event: {kind}\nid: {seq}\ndata: {data}\n\n".encode()


class EventStream(Response):
    """A text/event-stream response that owns its bus subscription from start to end.

    Written at the ASGI level rather than with a generator: a client that goes away while
    its stream is stalled must still release its subscription at once, and a generator
    suspended at ``yield`` would only be closed by the garbage collector.
    """

    media_type = "text/event-stream"

    def __init__(self, sub: Subscription, patterns: list[str], snapshots: Snapshots,
                 hello: dict[str, Any], streams: set[Subscription]) -> None:
        super().__init__(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        # An open-ended stream: no Content-Length (Response sets 0 for an empty body).
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.sub = sub
        self.patterns = patterns
        self.snapshots = snapshots
        self.hello = hello
        self.streams = streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.sub.close()  # wakes the loop below, which then ends

        watcher = asyncio.create_task(watch_disconnect())
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": self.raw_headers})
            await self._body(send, _sse("ready", 0, json.dumps(self.hello),
                                        retry_ms=RETRY_MS))
            for seq in itertools.count(1):
                try:
                    topic, event = await asyncio.wait_for(self.sub.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    await self._body(send, b": keep-alive\n\n")
                    continue
                except BusClosedError:  # the client left, or the server is stopping
                    break
                if any(topic_matches(p, topic) for p in self.patterns):
                    chunk = _message(event, self.snapshots, seq)
                    if chunk is not None:
                        await self._body(send, chunk)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the connection broke while we wrote to it
            pass
        finally:
            watcher.cancel()
            self.streams.discard(self.sub)
            self.sub.close()

    @staticmethod
    async def _body(send: Send, chunk: bytes) -> None:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})


def stream_topics(
    topics: Annotated[Text, Query(description="comma-separated topic globs, e.g. "
                                              "alerts.*,actions.*")] = ">",
) -> list[str]:
    """The topic globs a client follows (checked before the stream starts)."""
    patterns = [p.strip() for p in topics.split(",") if p.strip()]
    if not patterns or any(" " in p for p in patterns):
        raise HTTPException(422, "topics: comma-separated topic globs such as alerts.* or >")
    return patterns


@router.get("/api/events", response_class=EventStream, status_code=200,
            dependencies=[Depends(require_read)],
            responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "one message per bus event: event (its kind), "
                                            "id, data (its JSON)"}})
def events(
    request: Request, runtime: RuntimeDep,
    patterns: Annotated[list[str], Depends(stream_topics)],
    snapshots: Annotated[Snapshots, Query(description="metric snapshots: summary (flat "
                                                      "values), full, or none")] = "summary",
) -> EventStream:
    """Follow the bus live: a ``ready`` message once subscribed, then metrics (each sensor
    tick), alerts, remediation steps, agent errors and restarts, config changes. A slow
    reader loses its oldest events; it never holds monitoring back."""
    streams: set[Subscription] = request.app.state.streams
    sub = runtime.bus.subscribe(">", name="api-events", maxsize=STREAM_QUEUE, lossy=True)
    streams.add(sub)
    return EventStream(sub, patterns, snapshots,
                       {"host": runtime.host, "version": __version__}, streams)


#: Kinds that make up the activity feed: what happened, not the routine ticks and heartbeats.
ActivityKind = Literal["alert", "remediation", "agent_error", "agent_restarted",
                       "agent_gave_up", "config_changed", "analyzer_notice"]
ACTIVITY_KINDS: tuple[str, ...] = get_args(ActivityKind)


@router.get("/api/activity", response_model=ActivityBody, dependencies=[Depends(require_read)])
def activity(runtime: RuntimeDep,
             limit: Annotated[int, Query(ge=1, le=1000)] = 100,
             kind: Annotated[list[ActivityKind] | None,
                             Query(description="only these kinds (default: all of them)")]
             = None) -> ActivityBody:
    """The newest stored events, oldest first (the live stream's kinds, from the history):
    what a dashboard shows before anything new arrives."""
    stored = runtime.store.events(kinds=kind or ACTIVITY_KINDS, limit=limit)
    return ActivityBody(events=[ActivityItem(id=e.id, at=e.at, topic=e.topic, kind=e.kind,
                                             event=e.event.model_dump(mode="json"))
                                for e in stored])


def close_streams(app: Any) -> None:
    """End every open event stream (at shutdown: the server would wait on them forever)."""
    for sub in list(app.state.streams):
        sub.close()
