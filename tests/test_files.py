"""prefloop._files: the one way a file or folder is written under a temporary name and renamed
into place (complete or not at all, readable like any new file)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from prefloop._files import atomic_path, publish_folder, staging_folder, write_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def test_write_atomic_writes_text_or_bytes_with_ordinary_permissions(tmp_path: Path) -> None:
    target = tmp_path / "new" / "report.json"
    assert write_atomic(target, "näive {}\n") == target
    assert target.read_bytes() == "näive {}\n".encode()
    assert _mode(target) == 0o666 & ~_umask()  # not mkstemp's private 0600
    write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_a_failure_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "scores.jsonl"
    target.write_text("old\n")
    with (
        pytest.raises(RuntimeError, match="half way"),
        atomic_path(target) as temporary,
        temporary.open("w") as handle,
    ):
        handle.write("new, but not all of it")
        raise RuntimeError("half way")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.jsonl"]


def test_atomic_path_keeps_the_suffix_a_writer_needs(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "cache.npz", suffix=".npz") as temporary:
        assert temporary.suffix == ".npz" and temporary.name.startswith(".cache.npz.")
        temporary.write_bytes(b"x")
    assert (tmp_path / "cache.npz").read_bytes() == b"x"


def test_staging_folder_is_published_or_removed(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with staging_folder(target) as staging:
        (staging / "weights").write_text("1")
        assert _mode(staging) == 0o777 & ~_umask()
        publish_folder(staging, target)
    assert (target / "weights").read_text() == "1"
    with pytest.raises(RuntimeError), staging_folder(target) as staging:
        (staging / "weights").write_text("2")
        raise RuntimeError("failed build")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert (target / "weights").read_text() == "1"


def test_publish_folder_replaces_or_refuses_an_existing_folder(tmp_path: Path) -> None:
    target = tmp_path / "cache"
    target.mkdir()
    (target / "done").write_text("first")
    with staging_folder(target) as staging:
        (staging / "done").write_text("second")
        with pytest.raises(OSError):
            publish_folder(staging, target, replace=False)  # the first build wins
        publish_folder(staging, target)
    assert (target / "done").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
