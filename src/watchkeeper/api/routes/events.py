"""The live event stream (every bus event as Server-Sent Events) and the recent activity."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from starlette.types import Receive, Scope, Send

from watchkeeper import __version__
from watchkeeper.api.auth import require_read
from watchkeeper.api.journal import Entry, EventJournal
from watchkeeper.api.routes.deps import RuntimeDep
from watchkeeper.api.schemas import ActivityBody, ActivityItem, ErrorBody, Text
from watchkeeper.bus import topic_matches
from watchkeeper.events import MetricSnapshot
from watchkeeper.runtime import Runtime
from watchkeeper.series import flatten

router = APIRouter(tags=["events"])

#: Milliseconds a client waits before it reconnects (sent once, at the start).
RETRY_MS = 2000

#: A comment line this often keeps proxies and browsers from closing an idle stream.
KEEPALIVE_S = 15.0

#: Seconds a client refused for too many streams is asked to wait (Retry-After).
STREAM_RETRY_AFTER_S = 10

Snapshots = Literal["summary", "full", "none"]


def snapshot_summary(snap: MetricSnapshot) -> dict[str, Any]:
    """A sensor tick as a dashboard needs it: flat values and services."""
    return {
        "host": snap.host, "at": snap.at.isoformat(), "seq": snap.seq,
        "interval_s": snap.interval_s,
        "values": [{"metric": s.metric, "dimension": s.dimension, "value": s.value}
                   for s in flatten(snap)],
        "services": [s.model_dump(mode="json") for s in snap.services],
        "missing": [m.model_dump(mode="json") for m in snap.missing],
    }


def _message(entry: Entry, snapshots: Snapshots, event_id: str) -> bytes | None:
    """One SSE message (event, id, data lines), or None for what this stream leaves out;
    encoded once per format, however many streams send it."""
    key = "full" if not isinstance(entry.event, MetricSnapshot) else snapshots
    if key not in entry.wire:
        event = entry.event
        if isinstance(event, MetricSnapshot) and snapshots != "full":
            data = None if snapshots == "none" else (
                "metrics", json.dumps(snapshot_summary(event)))
        else:
            data = (str(getattr(event, "kind", type(event).__name__)),
                    event.model_dump_json())
        entry.wire[key] = None if data is None else (
            f"event: {data[0]}\ndata: {data[1]}\n\n".encode())
    body = entry.wire[key]
    return None if body is None else f"id: {event_id}\n".encode() + body


def _sse(kind: str, data: str, *, retry_ms: int | None = None) -> bytes:
    # JSON from json.dumps / pydantic has no raw newlines, so one data line is enough.
    head = f"retry: {retry_ms}\n" if retry_ms is not None else ""
    return f"{head}event: {kind}\ndata: {data}\n\n".encode()


class EventStream(Response):
    """A text/event-stream response: a cursor into the event journal, from start to end.

    Written at the ASGI level rather than with a generator: a client that goes away while
    its stream waits must end it at once, and a generator suspended at ``yield`` would only
    be closed by the garbage collector.
    """

    media_type = "text/event-stream"

    def __init__(self, journal: EventJournal, cursor: int, patterns: list[str],
                 snapshots: Snapshots, hello: dict[str, Any],
                 streams: set[EventStream]) -> None:
        super().__init__(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        # An open-ended stream: no Content-Length (Response sets 0 for an empty body).
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.journal = journal
        self.cursor = cursor
        self.patterns = patterns
        self.snapshots = snapshots
        self.hello = hello
        self.streams = streams
        self.fell_behind = 0  # times this reader lost news it had not read yet
        self.ended = False

    def end(self) -> None:
        """End this stream as soon as it has sent what it is sending (the client may come
        back with its Last-Event-ID)."""
        self.ended = True
        self.journal.wake()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        self.streams.add(self)  # already counted by the route; again in case it was not
        watcher = asyncio.create_task(watch_disconnect())
        pump = asyncio.create_task(self._pump(send))
        try:
            await asyncio.wait({watcher, pump}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watcher, pump):
                task.cancel()
            await asyncio.gather(watcher, pump, return_exceptions=True)
            self.streams.discard(self)

    async def _pump(self, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": self.raw_headers})
            await self._body(send, _sse("ready", json.dumps(self.hello), retry_ms=RETRY_MS))
            if self.hello.get("reset"):
                await self._body(send, _sse("reset", json.dumps(
                    {"reason": self.hello["reset"]})))
            journal = self.journal
            while not journal.closed and not self.ended:
                if not await journal.wait(self.cursor, KEEPALIVE_S):
                    await self._body(send, b": keep-alive\n\n")
                    continue
                if journal.closed or self.ended:
                    break
                if journal.lost_after(self.cursor):
                    self.fell_behind += 1
                    await self._body(send, _sse("reset", json.dumps(
                        {"reason": "this reader fell behind and news was lost; read the "
                                   "current state again"})))
                for entry in journal.after(self.cursor):
                    self.cursor = entry.n
                    if any(topic_matches(p, entry.topic) for p in self.patterns):
                        chunk = _message(entry, self.snapshots, journal.event_id(entry.n))
                        if chunk is not None:
                            await self._body(send, chunk)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the connection broke while we wrote to it
            pass

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
            responses={503: {"model": ErrorBody, "description": "api.max_streams streams are "
                                                                "open already"},
                       200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "one message per bus event: event (its kind), "
                                            "id, data (its JSON)"}})
async def events(
    request: Request, runtime: RuntimeDep,
    patterns: Annotated[list[str], Depends(stream_topics)],
    snapshots: Annotated[Snapshots, Query(description="metric snapshots: summary (flat "
                                                      "values), full, or none")] = "summary",
    last_event_id: Annotated[Text | None, Header(
        max_length=100, description="resume after this id: the news missed since then is "
                                    "sent first (EventSource sends it when it reconnects)")]
    = None,
) -> EventStream:
    """Follow the bus live: a ``ready`` message once subscribed, then metrics (each sensor
    tick), alerts, remediation steps, agent errors and restarts, config changes. A slow
    reader never holds monitoring back; if it falls so far behind that news it has not read
    is no longer kept, or asks to resume from an id that is not kept, it gets a ``reset``
    message: read the current state again."""
    streams: set[EventStream] = request.app.state.streams
    limit: int = request.app.state.max_streams
    if len(streams) >= limit:
        # Each idle stream costs a connection and ~35 KB: 2,000 of them took 70 MB.
        raise HTTPException(503, f"{len(streams)} live streams are open, the most this "
                                 f"server keeps (api.max_streams: {limit}); close one (another "
                                 "tab or client) or try again later",
                            headers={"Retry-After": str(STREAM_RETRY_AFTER_S)})
    journal = event_journal(request.app, runtime)
    cursor, reset = journal.resume_from(last_event_id)
    hello: dict[str, Any] = {"host": runtime.host, "version": __version__}
    if reset:
        hello["reset"] = f"cannot resume from {last_event_id}: {reset}"
    stream = EventStream(journal, cursor, patterns, snapshots, hello, streams)
    # Counted now, not when it starts sending: requests that arrive together cannot all
    # pass the check before any of them is counted.
    streams.add(stream)
    return stream


def event_journal(app: Any, runtime: Runtime) -> EventJournal:
    """The app's journal, started on first use (it needs the server's running loop)."""
    journal: EventJournal | None = getattr(app.state, "journal", None)
    if journal is None:
        journal = app.state.journal = EventJournal(runtime.bus)
    journal.start()
    return journal


#: Kinds that make up the activity feed: what happened, not the routine ticks and heartbeats.
ActivityKind = Literal["alert", "remediation", "agent_error", "agent_restarted",
                       "agent_gave_up", "config_changed", "analyzer_notice", "spool_gap",
                       "command_refused"]
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
                                for e in stored],
                        audit_chain=runtime.audit.chain_status())


def close_streams(app: Any) -> None:
    """End every open event stream (at shutdown: the server would wait on them forever)."""
    for stream in list(app.state.streams):
        stream.end()
    journal: EventJournal | None = getattr(app.state, "journal", None)
    if journal is not None:
        journal.close()
