"""Which records a feature table is built from, and whether the features stage may trust them.

Ingestion publishes its records, rejects and manifest as one set; the manifest
(`<records>.manifest.json`) names the records' source and sha256. The features stage builds only
from such records: the manifest beside them must list a records file with the sha256 of its bytes
(by content, so a copy renamed together with its manifest is still vouched for).
Anything else (raw rows, a file edited after ingestion) is refused, naming the manifest it
expected, unless the caller says the rows were validated by other means (``--validated-elsewhere``);
the table's manifest records which of the two it was, so training and the run say it too.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from financemath_mlops.atomic import file_sha256
from financemath_mlops.errors import StageError

log = logging.getLogger(__name__)

VALIDATED_ELSEWHERE_FLAG = "--validated-elsewhere"
SOURCE_FIELDS = ("source", "dataset_id", "split", "revision")


class FeatureError(StageError):
    """Bad input for the features stage; nothing is written."""


def records_provenance(source: Path, validated_elsewhere: bool) -> tuple[Path, dict[str, Any]]:
    """(the file to read, the ``data`` section of the table's manifest) for the given records.

    Ingestion's output is a symlink into its current set: it is resolved once, and the records
    read, the checksum and the manifest all come from that one set, even if ingestion publishes
    another meanwhile.
    """
    from financemath_mlops.records import manifest_path_for

    published = Path(source).resolve()
    expected = manifest_path_for(Path(source))  # the name the user sees beside their records
    sha256 = file_sha256(published)
    exact = {"input": str(source), "input_sha256": sha256}
    ingested, problem = _ingestion_source(
        manifest_path_for(published), expected, published.name, sha256
    )
    if problem is None:
        if validated_elsewhere:
            log.info(
                "%s not needed: ingestion vouches for %s (%s); the table says so",
                VALIDATED_ELSEWHERE_FLAG, source, expected,
            )  # fmt: skip
        meta = {**_first_record_meta(published), **ingested}
        return published, {
            **meta, **exact, "validated": "ingestion", "ingestion_manifest": str(expected)
        }  # fmt: skip
    if not validated_elsewhere:
        raise FeatureError(
            f"{source} is not a set of records ingestion vouched for: {problem}. "
            "The features stage builds only from ingested records: run `python -m "
            f"financemath_mlops.ingestion --source local --path {source} --output RECORDS.jsonl` "
            f"and pass --input RECORDS.jsonl, or pass {VALIDATED_ELSEWHERE_FLAG} if these rows "
            "were validated by other means. Nothing was written."
        )
    log.warning(
        "%s: %s; building anyway (%s): the table records that its rows were validated "
        "elsewhere", source, problem, VALIDATED_ELSEWHERE_FLAG,
    )  # fmt: skip
    return published, {**_first_record_meta(published), **exact, "validated": "elsewhere"}


def _ingestion_source(
    manifest: Path, shown: Path, name: str, sha256: str
) -> tuple[dict[str, Any], str | None]:
    """(the source ingestion recorded, None) when ``manifest`` vouches for these bytes; else ({},
    what is wrong, naming the manifest as ``shown``).

    The match is by content, not by name: any records file the manifest lists with this sha256
    vouches for the input, so a renamed copy (``my.jsonl`` beside ``my.manifest.json``) is the
    same records. The rejects file ingestion lists beside them never vouches for records.
    """
    if not manifest.is_file():
        return {}, f"there is no ingestion manifest {shown} beside it"
    try:
        body = json.loads(manifest.read_text(encoding="utf-8"))
    except OSError as exc:
        return {}, f"its ingestion manifest {shown} cannot be read ({exc.strerror or exc})"
    except ValueError as exc:
        return {}, f"its ingestion manifest {shown} is not valid JSON ({exc})"
    files = body.get("files") if isinstance(body, dict) else None
    digests = {
        str(file): facts.get("sha256")
        for file, facts in (files.items() if isinstance(files, dict) else [])
        if isinstance(facts, dict)
    }
    if not digests:
        return {}, f"{shown} lists no files with their sha256: it is not an ingestion manifest"
    records = {file: digest for file, digest in digests.items() if not _is_rejects(file)}
    if sha256 in records.values():
        source = body.get("source")
        source = source if isinstance(source, dict) else {}
        return {k: source.get(k) for k in SOURCE_FIELDS}, None
    rejects = [file for file, digest in digests.items() if digest == sha256]
    if rejects:
        return {}, f"it is the rejects file {rejects[0]} of {shown}, not the records"
    if name in records:
        return {}, (
            f"it changed since ingestion wrote {shown} (sha256 {sha256[:12]}..., the manifest "
            f"records {str(records[name])[:12]}...)"
        )
    listed = ", ".join(f"{file} (sha256 {str(d)[:12]}...)" for file, d in sorted(records.items()))
    return {}, (
        f"its sha256 {sha256[:12]}... is none of the records {shown} lists: "
        f"{_cut_list(listed) or 'none'}; the file changed since ingestion, or the manifest is "
        "another file's"
    )


def _cut_list(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_rejects(file: str) -> bool:
    """Ingestion names its rejects ``<records stem>.rejects.jsonl`` (validate.rejects_path_for)."""
    return file.endswith(".rejects.jsonl")


def _first_record_meta(path: Path) -> dict[str, Any]:
    """What the first record says about its origin (ingestion stamps every record)."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    return {}  # the features stage reports the bad line itself
                meta = dict(row.get("meta") or {}) if isinstance(row, dict) else {}
                meta.pop("ingested_at", None)
                return meta
    return {}
