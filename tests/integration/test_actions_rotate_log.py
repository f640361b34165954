"""rotate_log on real files: truncate in place, rotation chain, a writer that keeps writing."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchkeeper.config import LogFileRule, RemediationConfig
from watchkeeper.remediation.actions import ActionContext, ActionResult, get_action


def ctx(*rules: LogFileRule, dry_run: bool = False) -> ActionContext:
    return ActionContext(settings=RemediationConfig(log_files=rules, dry_run=dry_run))


def rule(path: Path, keep: int, max_bytes: int = 1000) -> LogFileRule:
    return LogFileRule(path=path, keep=keep, max_bytes=max_bytes)


def roundtrip(result: ActionResult) -> None:
    assert ActionResult.model_validate_json(result.model_dump_json()) == result


async def test_keep_0_truncates_in_place_and_the_writer_goes_on(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    c = ctx(rule(log, keep=0))
    with open(log, "a", encoding="utf-8") as writer:
        writer.write("x" * 5000 + "\n")
        writer.flush()
        inode = log.stat().st_ino

        result = await get_action("rotate_log").execute({"path": str(log)}, c)

        assert result.outcome == "ok", result.message
        assert result.details["size_before"] == 5001 and result.details["bytes_freed"] == 5001
        assert log.stat().st_size == 0 and log.stat().st_ino == inode
        writer.write("after\n")
        writer.flush()
    assert log.read_text() == "after\n"  # O_APPEND: no hole where the old data was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.log"]
    assert (await get_action("rotate_log").verify({"path": str(log)}, c, result)).ok
    roundtrip(result)


async def test_keep_2_rotates_the_chain_and_drops_the_oldest(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    c = ctx(rule(log, keep=2))
    action = get_action("rotate_log")
    with open(log, "a", encoding="utf-8") as writer:
        for gen in ("gen1", "gen2", "gen3"):
            writer.write(gen + "\n")
            writer.flush()
            result = await action.execute({"path": str(log)}, c)
            assert result.outcome == "ok", result.message
        writer.write("gen4\n")
        writer.flush()

    assert log.read_text() == "gen4\n"
    assert (tmp_path / "app.log.1").read_text() == "gen3\n"
    assert (tmp_path / "app.log.2").read_text() == "gen2\n"
    assert not (tmp_path / "app.log.3").exists()  # gen1 was the oldest, and is gone
    assert result.details["steps"] == ["deleted app.log.2", "renamed app.log.1 -> app.log.2",
                                       "copied 5 B to app.log.1", "truncated app.log"]
    assert result.details["bytes_freed"] == 5  # gen1's copy
    check = await action.verify({"path": str(log)}, c, result)
    assert check.ok, check.message


async def test_preview_and_dry_run_state_what_happens_and_change_nothing(
        tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("y" * 2_500_000)
    (tmp_path / "app.log.1").write_text("old")
    for keep, expected in [
        (0, f"would truncate {log} in place (2.5 MB; limit 1.0 kB; keep: 0)"),
        (3, f"would rotate {log} (2.5 MB; limit 1.0 kB; keep 3): rename app.log.1 -> "
            "app.log.2; copy app.log -> app.log.1; truncate app.log"),
    ]:
        preview = await get_action("rotate_log").preview({"path": str(log)}, ctx(rule(log, keep)))
        result = await get_action("rotate_log").execute(
            {"path": str(log)}, ctx(rule(log, keep), dry_run=True))
        assert preview.outcome == "would_run" and preview.summary == expected
        assert result.outcome == "dry_run" and result.message.endswith(expected)
    assert log.stat().st_size == 2_500_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.log", "app.log.1"]


async def test_only_configured_regular_files_are_touched(tmp_path: Path) -> None:
    log, other = tmp_path / "app.log", tmp_path / "other.log"
    precious = tmp_path / "precious"
    for p in (log, other, precious):
        p.write_text("keep me")
    link = tmp_path / "link.log"
    link.symlink_to(precious)
    c = ctx(rule(log, 0), rule(link, 0))

    cases = [
        (str(other), "is not a configured log file"),
        ("app.log", "is not an absolute path"),
        # Only the filesystem could resolve '..' (a symlinked sub/ would lead elsewhere).
        (f"{tmp_path}/sub/../app.log", "contains '..'"),
        (str(link), "is a symlink"),
    ]
    for path, problem in cases:
        result = await get_action("rotate_log").execute({"path": path}, c)
        assert result.outcome == "refused" and problem in result.message, result.message
    for p in (log, other, precious):
        assert p.read_text() == "keep me"

    # The configured path, spelled with a redundant component, is the same file.
    result = await get_action("rotate_log").execute({"path": f"{tmp_path}/./app.log"}, c)
    assert result.outcome == "ok" and log.read_text() == ""


@pytest.mark.parametrize("keep", [0, 2])
async def test_verify_fails_when_the_file_is_over_its_limit_again(
        tmp_path: Path, keep: int) -> None:
    log = tmp_path / "app.log"
    log.write_text("z" * 50)
    c = ctx(rule(log, keep, max_bytes=10))
    result = await get_action("rotate_log").execute({"path": str(log)}, c)
    log.write_text("z" * 50)
    check = await get_action("rotate_log").verify({"path": str(log)}, c, result)
    assert not check.ok and "over its 10 B limit" in check.message
