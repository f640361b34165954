"""`watchkeeper simulate SCENARIO`: make real trouble on this host, safely, and report what a
running watchkeeper noticed and did about it."""

from __future__ import annotations

import sys
from typing import Any

import click

from watchkeeper.cli.main import _client, _remote_options, _settings
from watchkeeper.safetext import json_text
from watchkeeper.simulate.scenarios import LOCAL, SCENARIOS, SERVER


def _server(ctx: click.Context, url: str | None, token: str | None
            ) -> tuple[Any | None, str]:
    """A client for the running server, or None and why not (then only the run is
    reported)."""
    from watchkeeper.cli.client import ClientError

    try:
        client = _client(ctx, url, token)
    except SystemExit:  # an invalid configuration file: said already
        raise
    try:
        client.get("/api/system")
    except ClientError as exc:
        client.close()
        said = "not reachable" if exc.code == 3 else "not readable"
        return None, f"{said}, so only what the run did is reported: {exc}"
    return client, ""


def _log_files(client: Any | None, ctx: click.Context) -> list[str]:
    """The server's remediation.log_files (the local configuration's without a server)."""
    if client is not None:
        from watchkeeper.cli.client import ClientError

        try:
            cfg = client.get("/api/config").data.get("config", {})
            rules = cfg.get("remediation", {}).get("log_files", [])
            return [str(r["path"]) for r in rules if isinstance(r, dict) and "path" in r]
        except (ClientError, AttributeError, TypeError):
            return []
    return [str(r.path) for r in _settings(ctx).remediation.log_files]


@click.command()
@click.argument("scenario", type=click.Choice(list(SCENARIOS)))
@click.option("--duration", default="60s", show_default=True,
              help="How long the condition lasts: 90s, 5m (at most 30m).")
@click.option("--cores", type=int, default=None, help="cpu: cores to spin (default 1).")
@click.option("--size", default=None,
              help="memory: bytes held (default 256M); leak, disk: the most it reaches "
                   "(default rate x duration); logflood: the most written.")
@click.option("--rate", default=None, help="leak: growth (default 4M/s); disk: write rate "
                                            "(default 1M/s).")
@click.option("--path", default=None, help="disk: directory to fill (default $TMPDIR); "
                                            "logflood: a directory to write a log of its "
                                            "own in (e.g. /var/log, watched by default), or "
                                            "one of the server's remediation.log_files to "
                                            "append to.")
@click.option("--procs", type=int, default=None,
              help="forkstorm: processes (default 150, above analyzer.fork_storm_processes).")
@click.option("--lines-per-s", "lines_per_s", type=int, default=None,
              help="logflood: lines a second (default 2000).")
@click.option("--settle", type=click.FloatRange(0, 600), default=60.0, show_default=True,
              help="Seconds to wait after the run for the alert to resolve.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the report as JSON: {run, watchkeeper, note}.")
@_remote_options
@click.pass_context
def simulate(ctx: click.Context, scenario: str, duration: str, cores: int | None,
             size: str | None, rate: str | None, path: str | None, procs: int | None,
             lines_per_s: int | None, settle: float, as_json: bool, url: str | None,
             token: str | None) -> None:
    """Create SCENARIO for real, bounded and cleaned up (also on Ctrl-C, SIGTERM, or when
    killed), then report what watchkeeper at --url noticed and did: time to detect, the
    alert, actions, time to recover. Refuses unsafe sizes, changing nothing (exit 2)."""
    from watchkeeper.simulate.lifecycle import LifecycleError
    from watchkeeper.simulate.limits import Refused

    if scenario in SERVER:
        _in_server(ctx, url, token, scenario, duration, settle, as_json,
                   [n for n, v in (("--cores", cores), ("--size", size), ("--rate", rate),
                                   ("--path", path), ("--procs", procs),
                                   ("--lines-per-s", lines_per_s)) if v is not None])
        return
    assert scenario in LOCAL
    if not sys.platform.startswith("linux"):
        click.echo("watchkeeper: simulate runs on Linux only (it relies on "
                   "PR_SET_PDEATHSIG and /proc)", err=True)
        sys.exit(2)
    client, note = _server(ctx, url, token)
    try:
        _simulate(ctx, client, note, scenario, duration, cores, size, rate, path, procs,
                  lines_per_s, settle, as_json)
    except Refused as exc:
        from watchkeeper.safetext import printable

        click.echo(f"watchkeeper: simulate {scenario} refused, nothing was done: "
                   f"{printable(str(exc), 500)}", err=True)
        sys.exit(2)
    except (LifecycleError, OSError) as exc:  # its run directory or a worker cannot be made
        from watchkeeper.safetext import printable

        click.echo(f"watchkeeper: simulate {scenario} could not start: "
                   f"{printable(str(exc), 500)}", err=True)
        sys.exit(1)
    finally:
        if client is not None:
            client.close()


def _simulate(ctx: click.Context, client: Any | None, note: str, scenario: str, duration: str,
              cores: int | None, size: str | None, rate: str | None, path: str | None,
              procs: int | None, lines_per_s: int | None, settle: float,
              as_json: bool) -> None:
    from watchkeeper.simulate import report
    from watchkeeper.simulate.runner import execute
    from watchkeeper.simulate.scenarios import LiveHost, Request, plan

    req = Request(scenario=scenario, duration=duration, cores=cores, size=size, rate=rate,
                  path=path, procs=procs, lines_per_s=lines_per_s,
                  log_files=_log_files(client, ctx) if scenario == "logflood" and path
                  else ())
    checked = plan(req, LiveHost())
    if not as_json:
        click.echo(f"simulate {scenario}: {checked.summary}; Ctrl-C ends it early", err=True)
    outcome = execute(checked)
    resp = None
    if client is not None:
        from watchkeeper.cli.client import ClientError

        mount = _mountpoint(str(checked.write_under)) if scenario == "disk" else None
        flooded = outcome.append_to or (outcome.files[0] if scenario == "logflood"
                                        and outcome.files else None)
        culprit = report.Culprit(frozenset(outcome.pids), tuple(outcome.names), mount,
                                 flooded)
        try:
            resp = report.wait_response(lambda p, q: client.get(p, q).data, client.url,
                                        outcome, culprit, settle)
        except ClientError as exc:
            note = f"could not be read after the run: {exc}"
    if as_json:
        click.echo(json_text({"run": outcome.as_dict(),
                              "watchkeeper": resp.as_dict() if resp else None,
                              "note": note or None}))
    else:
        for line in report.lines(outcome, resp, note):
            click.echo(line)
    if not outcome.cleaned:
        sys.exit(1)


def _mountpoint(path: str) -> str:
    """The mount point of the filesystem holding ``path`` (the disk alerts' dimension)."""
    import os

    p = os.path.realpath(path)
    while not os.path.ismount(p):
        p = os.path.dirname(p)
    return p


def _in_server(ctx: click.Context, url: str | None, token: str | None, scenario: str,
               duration: str, settle: float, as_json: bool, extra: list[str]) -> None:
    """service, crashloop: the server runs its demo service and crashes it (POST
    /api/command); then the report, as for the others."""
    from datetime import datetime

    from watchkeeper.cli.client import ClientError
    from watchkeeper.cli.main import _call
    from watchkeeper.safetext import printable
    from watchkeeper.simulate import report
    from watchkeeper.simulate.limits import Refused, parse_duration
    from watchkeeper.simulate.runner import Outcome

    try:
        if extra:
            raise Refused(f"{scenario} does not take {', '.join(extra)}")
        seconds = parse_duration(duration)
        if seconds > 600:
            raise Refused(f"duration {duration!r} is longer than the cap of 600 s for a demo "
                          "service")
    except Refused as exc:
        click.echo(f"watchkeeper: simulate {scenario} refused, nothing was done: "
                   f"{printable(str(exc), 500)}", err=True)
        sys.exit(2)
    if not as_json:
        click.echo(f"simulate {scenario}: asking the server to run its demo service for "
                   f"{seconds:g} s and crash it", err=True)
    reply = _call(ctx, url, token, lambda c: c.post("/api/command", {
        "command": "simulate", "scenario": scenario, "duration_s": seconds}))
    try:
        sim = reply.data["simulation"]
        service, pid = str(sim["service"]), sim.get("pid")

        def at(key: str) -> datetime:
            return datetime.fromisoformat(str(sim[key]).replace("Z", "+00:00"))

        crashed, heals, until = at("crashed_at"), at("heals_at"), at("until")
    except (KeyError, TypeError, ValueError):
        click.echo("watchkeeper: the answer to POST /api/command is not what watchkeeper "
                   "sends: is --url a watchkeeper server of this version?", err=True)
        sys.exit(1)
    what = ("killed once (SIGKILL)" if scenario == "service"
            else "made to exit at every start, for two thirds of the run")
    outcome = Outcome(scenario=scenario, summary=f"demo service {printable(service, 64)} "
                      f"(pid {pid}) {what}", started_at=crashed, ended_at=heals,
                      duration_s=(until - crashed).total_seconds(), ended_by="time",
                      pids=[int(pid)] if isinstance(pid, int) else [], names=[service],
                      files=[], append_to=None)
    client = _client(ctx, url, token)
    try:
        from datetime import timezone

        culprit = report.Culprit(frozenset(outcome.pids), (service,))

        def fetch(path: str, params: dict[str, Any]) -> Any:
            return client.get(path, params).data

        # Until the demo is removed (its alert can resolve only once it is back or gone),
        # then as long as --settle for the resolution.
        left = (until - datetime.now(timezone.utc)).total_seconds()
        resp = report.wait_response(fetch, client.url, outcome, culprit,
                                    max(0.0, left) + settle)
        gone = _until_gone(client, service, until)
        outcome.cleaned = gone
    except ClientError as exc:
        click.echo(f"watchkeeper: {exc}", err=True)
        sys.exit(exc.code)
    finally:
        client.close()
    if as_json:
        click.echo(json_text({"run": outcome.as_dict(), "watchkeeper": resp.as_dict(),
                              "note": None}))
    else:
        for line in report.lines(outcome, resp, ""):
            click.echo(line)
    if not outcome.cleaned:
        sys.exit(1)


def _until_gone(client: Any, service: str, until: Any) -> bool:
    """Whether the server removed the demo service (waited for until its end, plus 15 s)."""
    import time
    from datetime import datetime, timezone

    deadline = time.monotonic() + max(0.0, (until - datetime.now(timezone.utc))
                                      .total_seconds()) + 15
    while True:
        data = client.get("/api/services").data
        names = [s.get("name") for s in data.get("services", []) if isinstance(s, dict)] \
            if isinstance(data, dict) else []
        if service not in names:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
