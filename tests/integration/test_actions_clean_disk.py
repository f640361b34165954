"""clean_disk on real temporary trees: only the right files go, symlinks and traversal refused."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from watchkeeper.config import CleanupRoot, RemediationConfig
from watchkeeper.remediation.actions import ActionContext, ActionResult, get_action
from watchkeeper.remediation.actions.clean_disk import open_target, remove, rules_for, scan
from watchkeeper.remediation.registry import CleanDiskParams

HOUR = 3600.0
NOW = time.time()
OLD = NOW - 48 * HOUR


def write(path: Path, size: int = 100, mtime: float = OLD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A clean-up root full of traps, and an outside that must survive untouched."""
    root, out = tmp_path / "root", tmp_path / "outside"
    paths = {
        "old": write(root / "old.tmp", 100),
        "old_deep": write(root / "a" / "b" / "deep.tmp", 200),
        "new": write(root / "new.tmp", 100, mtime=NOW - 60),
        "unmatched": write(root / "old.txt", 100),
        "secret": write(out / "secret.tmp", 1000),
        "victim": write(out / "dir" / "victim.tmp", 1000),
        "linked": write(out / "linked.tmp", 1000),
    }
    (root / "link_to_file.tmp").symlink_to(paths["secret"])
    (root / "link_to_dir").symlink_to(out / "dir", target_is_directory=True)
    (root / "dangling.tmp").symlink_to(out / "nothing.tmp")
    os.link(paths["linked"], root / "hard.tmp")
    for link in ("link_to_file.tmp", "link_to_dir", "dangling.tmp"):
        os.utime(root / link, (OLD, OLD), follow_symlinks=False)
    paths["root"], paths["outside"] = root, out
    return paths


def settings(*roots: CleanupRoot, dry_run: bool = False) -> RemediationConfig:
    return RemediationConfig(cleanup_roots=roots, dry_run=dry_run)


def ctx(config: RemediationConfig) -> ActionContext:
    return ActionContext(settings=config, wall_clock=lambda: NOW)


def root_rule(path: Path, **kw: object) -> CleanupRoot:
    return CleanupRoot.model_validate({"path": path, "patterns": ["*.tmp"], "min_age_hours": 24,
                                       **kw})


def outside_intact(tree: dict[str, Path]) -> None:
    for key in ("secret", "victim", "linked"):
        assert tree[key].read_bytes() == b"x" * 1000, key
    assert (tree["root"] / "link_to_file.tmp").is_symlink()
    assert (tree["root"] / "link_to_dir").is_symlink()
    assert (tree["root"] / "hard.tmp").exists()


def roundtrip(result: ActionResult) -> None:
    assert ActionResult.model_validate_json(result.model_dump_json()) == result


async def test_only_old_matching_regular_files_go(tree: dict[str, Path]) -> None:
    c = ctx(settings(root_rule(tree["root"])))
    result = await get_action("clean_disk").execute({"root": str(tree["root"])}, c)

    assert result.outcome == "ok", result.message
    assert result.details["bytes_freed"] == 300
    assert result.details["files_removed"] == 2
    assert not tree["old"].exists() and not tree["old_deep"].exists()
    assert tree["new"].exists() and tree["unmatched"].exists()
    assert (tree["root"] / "a" / "b").is_dir()  # directories stay
    outside_intact(tree)
    skipped = result.details["skipped"]
    assert isinstance(skipped, dict)
    assert skipped["symlink"] == 3 and skipped["hard-linked"] == 1 and skipped["too new"] == 1
    assert "freed 300 B from 2 files" in result.message
    roundtrip(result)

    check = await get_action("clean_disk").verify({"root": str(tree["root"])}, c, result)
    assert check.ok and "freed 300 B" in check.message
    assert isinstance(check.details["disk_percent"], float)


async def test_preview_names_the_files_and_deletes_nothing(tree: dict[str, Path]) -> None:
    c = ctx(settings(root_rule(tree["root"])))
    preview = await get_action("clean_disk").preview({"root": str(tree["root"])}, c)

    assert preview.outcome == "would_run"
    assert preview.summary.startswith("would free 300 B from these 2 files in ")
    assert sorted(preview.items) == ["a/b/deep.tmp (200 B)", "old.tmp (100 B)"]
    assert preview.items_total == 2
    assert tree["old"].exists() and tree["old_deep"].exists()
    outside_intact(tree)


async def test_global_dry_run_executes_nothing(tree: dict[str, Path]) -> None:
    c = ctx(settings(root_rule(tree["root"]), dry_run=True))
    result = await get_action("clean_disk").execute({"root": str(tree["root"])}, c)

    assert result.outcome == "dry_run"
    assert result.preview is not None and len(result.preview.items) == 2
    assert "would free 300 B from these 2 files" in result.message
    assert tree["old"].exists() and tree["old_deep"].exists()
    roundtrip(result)
    check = await get_action("clean_disk").verify({"root": str(tree["root"])}, c, result)
    assert not check.ok


async def test_size_cap_frees_at_most_the_cap_oldest_first(tmp_path: Path) -> None:
    root = tmp_path / "root"
    a = write(root / "a.tmp", 300, mtime=OLD - 3 * HOUR)
    b = write(root / "b.tmp", 200, mtime=OLD - 2 * HOUR)
    c_ = write(root / "c.tmp", 100, mtime=OLD - 1 * HOUR)
    c = ctx(settings(root_rule(root, max_bytes=1000)))

    # params may narrow the root's cap (1000) to 350: a fits, b and c would overshoot.
    result = await get_action("clean_disk").execute({"root": str(root), "max_bytes": 350}, c)
    assert result.outcome == "ok" and result.details["bytes_freed"] == 300
    assert not a.exists() and b.exists() and c_.exists()

    # a cap larger than the root's is capped by the root's; 250 then lets only b through.
    c = ctx(settings(root_rule(root, max_bytes=250)))
    result = await get_action("clean_disk").execute({"root": str(root), "max_bytes": 10**9}, c)
    assert result.details["bytes_freed"] == 200 and result.details["max_bytes"] == 250
    assert not b.exists() and c_.exists()


async def test_params_cannot_widen_the_roots_patterns_or_age(tree: dict[str, Path]) -> None:
    write(tree["root"] / "recent.tmp", 10, mtime=NOW - 2 * HOUR)
    c = ctx(settings(root_rule(tree["root"])))
    result = await get_action("clean_disk").execute(
        {"root": str(tree["root"]), "patterns": ["*"], "min_age_hours": 0}, c)

    assert result.outcome == "ok" and result.details["files_removed"] == 2
    assert tree["unmatched"].exists()  # *.txt is not among the root's patterns
    assert (tree["root"] / "recent.tmp").exists()  # the root's 24 h minimum holds
    assert result.details["min_age_hours"] == 24

    # narrowing works: only the deep file matches a/*/deep.tmp
    write(tree["root"] / "old.tmp", 100)
    result = await get_action("clean_disk").execute(
        {"root": str(tree["root"]), "patterns": ["a/*/deep.tmp", "nothing*"]}, c)
    assert result.details["files_removed"] == 0 and tree["old"].exists()
    assert "nothing to delete" in result.message


async def test_a_subdirectory_of_a_root_may_be_cleaned(tree: dict[str, Path]) -> None:
    write(tree["root"] / "a" / "old.tmp")
    c = ctx(settings(root_rule(tree["root"])))
    result = await get_action("clean_disk").execute({"root": str(tree["root"] / "a")}, c)
    assert result.details["files_removed"] == 2
    assert tree["old"].exists()  # outside the directory named


@pytest.mark.parametrize(("param", "problem"), [
    ("../../etc", "is not an absolute path"),
    ("/etc", "is not inside a configured clean-up root"),
    ("{root}/../../etc", "contains '..'"),
    ("{root}/a/../../outside", "contains '..'"),
    ("{root}/link_to_dir", "is a symlink"),
    ("{root}/old.tmp", "is not a directory"),
    ("{root}/missing", "does not exist"),
    ("{root}x", "is not inside a configured clean-up root"),
])
async def test_traversal_is_refused_with_a_clear_error(
        tree: dict[str, Path], param: str, problem: str) -> None:
    c = ctx(settings(root_rule(tree["root"])))
    root = param.format(root=tree["root"])
    action = get_action("clean_disk")

    result = await action.execute({"root": root}, c)
    preview = await action.preview({"root": root}, c)

    assert result.outcome == "refused" and problem in result.message, result.message
    assert preview.outcome == "refused" and problem in preview.summary
    assert result.details == {} and result.params["root"] == root
    outside_intact(tree)
    assert tree["old"].exists()
    roundtrip(result)


async def test_a_configured_root_that_is_a_symlink_to_outside_is_refused(
        tree: dict[str, Path], tmp_path: Path) -> None:
    link = tmp_path / "rootlink"
    link.symlink_to(tree["outside"], target_is_directory=True)
    c = ctx(settings(root_rule(link)))

    for param in (str(link), str(link / "dir")):
        result = await get_action("clean_disk").execute({"root": param}, c)
        assert result.outcome == "refused", result.message
        assert f"configured root {link} is a symlink" in result.message
    outside_intact(tree)


async def test_no_configured_root_refuses_everything(tree: dict[str, Path]) -> None:
    result = await get_action("clean_disk").execute({"root": str(tree["root"])},
                                                    ctx(settings()))
    assert result.outcome == "refused" and "none are configured" in result.message


def test_a_file_swapped_for_a_symlink_after_the_scan_is_not_deleted(
        tree: dict[str, Path]) -> None:
    rules = rules_for(settings(root_rule(tree["root"])), CleanDiskParams(root=str(tree["root"])))
    with open_target(rules) as fd:
        found = scan(fd, rules, NOW)
        assert {c.rel for c in found.candidates} == {"old.tmp", "a/b/deep.tmp"}
        # Between scan and unlink: old.tmp becomes a link outside, a/ moves and a link
        # to the outside takes its place.
        tree["old"].unlink()
        tree["old"].symlink_to(tree["secret"])
        (tree["root"] / "a").rename(tree["root"] / "a_moved")
        (tree["root"] / "a").symlink_to(tree["outside"] / "dir", target_is_directory=True)
        write(tree["outside"] / "dir" / "b" / "deep.tmp", 1000)
        done = remove(fd, found.candidates, found, rules, NOW)

    assert done.removed == [] and done.bytes_freed == 0
    assert done.skipped == {"changed since the scan": 1}
    assert len(done.errors) == 1 and done.errors[0].startswith("a/b:")
    outside_intact(tree)
    assert (tree["outside"] / "dir" / "b" / "deep.tmp").read_bytes() == b"x" * 1000
    assert (tree["root"] / "a_moved" / "b" / "deep.tmp").exists()
