"""`python -m financemath_mlops.serving.probe /health|/ready`: exit 0 when the local service says 200.

The command of the Kubernetes exec probes in deploy/k8s. The image has no curl, and podman's
`kube play` (4.3) re-splits an exec probe on spaces into a shell command, so `python -c "..."`
breaks there: this command is plain words. Standard library only and no settings read, so a
probe costs a Python start-up and one local request, nothing more.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m financemath_mlops.serving.probe",
        description="Exit 0 when http://127.0.0.1:PORT/PATH answers 200, else 1.",
    )
    parser.add_argument("path", choices=["/health", "/ready"], help="the endpoint to probe")
    parser.add_argument("--port", type=int, default=8000, help="the service's port (8000)")
    parser.add_argument("--timeout", type=float, default=4.0, help="seconds (4)")
    args = parser.parse_args(argv)
    url = f"http://127.0.0.1:{args.port}{args.path}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            status = response.status
    except urllib.error.HTTPError as error:  # 503 from /ready while the model loads
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        print(f"{url}: {error}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"{url}: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
