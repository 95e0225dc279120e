"""The DVC version ingestion records for a local file, read from the `.dvc` pointer (no DVC)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from financemath_mlops.ingestion.dvc_tracked import dvc_revision


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def dvc_repo(tmp_path: Path) -> Path:
    (tmp_path / ".dvc" / "cache").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    return tmp_path


def test_a_file_tracked_by_its_own_pointer_is_named_by_its_md5(tmp_path: Path) -> None:
    repo = dvc_repo(tmp_path)
    body = b'[{"question_id": "q1"}]'
    (repo / "data" / "v.json").write_bytes(body)
    (repo / "data" / "v.json.dvc").write_text(
        f"outs:\n- md5: {md5(body)}\n  size: {len(body)}\n  hash: md5\n  path: v.json\n"
    )
    assert dvc_revision(repo / "data" / "v.json") == f"dvc:{md5(body)}"


def test_a_file_in_a_tracked_folder_is_named_by_the_folder_hash_and_its_path(
    tmp_path: Path,
) -> None:
    repo = dvc_repo(tmp_path)
    body = b"rows"
    (repo / "data" / "raw").mkdir()
    (repo / "data" / "raw" / "validation.json").write_bytes(body)
    listing = json.dumps([{"md5": md5(body), "relpath": "validation.json"}]).encode()
    dir_md5 = md5(listing) + ".dir"
    cached = repo / ".dvc" / "cache" / "files" / "md5" / dir_md5[:2] / dir_md5[2:]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(listing)
    (repo / "data" / "raw.dvc").write_text(f"outs:\n- md5: {dir_md5}\n  nfiles: 1\n  path: raw\n")
    assert (
        dvc_revision(repo / "data" / "raw" / "validation.json") == f"dvc:{dir_md5}:validation.json"
    )

    (repo / "data" / "raw" / "validation.json").write_bytes(b"edited since dvc add")
    assert dvc_revision(repo / "data" / "raw" / "validation.json") is None

    cached.unlink()  # pointer pulled by git, cache not yet pulled by dvc: named, but unverified
    assert dvc_revision(repo / "data" / "raw" / "validation.json") == (
        f"dvc:{dir_md5}:validation.json:unverified"
    )


def test_a_modified_or_untracked_or_hostile_pointer_gives_no_version(tmp_path: Path) -> None:
    repo = dvc_repo(tmp_path)
    (repo / "data" / "v.json").write_bytes(b"new bytes")
    assert dvc_revision(repo / "data" / "v.json") is None  # untracked
    (repo / "data" / "v.json.dvc").write_text(f"outs:\n- md5: {md5(b'old')}\n  path: v.json\n")
    assert dvc_revision(repo / "data" / "v.json") is None  # changed since `dvc add`
    (repo / "data" / "v.json.dvc").write_text("outs: [1, {path: v.json}]\n: : [")
    assert dvc_revision(repo / "data" / "v.json") is None  # unreadable pointer: ignored
    assert dvc_revision(repo / "data" / "missing.json") is None
