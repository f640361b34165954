"""Security corpus: hostile paths (issue 11's "file actions and their parameters" class).

Two promises. At request time, a path parameter is checked and normalised by the action's
own ``check`` (the policy's first step): one that could never be acted on (traversal,
outside every clean-up root, a log file not configured) is refused at once with the reason
and audited, never queued for approval; one that could is shown normalised, beside the
parameters as given. At run time, no file action follows a symlink anywhere on the path:
every component is opened from ``/`` with O_NOFOLLOW, so a directory swapped for a symlink
after the request (or the preview) and before the run is refused, and nothing outside is
touched. Real temporary directories, files and symlinks the tests create.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from watchkeeper.agents.remediator import RemediatorAgent
from watchkeeper.analysis.llm.tools import Toolbox, ToolContext
from watchkeeper.config import validate
from watchkeeper.remediation.actions import ActionContext, get_action
from watchkeeper.remediation.policy import ActionRequest
from watchkeeper.runtime import Runtime

OLD = 1_000_000_000.0  # 2001: older than every age limit


class Tree:
    """A clean-up root, a log directory, and an outside whose files must survive."""

    def __init__(self, tmp_path: Path) -> None:
        self.base = tmp_path
        self.cleanup = tmp_path / "srv" / "cleanup"
        self.logs = tmp_path / "srv" / "logs"
        self.log = self.logs / "app.log"
        self.outside = tmp_path / "outside"
        for d in (self.cleanup / "sub", self.logs, self.outside / "sub"):
            d.mkdir(parents=True)
        for f in (self.cleanup / "old.tmp", self.cleanup / "sub" / "old.tmp",
                  self.outside / "old.tmp", self.outside / "sub" / "old.tmp"):
            f.write_text("old")
            os.utime(f, (OLD, OLD))
        self.log.write_text("L" * 100)
        # What a symlinked logs/ would lead to: a file of the same name outside.
        (self.outside / "app.log").write_text("precious")

    def settings(self, **remediation: Any) -> Any:
        return validate({
            "storage": {"data_dir": str(self.base / "data")},
            "logging": {"dir": str(self.base / "wklogs"), "color": False},
            "remediation": {
                "startup_grace_s": 0,
                "cleanup_roots": [{"path": str(self.cleanup), "patterns": ["*.tmp"]}],
                "log_files": [{"path": str(self.log), "max_bytes": 10, "keep": 0}],
                **remediation}})

    def ctx(self) -> ActionContext:
        return ActionContext(settings=self.settings().remediation)

    def outside_intact(self) -> None:
        assert (self.outside / "old.tmp").read_text() == "old"
        assert (self.outside / "sub" / "old.tmp").read_text() == "old"
        assert (self.outside / "app.log").read_text() == "precious"

    def swap_for_link(self, directory: Path, to: Path) -> None:
        """The attack: ``directory`` moved away and a symlink to ``to`` in its place."""
        directory.rename(directory.with_name(directory.name + ".moved"))
        directory.symlink_to(to, target_is_directory=True)


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


# ------------------------------------------------------------------ at request time


#: (action, params with {cleanup}/{logs}/{log}/{outside}, the reason a human reads)
NEVER = [
    pytest.param("clean_disk", {"root": "{cleanup}/../../outside"}, "contains '..'",
                 id="root-dotdot-out-of-the-root"),
    pytest.param("clean_disk", {"root": "{cleanup}/sub/../../../outside"}, "contains '..'",
                 id="root-dotdot-deep"),
    pytest.param("clean_disk", {"root": "cleanup/../outside"}, "is not an absolute path",
                 id="root-relative-traversal"),
    pytest.param("clean_disk", {"root": "{outside}"}, "is not inside a configured clean-up root",
                 id="root-outside"),
    pytest.param("clean_disk", {"root": "{cleanup}x"}, "is not inside a configured clean-up root",
                 id="root-sibling-with-the-same-prefix"),
    pytest.param("clean_disk", {"root": "/"}, "is not inside a configured clean-up root",
                 id="root-slash"),
    pytest.param("clean_disk", {"root": "//{outside}"}, "is not inside a configured clean-up root",
                 id="root-double-slash-outside"),
    pytest.param("clean_disk", {"root": "{cleanup}\x00/sub"}, "NUL byte", id="root-nul-byte"),
    pytest.param("rotate_log", {"path": "/etc/passwd"}, "is not a configured log file",
                 id="log-etc-passwd"),
    pytest.param("rotate_log", {"path": "/etc/shadow"}, "is not a configured log file",
                 id="log-etc-shadow"),
    pytest.param("rotate_log", {"path": "{logs}/../logs/app.log"}, "contains '..'",
                 id="log-dotdot-back-to-the-log"),
    pytest.param("rotate_log", {"path": "{log}.1"}, "is not a configured log file",
                 id="log-rotated-copy-name"),
    pytest.param("rotate_log", {"path": "{logs}"}, "is not a configured log file",
                 id="log-its-directory"),
    pytest.param("rotate_log", {"path": "app.log"}, "is not an absolute path",
                 id="log-relative"),
    pytest.param("rotate_log", {"path": "{log}\x00"}, "NUL byte", id="log-nul-byte"),
    pytest.param("run_script", {"name": "cleanup"}, "not declared", id="script-undeclared"),
]


def fill(tree: Tree, params: dict[str, Any]) -> dict[str, Any]:
    return {k: v.format(cleanup=tree.cleanup, logs=tree.logs, log=tree.log,
                        outside=tree.outside) for k, v in params.items()}


@pytest.mark.parametrize("source", ["llm", "rule", "operator"])
@pytest.mark.parametrize(("action", "params", "reason"), NEVER)
async def test_a_request_that_can_never_succeed_is_refused_at_once_never_queued(
        tree: Tree, action: str, params: dict[str, Any], reason: str, source: str) -> None:
    rt = Runtime(tree.settings())
    agent = next(a for a in rt.agents if isinstance(a, RemediatorAgent))
    given = fill(tree, params)
    try:
        decision = await agent.submit(ActionRequest(action=action, params=given, host=rt.host,
                                                    source=source, reasoning="hostile"))
        assert decision.verdict == "refused" and decision.check == "target", decision.why
        assert reason in decision.why
        assert decision.request.params == given  # shown exactly as given
        assert rt.audit.pending() == []
        [entry] = rt.audit.entries(kind="decision")
        assert entry.verdict == "refused" and reason in entry.message
        assert not rt.audit.entries(kind="approval_requested")
        tree.outside_intact()
        assert tree.log.read_text() == "L" * 100
    finally:
        await rt.audit.close()
        await rt.bus.close()
        await rt.store.close()


@pytest.mark.parametrize(("params", "target"), [
    pytest.param({"root": "{cleanup}//sub/./"}, "{cleanup}/sub", id="root-redundant-slashes"),
    pytest.param({"root": "{cleanup}/"}, "{cleanup}", id="root-trailing-slash"),
])
async def test_an_approval_shows_the_normalised_target_and_the_parameters_as_given(
        tree: Tree, params: dict[str, Any], target: str) -> None:
    rt = Runtime(tree.settings())
    agent = next(a for a in rt.agents if isinstance(a, RemediatorAgent))
    given = fill(tree, params)
    try:
        decision = await agent.submit(ActionRequest(action="clean_disk", params=given,
                                                    host=rt.host, source="llm"))
        assert decision.verdict == "approve", decision.why
        [approval] = rt.audit.pending()
        shown = target.format(cleanup=tree.cleanup)
        assert str(approval.decision.target) == shown and shown in approval.decision.why
        assert approval.decision.request.params == given
        assert approval.decision.params["root"] == shown
    finally:
        await rt.audit.close()
        await rt.bus.close()
        await rt.store.close()


# ------------------------------------------------------------------ at run time: symlinks


async def test_rotate_log_refuses_a_symlinked_parent_directory(tree: Tree) -> None:
    """The attack of the issue: logs/ is a symlink, and the outside has an app.log."""
    tree.swap_for_link(tree.logs, tree.outside)
    action = get_action("rotate_log")
    result = await action.execute({"path": str(tree.log)}, tree.ctx())
    preview = await action.preview({"path": str(tree.log)}, tree.ctx())
    assert result.outcome == "refused", result.message
    assert f"directory {tree.logs} (on the way to {tree.log}) is a symlink" in result.message
    assert preview.outcome == "refused" and "is a symlink" in preview.summary
    tree.outside_intact()


@pytest.mark.parametrize("swap", ["logs", "srv"], ids=["parent-swapped", "grandparent-swapped"])
async def test_rotate_log_swapped_after_the_preview_is_refused(tree: Tree, swap: str) -> None:
    action = get_action("rotate_log")
    preview = await action.preview({"path": str(tree.log)}, tree.ctx())
    assert preview.outcome == "would_run", preview.summary
    if swap == "logs":
        tree.swap_for_link(tree.logs, tree.outside)
    else:  # the outside gets a logs/app.log of its own to lure the action
        (tree.outside / "logs").mkdir()
        (tree.outside / "logs" / "app.log").write_text("precious")
        tree.swap_for_link(tree.logs.parent, tree.outside)
    result = await action.execute({"path": str(tree.log)}, tree.ctx())
    assert result.outcome == "refused" and "is a symlink" in result.message, result.message
    tree.outside_intact()
    if swap == "srv":
        assert (tree.outside / "logs" / "app.log").read_text() == "precious"
    moved = tree.base / "srv.moved" if swap == "srv" else tree.base / "srv" / "logs.moved"
    assert next(moved.rglob("app.log")).read_text() == "L" * 100


@pytest.mark.parametrize("swap", ["root", "above-root", "below-root"])
async def test_clean_disk_swapped_after_the_preview_is_refused(tree: Tree, swap: str) -> None:
    action = get_action("clean_disk")
    root = tree.cleanup / "sub" if swap == "below-root" else tree.cleanup
    preview = await action.preview({"root": str(root)}, tree.ctx())
    assert preview.outcome == "would_run", preview.summary
    if swap == "root":
        tree.swap_for_link(tree.cleanup, tree.outside)
    elif swap == "above-root":
        (tree.outside / "cleanup").mkdir()
        (tree.outside / "cleanup" / "old.tmp").write_text("old")
        os.utime(tree.outside / "cleanup" / "old.tmp", (OLD, OLD))
        tree.swap_for_link(tree.cleanup.parent, tree.outside)
    else:
        tree.swap_for_link(tree.cleanup / "sub", tree.outside / "sub")
    result = await action.execute({"root": str(root)}, tree.ctx())
    assert result.outcome == "refused" and "is a symlink" in result.message, result.message
    tree.outside_intact()
    if swap == "above-root":
        assert (tree.outside / "cleanup" / "old.tmp").exists()


async def test_swapped_between_the_approval_request_and_the_approved_run(tree: Tree) -> None:
    """End to end: the LLM's clean_disk waits; the attacker swaps the root's parent for a
    symlink; a human approves; the run is refused and nothing outside is deleted."""
    rt = Runtime(tree.settings())
    agent = next(a for a in rt.agents if isinstance(a, RemediatorAgent))
    (tree.outside / "cleanup").mkdir()
    lure = tree.outside / "cleanup" / "old.tmp"
    lure.write_text("old")
    os.utime(lure, (OLD, OLD))
    try:
        decision = await agent.submit(ActionRequest(
            action="clean_disk", params={"root": str(tree.cleanup)}, host=rt.host,
            source="llm", reasoning="disk is full"))
        assert decision.verdict == "approve", decision.why
        [approval] = rt.audit.pending()
        tree.swap_for_link(tree.cleanup.parent, tree.outside)
        ran = await agent.approve(approval.id, "alice")
        assert ran.verdict == "auto", ran.why
        await agent.wait_idle()
        [outcome] = rt.audit.entries(kind="outcome")
        assert outcome.outcome == "refused" and "is a symlink" in outcome.message
        assert lure.read_text() == "old"
        tree.outside_intact()
    finally:
        await rt.audit.close()
        await rt.bus.close()
        await rt.store.close()


def test_a_walk_that_meets_a_link_mid_way_fails_safe(tree: Tree) -> None:
    """Swapped while the walk holds the parent's descriptor: the next component fails to
    open; nothing is ever resolved through the link."""
    from watchkeeper.remediation.actions import safepath
    from watchkeeper.remediation.actions.base import Refused

    with safepath.open_dir(str(tree.cleanup.parent)) as srv:
        tree.swap_for_link(tree.cleanup, tree.outside)
        with pytest.raises(Refused, match="is a symlink"):
            safepath.open_dir_at("cleanup", srv, f"directory {tree.cleanup}")
        # The descriptor still names the real directory: the moved root, not the outside.
        assert sorted(os.listdir(srv)) == ["cleanup", "cleanup.moved", "logs"]


# ------------------------------------------------------------------ the LLM's read of a log


@pytest.mark.parametrize("swap", ["file", "parent"],
                         ids=["log-swapped-for-a-link-to-a-secret", "log-dir-swapped-for-a-link"])
async def test_the_llms_tail_log_never_follows_a_symlink(tree: Tree, swap: str) -> None:
    """A sibling: llm.log_files are read for the model; a swapped log must not send a
    secret (here the outside's files) to it."""
    secret = tree.outside / "app.log"
    secret.write_text("root:$6$SECRETHASH:19000:0:99999:7:::\n")
    if swap == "file":
        tree.log.unlink()
        tree.log.symlink_to(secret)
    else:
        tree.swap_for_link(tree.logs, tree.outside)
    context = ToolContext(snapshot=None, log_files=(tree.log,),
                          now=datetime(2026, 1, 1, tzinfo=timezone.utc))
    result = await Toolbox().call("tail_log", json.dumps({"file": 0}), context)
    assert "SECRETHASH" not in json.dumps(result.data)
    assert str(result.data["error"]).startswith("cannot read log file app.log: it, or a "
                                                "directory on its path, is a symlink")
