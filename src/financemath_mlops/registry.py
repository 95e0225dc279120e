"""`python -m financemath_mlops.registry list | promote VERSION | rollback | export`: manage aliases
by hand, and export the model to serve as a folder (what compose mounts and images bake in)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from financemath_mlops.cli import base_parser, parse_stage_args, run_main, setting_flags
from financemath_mlops.errors import StageError

EPILOG = """\
examples:
  python -m financemath_mlops.registry list
  python -m financemath_mlops.registry --name financemath-regressor-sample promote 3
  python -m financemath_mlops.registry rollback     # champion -> previous champion
  python -m financemath_mlops.registry --name financemath-regressor-sample export --to models/serving

An unknown --name exits 2 listing the registered names, closest first. `export --to DIR`
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


def export_served_model(settings: Any, model_name: str, fallback_uri: str) -> dict[str, Any]:
    """Export the champion of `model_name` to paths.serving_model_dir; with no champion yet (the
    evidence did not promote anything), export `fallback_uri` (the challenger) and say so."""
    from financemath_mlops import runs

    runs.configure(settings)
    champion = runs.alias_version(model_name, runs.CHAMPION)
    if champion is not None:
        uri, role = runs.alias_uri(model_name, runs.CHAMPION), "the champion"
    else:
        uri, role = fallback_uri, "the challenger (nothing is promoted yet)"
    folder = Path(settings.paths.serving_model_dir)
    ref = runs.export_model(uri, folder)
    return {
        "folder": str(folder),
        "model_uri": uri,
        "name": ref.name,
        "version": ref.version,
        "note": f"{role}: {ref.name} version {ref.version}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("python -m financemath_mlops.registry", __doc__ or "", EPILOG)
    parser.add_argument("--name", help="registered model name (default: mlflow.model_name)")
    setting_flags(parser, "mlflow")("--tracking-uri", help="MLflow tracking URI")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="versions with aliases and metrics")
    promote = sub.add_parser("promote", help="make VERSION the champion (by hand)")
    promote.add_argument("version")
    sub.add_parser("rollback", help="return champion to the previous champion")
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
    args, settings = parse_stage_args(parser, argv)
    from financemath_mlops import runs

    runs.check_reachable(settings)  # a dead tracking server: exit 2 in seconds
    runs.configure(settings, create_store=False)  # never an empty registry by mistake
    name = args.name or settings.mlflow.model_name
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
        runs.move_champion(name, args.version)
        print(f"{name}: champion -> version {args.version}")
    else:
        champion, was = runs.rollback_champion(name)
        print(f"{name}: champion -> version {champion} (was {was})")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
