"""`python -m financemath_mlops.registry list | promote VERSION | rollback | history | export`:
manage aliases by hand (each move recorded with who, when and `--reason`), read the audit trail of
alias moves, and export the model to serve as a folder (what compose mounts and images bake in)."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from financemath_mlops.cli import base_parser, parse_stage_args, run_main, setting_flags
from financemath_mlops.errors import StageError

EPILOG = """\
examples:
  python -m financemath_mlops.registry list
  python -m financemath_mlops.registry --name financemath-regressor-sample promote 3 --reason "CHG-1234"
  python -m financemath_mlops.registry rollback --reason "INC-77: v3 answers in cents"
  python -m financemath_mlops.registry history                  # who moved which alias, when, why
  python -m financemath_mlops.registry history --at 2026-12-01  # what each alias was that day
  python -m financemath_mlops.registry --name financemath-regressor-sample export --to models/serving

An unknown --name exits 2 listing the registered names, closest first. promote and rollback need
--reason (exit 2 without it): it goes into the audit trail with the actor (FMOPS_ACTOR, else the
OS user) and the time. `history` exits 1 when the trail was tampered with (an edited or deleted
entry, named) or an alias points where no entry says (moved in the MLflow UI). `export --to DIR`
replaces DIR whole, so DIR must be new, empty or a model folder exported before; anything else
(a folder holding other files) is refused with exit 2 unless --force.
"""


def registered_versions(name: str) -> list[Any]:
    """The versions of `name` with their aliases; an unknown name is refused (exit 2) with the
    registered names, closest first, rather than looking like a model with no versions."""
    from financemath_mlops import runs
    from financemath_mlops.runs.aliases import UnknownModelError

    try:
        return runs.list_versions(name)
    except UnknownModelError as exc:
        raise StageError(
            f"{exc}. Pass the right one with --name (default: mlflow.model_name, "
            "FMOPS_MLFLOW__MODEL_NAME)"
        ) from None


def list_table(name: str, versions: list[Any]) -> str:
    from financemath_mlops import runs

    if not versions:
        return f"no versions of {name} are registered"
    lines = [
        f"{name}",
        f"  {'version':>7}  {'aliases':<30}{'holdout log-MAE':>16}{'cv log-MAE':>12}  run",
    ]
    for v in versions:
        metrics = runs.run_metrics(v.run_id) if v.run_id else {}
        lines.append(
            f"  {v.version:>7}  {','.join(v.aliases) or '-':<30}"
            f"{metrics.get('holdout_log_mae', float('nan')):>16.3f}"
            f"{metrics.get('cv_log_mae_mean', float('nan')):>12.3f}  {v.run_id}"
        )
    return "\n".join(lines)


HISTORY_REASON_WIDTH = 70  # characters of a reason the table shows (--json has them whole)
ACTOR_WIDTH = 60


def manual_reason(command: str, reason: str | None) -> str:
    """The `--reason` a person gave for a manual move; missing or blank: exit 2 naming it."""
    if reason is None or not reason.strip():
        example = "promote 3" if command == "promote" else "rollback"
        raise StageError(
            f"registry {command} needs --reason TEXT: why this move (a ticket, the evidence); "
            "it is recorded in the audit trail with who and when (`registry history`), e.g. "
            f'python -m financemath_mlops.registry {example} --reason "CHG-1234: ..."'
        )
    return reason.strip()


def parse_at(text: str) -> tuple[datetime, datetime | None]:
    """`--at`: a date (the whole UTC day: its start and the next day's) or an instant (UTC when
    no zone is given: (instant, None)); anything else exits 2 naming --at."""
    from financemath_mlops.runs.audit import parse_time

    try:
        when = parse_time(text)
    except ValueError:
        raise StageError(
            f"--at {text!r} is not a date or time: give YYYY-MM-DD (that UTC day) or "
            "YYYY-MM-DDTHH:MM[:SS][+HH:MM] (UTC when no zone is given)"
        ) from None
    if len(text.strip()) == 10:  # a date alone: the whole day
        return when, when + timedelta(days=1)
    return when, None


def _short(text: str, width: int) -> str:
    text = " ".join(text.split()) or "-"
    return text if len(text) <= width else text[: width - 3] + "..."


def history_table(name: str, entries: list[Any]) -> list[str]:
    from financemath_mlops.runs.audit import AUDIT_EXPERIMENT

    if not entries:
        return [f"{name}: no alias move is recorded (MLflow experiment {AUDIT_EXPERIMENT})"]
    width = min(max(5, *(len(e.actor) for e in entries)), ACTOR_WIDTH)  # a flow run id: 36
    lines = [
        f"{name}: {len(entries)} alias moves recorded (MLflow experiment {AUDIT_EXPERIMENT})",
        f"  {'#':>4}  {'time (UTC)':<19}  {'alias':<17} {'from':>5} {'to':>5}  "
        f"{'actor':<{width}} {'action':<18} reason",
    ]
    for e in entries:
        lines.append(
            f"  {e.seq:>4}  {e.when().strftime('%Y-%m-%d %H:%M:%S'):<19}  {e.alias:<17} "
            f"{e.from_version or '-':>5} {e.to_version or '-':>5}  "
            f"{_short(e.actor, width):<{width}} "
            f"{e.action:<18} {_short(e.reason, HISTORY_REASON_WIDTH)}"
            + ("  [DELETED]" if e.deleted else "")
        )
    return lines


def state_at(entries: list[Any], when: datetime) -> dict[str, Any]:
    """alias -> the entry that set it last before ``when`` (aliases never set are absent)."""
    from financemath_mlops.runs.audit import latest_by_alias

    return {a: e for a, e in latest_by_alias(entries, until=when).items() if e.to_version}


def at_lines(name: str, entries: list[Any], start: datetime, end: datetime | None) -> list[str]:
    def table(title: str, state: dict[str, Any]) -> list[str]:
        if not state:
            return [f"{title}: no alias of {name} was set yet (by the audit trail)"]
        rows = [f"{title}:"]
        for alias, e in sorted(state.items()):
            rows.append(
                f"  {alias:<17} version {e.to_version:<5} since {e.when():%Y-%m-%d %H:%M:%S} "
                f"(entry #{e.seq}, {_short(e.actor, 40)}: {_short(e.reason, 60)})"
            )
        return rows

    if end is None:
        return table(f"{name} at {start.isoformat()}", state_at(entries, start))
    during = [e for e in entries if start <= e.when() < end]
    lines = table(f"{name} at the start of {start:%Y-%m-%d} (UTC)", state_at(entries, start))
    lines.append(f"moves during {start:%Y-%m-%d} (UTC): {len(during) or 'none'}")
    lines += [
        f"  #{e.seq} {e.when():%H:%M:%S} {e.alias} {e.from_version or '-'} -> {e.to_version}"
        f" ({_short(e.actor, 40)})"
        for e in during
    ]
    if during:
        lines += table(f"{name} at the end of {start:%Y-%m-%d} (UTC)", state_at(entries, end))
    return lines


def history(name: str, versions: list[Any], as_json: bool, at: str | None) -> int:
    """Print the audit trail of ``name`` (and the aliases at ``at``); 1 when the chain is broken
    or an alias points where no entry says, else 0."""
    from financemath_mlops.runs import audit

    window = parse_at(at) if at else None
    entries = audit.read_entries(name)
    aliases = {alias: str(v.version) for v in versions for alias in v.aliases}
    check = audit.verify(name, entries, aliases)
    if as_json:
        out: dict[str, Any] = {
            "model": name, "experiment": audit.AUDIT_EXPERIMENT,
            "entries": [e.as_dict() for e in entries], "aliases": aliases,
            "problems": check.problems, "unexplained": check.unexplained,
        }  # fmt: skip
        if window:
            start, end = window
            out["at"] = {
                "start": start.isoformat(),
                "aliases": {a: e.to_version for a, e in state_at(entries, start).items()},
            }
            if end is not None:
                out["at"]["end"] = end.isoformat()
                out["at"]["aliases_at_end"] = {
                    a: e.to_version for a, e in state_at(entries, end).items()
                }
                out["at"]["moves"] = [e.seq for e in entries if start <= e.when() < end]
        print(json.dumps(out, indent=2))
    else:
        lines = at_lines(name, entries, *window) if window else history_table(name, entries)
        if window:
            lines.append(
                "(a service serving a model folder does not follow aliases: its prediction log "
                "says which version answered; docs/deployment.md#governance)"
            )
        if check.problems:
            lines.append("THE TRAIL WAS CHANGED: " + str(len(check.problems)) + " problem(s)")
            lines += [f"  - {p}" for p in check.problems]
        if check.unexplained:
            lines.append("ALIASES NO ENTRY EXPLAINS:")
            lines += [f"  - {u}" for u in check.unexplained]
        if check.ok and entries:
            lines.append(f"chain intact: {len(entries)} entries, each hash verified")
        print("\n".join(lines))
    return 0 if check.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("python -m financemath_mlops.registry", __doc__ or "", EPILOG)
    parser.add_argument("--name", help="registered model name (default: mlflow.model_name)")
    setting_flags(parser, "mlflow")("--tracking-uri", help="MLflow tracking URI")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="versions with aliases and metrics")
    promote = sub.add_parser("promote", help="make VERSION the champion (by hand)")
    promote.add_argument("version")
    promote.add_argument("--reason", help="why (required): recorded in the audit trail")
    rollback = sub.add_parser("rollback", help="return champion to the previous champion")
    rollback.add_argument("--reason", help="why (required): recorded in the audit trail")
    history_cmd = sub.add_parser(
        "history", help="the audit trail of alias moves: who, when, from, to, why"
    )
    history_cmd.add_argument("--json", action="store_true", help="print it as JSON")
    history_cmd.add_argument(
        "--at",
        metavar="DATE",
        help="what each alias pointed to then: YYYY-MM-DD (that UTC day) or an ISO time",
    )
    export = sub.add_parser(
        "export", help="download a version (default: the champion) as a model folder to serve"
    )
    export.add_argument("--alias", default="champion", help="alias to export (default: champion)")
    export.add_argument("--version", help="export this version instead of an alias")
    export.add_argument(
        "--to",
        type=Path,
        help="folder (default: paths.serving_model_dir); new, empty or an earlier export",
    )
    export.add_argument(
        "--force",
        action="store_true",
        help="replace --to even when it holds other files (they are deleted)",
    )
    from financemath_mlops.registry.rebuild import add_reproduce_parser

    add_reproduce_parser(sub)
    args, settings = parse_stage_args(parser, argv)
    if args.command in ("promote", "rollback"):  # before any work: exit 2 naming --reason
        reason = manual_reason(args.command, args.reason)
    if args.command == "history" and args.at:
        parse_at(args.at)
    from financemath_mlops import runs

    runs.check_reachable(settings.mlflow)  # a dead tracking server: exit 2 in seconds
    runs.configure(settings.mlflow, create_store=False)  # never an empty registry by mistake
    name = args.name or settings.mlflow.model_name
    if args.command == "reproduce":  # financemath_mlops.registry.rebuild: rebuild and compare
        from financemath_mlops.registry.rebuild import run_reproduce

        return run_reproduce(settings, name, args, registered_versions)
    versions = registered_versions(name)  # an unknown name: exit 2 with the real ones
    if args.command == "list":
        print(list_table(name, versions))
    elif args.command == "export":
        uri = (
            runs.version_uri(name, args.version)
            if args.version
            else runs.alias_uri(name, args.alias)
        )
        folder = args.to or settings.paths.serving_model_dir
        ref = runs.export_model(uri, folder, force=args.force)
        print(f"{uri} (version {ref.version}) -> {ref.uri}")
        print(f"serve it: python -m financemath_mlops.serving --model-uri {ref.uri}")
    elif args.command == "promote":
        if not any(str(v.version) == str(args.version) for v in versions):
            raise StageError(f"{name} has no version {args.version}")
        if runs.move_champion(name, args.version, reason, action="registry promote"):
            print(f"{name}: champion -> version {args.version}; recorded (registry history)")
        else:
            print(f"{name}: version {args.version} already is the champion; nothing moved")
    elif args.command == "rollback":
        champion, was = runs.rollback_champion(name, reason, action="registry rollback")
        print(f"{name}: champion -> version {champion} (was {was}); recorded (registry history)")
    elif args.command == "history":
        return history(name, versions, args.json, args.at)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
