"""Which command-line flag each ingestion source reads, and the refusal of one it would ignore.

Shared by `python -m financemath_mlops.ingestion` and the flow's own flags, so both refuse
`--rows` with a file or `--path` with the sample the same way.
"""

from __future__ import annotations

from financemath_mlops.errors import StageError

SOURCE_FLAGS = {
    "local": ("--path",),
    "sample": ("--rows", "--seed"),
    "hf": ("--split", "--revision"),
}


def check_source_flags(source: str, given: dict[str, object], how: str) -> None:
    """Refuse a flag the chosen source would ignore, naming it and the source that reads it.

    ``how`` says where the source came from: ``--source``, ``--path`` (which implies local) or
    ``the settings`` (YAML, FMOPS_INGESTION__SOURCE or the default).
    """
    chosen = {
        "--source": f"--source {source}",
        "--path": "--source local (which --path implies)",
    }.get(how, f"source {source!r} (from the settings: ingestion.source)")
    for flag, value in given.items():
        owner = next(name for name, flags in SOURCE_FLAGS.items() if flag in flags)
        if owner == source:
            continue
        raise StageError(
            f"{flag} {value} does not apply to {chosen}: {flag} is read by --source {owner} "
            f"only. {_instead(source, owner, flag)}"
        )


def _instead(source: str, owner: str, flag: str) -> str:
    if source == "local" and owner == "sample":
        return "A local file is read whole: to ingest fewer rows, cut the file; or drop the flag."
    if source == "local" and owner == "hf":
        return "A local file has no split or revision (DVC's is recorded by itself): drop it."
    return f"Use --source {owner} to read it, or drop {flag}."
