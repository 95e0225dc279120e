"""deploy/k8s keeps its promises: the rendered overlays are hardened, consistent with each other,
valid for the pinned Kubernetes and prometheus-operator schemas (and the validation would catch a
broken object), and the PrometheusRule is what alerts.yml says today.

`make lint` renders, validates and policy-checks the overlays (scripts/check_offline.sh); these
tests pin what a schema cannot know. The real run is scripts/k8s_play.sh (make test-images).
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from tests.helpers import REPO_ROOT, load_script

k8s_check = load_script("k8s_check")
k8s_prometheusrule = load_script("k8s_prometheusrule")
ALERTS = REPO_ROOT / "monitoring" / "prometheus" / "alerts.yml"
WRITABLE = {"/app/data/predictions", "/tmp", "/app/reports"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    """Every overlay as `kubectl kustomize` renders it (once for the module)."""
    return {name: k8s_check.documents(k8s_check.render(name)) for name in k8s_check.overlays()}


def only(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(docs: list[dict]) -> dict:
    return only(docs, "Deployment")["spec"]["template"]["spec"]


def test_both_overlays_exist_and_render_every_kind(rendered):
    assert set(rendered) == {"dev", "prod"}
    for docs in rendered.values():
        kinds = {d["kind"] for d in docs}
        assert {
            "Deployment",
            "Service",
            "ConfigMap",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "ServiceMonitor",
            "PrometheusRule",
        } <= kinds


def test_rendered_objects_pass_the_pinned_schemas(rendered):
    for name, docs in rendered.items():
        for doc in docs:
            assert k8s_check.problems(doc) == [], f"{name}: {doc['kind']}"


@pytest.mark.parametrize(
    ("kind", "break_it", "expected"),
    [
        ("Deployment", lambda d: d["spec"].update(replicas="two"), "replicas"),
        (
            "Deployment",
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(
                readOnlyRootFs=True
            ),
            "readOnlyRootFs",
        ),
        (
            "ServiceMonitor",
            lambda d: d["spec"]["endpoints"][0].update(intervl="15s"),
            "intervl",
        ),
        (
            "PrometheusRule",
            lambda d: d["spec"]["groups"][0]["rules"][0].update({"for": "5 minutes"}),
            "for",
        ),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].pop("expr"), "expr"),
    ],
)
def test_validation_catches_a_broken_object(rendered, kind, break_it, expected):
    doc = copy.deepcopy(only(rendered["dev"], kind))
    break_it(doc)
    found = k8s_check.problems(doc)
    assert found and any(expected in problem for problem in found), found


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_pod_is_locked_down(rendered, overlay):
    pod = pod_spec(rendered[overlay])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # Writable only where the service writes, and only as emptyDirs.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(mounts) == WRITABLE
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all("emptyDir" in volumes[name] for name in mounts.values())


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_probes_resources_and_shutdown(rendered, overlay):
    pod = pod_spec(rendered[overlay])
    (container,) = pod["containers"]
    probe = ["/opt/venv/bin/python", "-m", "financemath_mlops.serving.probe"]
    assert container["startupProbe"]["exec"]["command"] == [*probe, "/ready"]
    assert container["readinessProbe"]["exec"]["command"] == [*probe, "/ready"]
    assert container["livenessProbe"]["exec"]["command"] == [*probe, "/health"]
    # podman re-splits exec probes on spaces: every argument must be one plain word
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert all(" " not in arg for arg in container[name]["exec"]["command"])
    # the model may take minutes to load: the startup budget covers serving.load_retry_max_s
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) == set(resources["limits"])
    # preStop, then uvicorn drains and the prediction log flushes (1 s): well inside the grace
    assert (
        pod["terminationGracePeriodSeconds"]
        >= container["lifecycle"]["preStop"]["sleep"]["seconds"] + 30
    )


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_settings_from_the_configmap_and_the_key_from_a_secret(rendered, overlay):
    docs = rendered[overlay]
    (container,) = pod_spec(docs)["containers"]
    config_name = container["envFrom"][0]["configMapRef"]["name"]
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert config["metadata"]["name"] == config_name  # the generator's hashed name, followed
    assert all(key.startswith("FMOPS_") for key in config["data"])
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["FMOPS_SERVING__API_KEY"]["valueFrom"]
    assert not any("API_KEY" in key for key in config["data"])
    if overlay == "prod":  # created out of band, never rendered from the repository
        assert not [d for d in docs if d["kind"] == "Secret"]
        assert "FMOPS_SERVING__MODEL_URI" not in config["data"]  # the registry's alias
        assert config["data"]["FMOPS_MLFLOW__TRACKING_URI"].startswith("http")
    else:
        assert config["data"]["FMOPS_SERVING__MODEL_URI"] == "/opt/model"  # baked in


def test_prod_survives_a_drain_and_scales_from_two(rendered):
    docs = rendered["prod"]
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    hpa = only(docs, "HorizontalPodAutoscaler")
    assert (
        hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    )
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (
        only(docs, "PodDisruptionBudget")["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    )


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_selectors_reach_the_pods_and_the_port(rendered, overlay):
    docs = rendered[overlay]
    labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = only(docs, "Service")
    selectors = [
        service["spec"]["selector"],
        only(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        only(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= labels.items()
    monitor = only(docs, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    (container,) = pod_spec(docs)["containers"]
    assert {p["name"] for p in container["ports"]} >= port_names


def test_only_ingress_and_prometheus_reach_the_pod(rendered):
    policy = only(rendered["prod"], "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    peers = [p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in rule["from"]]
    assert sorted(peers) == ["ingress-nginx", "prometheus"]
    assert all("namespaceSelector" in p for p in rule["from"])  # not "any pod anywhere"


def test_scrape_job_is_the_one_the_alerts_watch(rendered):
    monitor = only(rendered["prod"], "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    jobs = [r["replacement"] for r in endpoint["relabelings"] if r.get("targetLabel") == "job"]
    assert jobs == ["financemath-api"]
    assert 'job="financemath-api"' in ALERTS.read_text(encoding="utf-8")


def test_policy_skips_carry_a_reason(rendered):
    for name, docs in rendered.items():
        for doc in docs:
            for key, value in (doc["metadata"].get("annotations") or {}).items():
                if key.startswith("checkov.io/skip"):
                    check, _, reason = value.partition("=")
                    assert check.startswith("CKV"), f"{name}: {key}"
                    assert len(reason.split()) >= 5, f"{name}: {key} has no real reason"


def test_prometheusrule_is_what_the_generator_writes_from_alerts_yml():
    on_disk = (REPO_ROOT / "deploy/k8s/base/prometheusrule.yaml").read_text(encoding="utf-8")
    assert on_disk == k8s_prometheusrule.render(), "run python scripts/k8s_prometheusrule.py"
    rule = yaml.safe_load(on_disk)
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]


def test_generator_follows_alerts_yml_not_a_frozen_copy(tmp_path):
    alerts = {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up == 0\nor vector(1)"}]}]}
    path = tmp_path / "alerts.yml"
    path.write_text(yaml.safe_dump(alerts), encoding="utf-8")
    rule = yaml.safe_load(k8s_prometheusrule.render(path))
    assert rule["spec"]["groups"] == alerts["groups"]
    assert k8s_check.problems(rule) == []
    with pytest.raises(ValueError, match="no rule groups"):
        path.write_text("groups: []\n", encoding="utf-8")
        k8s_prometheusrule.render(path)


def test_prefect_work_pool_job_is_a_valid_locked_down_job():
    template = json.loads(k8s_check.PREFECT_TEMPLATE.read_text(encoding="utf-8"))
    assert set(template) == {"job_configuration", "variables"}
    job = k8s_check.fill_template(template, {"image": "reg.example/pipeline@sha256:" + "0" * 64})
    assert k8s_check.problems(job) == []
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].startswith("reg.example/pipeline@sha256:")
    assert container["args"] == ["prefect", "flow-run", "execute"]
    assert pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert job["spec"]["backoffLimit"] == 0  # Prefect retries flows itself
    assert isinstance(job["spec"]["activeDeadlineSeconds"], int)
    broken = copy.deepcopy(job)
    broken["spec"]["template"]["spec"]["restartPolicy"] = 7
    assert k8s_check.problems(broken)
