"""`python -m financemath_mlops.serving`: run the prediction service under uvicorn.

The same as `uvicorn financemath_mlops.serving.app:app`, plus the project's --config and
--log-level flags, a settings check before anything starts (so a typo fails in one clear line),
a refusal to listen beyond loopback without an API key unless ``serving.allow_anonymous`` asks
for it (``security.check_bind``: exit 2 before anything binds), a Prometheus multiprocess
directory when --workers > 1 and none is set, and the connection limits of ``serving.*`` (header
and keep-alive timeouts, max connections: see server.py). Every documented way of starting the
service runs this, so those limits and that refusal hold in every deployment.
"""

from __future__ import annotations

import os
import sys
import tempfile

from financemath_mlops.cli import base_parser, run_main, setup_logging
from financemath_mlops.config import CONFIG_ENV, load_settings
from financemath_mlops.serving.metrics import MULTIPROC_ENV
from financemath_mlops.serving.security import BIND_CHECKED_ENV, check_bind
from financemath_mlops.serving.server import set_header_timeout, uvicorn_options


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(
        "python -m financemath_mlops.serving",
        "Serve the registered model over HTTP (see /docs once it runs).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--model-uri", help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model"
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI the model URI is resolved in (default: mlflow.tracking_uri)",
    )
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if args.config is not None:
        os.environ[CONFIG_ENV] = str(args.config)  # the workers load the same file
    # The workers read the settings from the environment: a flag is handed on as the FMOPS_
    # variable it overrides, so it wins over that variable, MLFLOW_TRACKING_URI and the YAML.
    if args.model_uri:
        os.environ["FMOPS_SERVING__MODEL_URI"] = args.model_uri
    if args.tracking_uri:
        os.environ["FMOPS_MLFLOW__TRACKING_URI"] = args.tracking_uri
    serving = load_settings().serving  # fail now, with the bad key named, not in every worker
    check_bind(serving, args.host)  # before anything binds: no key beyond loopback, no start
    os.environ[BIND_CHECKED_ENV] = args.host or "*"  # said once: the app (each worker) is quiet
    set_header_timeout(serving.header_timeout_s)
    if args.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="fmops-prometheus-")
    os.environ["FMOPS_LOG_LEVEL"] = args.log_level

    import uvicorn

    uvicorn.run(
        "financemath_mlops.serving.app:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level.lower(),
        **uvicorn_options(serving),
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
