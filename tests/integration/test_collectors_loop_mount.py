"""A real loop-mounted ext4 image, filled to 100 %, is watched and alerted on (root mounts it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_analysis_streams import Stream, analyzer, only
from watchkeeper.collectors import SnapshotCollector
from watchkeeper.config import SensorConfig

# exclusive: the full filesystem is mounted for the whole machine; the real sensor of a test
# beside it would alert on it. CI runs as root with e2fsprogs (scripts/test installs it):
# there it never skips, so a missing tool fails loudly instead of hiding the test.
pytestmark = [
    pytest.mark.exclusive,
    pytest.mark.skipif(
        not os.environ.get("CI") and (os.geteuid() != 0 or shutil.which("mkfs.ext4") is None),
        reason="mounting a loop device needs root and mkfs.ext4 (CI runs as root)"),
]


def _image(path: Path) -> Path:
    """A fresh 8 MiB ext4 filesystem in a file."""
    with path.open("wb") as f:
        f.truncate(8 * 2**20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[list[Path]]:
    """Mount points this test mounts; each is unmounted (and its loop device freed) after."""
    mounted: list[Path] = []
    yield mounted
    for point in reversed(mounted):
        # mount -o loop sets autoclear: the loop device goes with the unmount.
        subprocess.run(["umount", str(point)], check=False, capture_output=True)


def _mount(image: Path, point: Path, opts: str, mounted: list[Path]) -> None:
    point.mkdir()
    subprocess.run(["mount", "-o", opts, str(image), str(point)], check=True,
                   capture_output=True)
    mounted.append(point)


def _fill(point: Path) -> None:
    """Write until the filesystem says it is full (unbuffered: the error comes from write)."""
    chunk = b"\0" * 2**16
    with (point / "fill").open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(chunk)


@pytest.mark.slow
def test_a_full_read_write_loop_mount_is_watched_a_read_only_one_is_not(
        tmp_path: Path, mounts: list[Path]) -> None:
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    _mount(_image(tmp_path / "rw.img"), rw, "loop", mounts)
    _mount(_image(tmp_path / "ro.img"), ro, "loop,ro", mounts)
    _fill(rw)
    collector = SnapshotCollector(config=SensorConfig(), host="itest")
    try:
        disks = {d.mountpoint: d for d in collector.collect(1, 1.0).disks}
    finally:
        collector.close()
    assert str(rw) in disks, sorted(disks)
    assert disks[str(rw)].device.startswith("/dev/loop")
    assert disks[str(rw)].fstype == "ext4"
    assert disks[str(rw)].percent == 100.0
    assert str(ro) not in disks
    # ...and the analyzer, on default thresholds, raises it once it has lasted for_s.
    fired = Stream().feed(analyzer(), 8, disks=list(disks.values()))
    assert [(a.metric, a.dimension, a.severity) for a in only(fired, "new")
            if a.dimension == str(rw)] == [("disk.percent", str(rw), "critical")]
