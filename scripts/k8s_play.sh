#!/usr/bin/env bash
# A real run of deploy/k8s: `podman kube play` the rendered dev overlay with a local image.
#
#   bash scripts/k8s_play.sh IMAGE      # IMAGE: the inference image with the model baked in
#                                       # (docker/inference.Dockerfile --target with-model)
#
# make test-images (scripts/test_images.sh) calls it with the image it built, passing its
# per-run podman store in PODMAN_OPTS ("--root DIR --runroot DIR --tmpdir DIR"). Podman reads the
# project's docker/podman/*.conf unless CONTAINERS_CONF / CONTAINERS_STORAGE_CONF say otherwise.
#
# What it plays is `scripts/k8s_check.py --print dev` with two changes only, both because podman
# 4.3 (Debian 12) cannot do otherwise: the kinds it does not run (Service, HPA, PDB,
# NetworkPolicy, ServiceAccount, the Prometheus Operator objects; all validated offline by
# scripts/k8s_check.py) are left out, and the http port is published on 127.0.0.1:<free port>
# (kube play has no --publish). Secrets go in with `podman secret create` in the JSON form 4.3
# reads (it stores a played Secret as YAML, then cannot read it). The image is tagged with the
# name the overlay sets.
# Checks: /ready answers 200 within READY_TIMEOUT_S (polled here: podman ignores startupProbe
# and has no readinessProbe); the livenessProbe passes as `podman healthcheck run`; /predict
# answers with the Secret's API key (401 without it); the root file system is read-only and the
# emptyDirs the manifest names (/app/data/predictions, /tmp, /app/reports) are writable; the
# prediction log is written under /app/data/predictions; the server runs as the manifest's
# runAsUser/runAsGroup. Then `podman kube down` and the Secrets it leaves behind are removed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
IMAGE=${1:?usage: scripts/k8s_play.sh IMAGE (the inference image with the model baked in)}
VENV_BIN=${VENV_BIN:-$ROOT/.venv/bin}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-300}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/docker/podman/containers.conf}
export CONTAINERS_STORAGE_CONF=${CONTAINERS_STORAGE_CONF:-$ROOT/docker/podman/storage.conf}
read -r -a PODMAN_ARGS <<<"${PODMAN_OPTS:-}"
engine() { podman "${PODMAN_ARGS[@]}" "$@"; }
START_S=$SECONDS
log() { printf '[k8s-play %4ds] %s\n' $((SECONDS - START_S)) "$*" >&2; }
FAILED=0
fail() {
  log "FAIL: $*"
  FAILED=1
}

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/fmops-k8s-play.XXXXXX")
PLAYED=$WORK/dev-podman.yaml
TAGGED=""
cleanup() {
  local status=$?
  set +e
  if [ -f "$PLAYED" ]; then
    engine kube down "$PLAYED" >/dev/null 2>&1
    # kube down keeps Secrets (in 4.3, those kube play made too): remove them by name.
    while read -r secret; do
      [ -n "$secret" ] && engine secret rm "$secret" >/dev/null 2>&1
    done <"$WORK/secrets"
  fi
  [ -n "$TAGGED" ] && engine untag "$IMAGE" "$TAGGED" >/dev/null 2>&1
  rm -rf "$WORK"
  if [ "$status" = 0 ] && [ "$FAILED" = 0 ]; then
    log "passed in $((SECONDS - START_S)) s"
  else
    log "FAILED"
    [ "$status" != 0 ] || status=1
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- render, keep what podman runs, publish the port on 127.0.0.1 --------------------------------
"$VENV_BIN/python" scripts/k8s_check.py --print dev >"$WORK/dev.yaml"
PORT=$("$VENV_BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Prints: the image the overlay names, pod name, container, uid, gid, API key, then the
# read-only flag, the writable mount paths (comma-separated) and the Secrets' names.
"$VENV_BIN/python" - "$WORK/dev.yaml" "$PLAYED" "$PORT" >"$WORK/facts" <<'EOF'
import base64, json, os, sys
import yaml

source, target, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
PLAYABLE = {"Deployment", "ConfigMap", "Secret"}
docs = [d for d in yaml.safe_load_all(open(source)) if d]
kept = [d for d in docs if d["kind"] in PLAYABLE]
deployment = next(d for d in kept if d["kind"] == "Deployment")
pod = deployment["spec"]["template"]["spec"]
container = pod["containers"][0]
for p in container["ports"]:
    if p["name"] == "http":
        p["hostIP"], p["hostPort"] = "127.0.0.1", port
key_ref = next(e["valueFrom"]["secretKeyRef"] for e in container["env"] if e["name"] == "FMOPS_SERVING__API_KEY")
secret = next(d for d in kept if d["kind"] == "Secret" and d["metadata"]["name"] == key_ref["name"])
api_key = base64.b64decode(secret["data"][key_ref["key"]]).decode()
security = container["securityContext"]
# podman 4.3 stores a played Secret as YAML but reads secretKeyRef as JSON {key: base64}: hand
# it the Secrets in that form (podman secret create) and play the rest.
for s in (d for d in kept if d["kind"] == "Secret"):
    with open(os.path.join(os.path.dirname(target), "secret-" + s["metadata"]["name"]), "w") as f:
        json.dump(s.get("data", {}), f)
with open(target, "w") as out:
    yaml.safe_dump_all([d for d in kept if d["kind"] != "Secret"], out, sort_keys=False)
print(container["image"])
print(deployment["metadata"]["name"] + "-pod")
print(container["name"])
print(security.get("runAsUser", pod["securityContext"].get("runAsUser")))
print(security.get("runAsGroup", pod["securityContext"].get("runAsGroup")))
print(api_key)
print(str(security.get("readOnlyRootFilesystem", False)).lower())
print(",".join(m["mountPath"] for m in container["volumeMounts"]))
print(",".join(d["metadata"]["name"] for d in kept if d["kind"] == "Secret"))
EOF
{
  read -r MANIFEST_IMAGE
  read -r POD
  read -r CONTAINER
  read -r WANT_UID
  read -r WANT_GID
  read -r API_KEY
  read -r READ_ONLY
  read -r MOUNTS
  read -r SECRETS
} <"$WORK/facts"
tr ',' '\n' <<<"$SECRETS" >"$WORK/secrets"
log "dev overlay: pod $POD, image $MANIFEST_IMAGE, uid $WANT_UID, read-only root: $READ_ONLY, writable: $MOUNTS"

if [ "$IMAGE" != "$MANIFEST_IMAGE" ]; then
  engine tag "$IMAGE" "$MANIFEST_IMAGE"
  TAGGED=$MANIFEST_IMAGE
fi

# --- play ------------------------------------------------------------------------------------------
while read -r secret; do
  [ -n "$secret" ] && engine secret create "$secret" "$WORK/secret-$secret" >/dev/null
done <"$WORK/secrets"
timeout 300 podman "${PODMAN_ARGS[@]}" kube play "$PLAYED" >"$WORK/play.log" 2>&1 ||
  { cat "$WORK/play.log" >&2; fail "podman kube play failed"; exit 1; }
# podman names the pod DEPLOYMENT-pod-N and its container POD-CONTAINER.
POD=$(engine pod ps --filter "name=^$POD" --format '{{.Name}}' | head -n 1)
CONTAINER=$POD-$CONTAINER
log "played: pod $POD, container $CONTAINER: $(engine inspect -f '{{.State.Status}}' "$CONTAINER")"

BASE=http://127.0.0.1:$PORT
code() { curl -s -o "$WORK/body" -w '%{http_code}' --max-time "${2:-10}" "$@" || true; }
deadline=$((SECONDS + READY_TIMEOUT_S))
ready=""
while [ "$SECONDS" -lt "$deadline" ]; do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$BASE/ready" || true)" = 200 ]; then
    ready=yes
    break
  fi
  [ "$(engine inspect -f '{{.State.Running}}' "$CONTAINER" 2>/dev/null)" = true ] || break
  sleep 1
done
if [ -z "$ready" ]; then
  engine logs "$CONTAINER" 2>&1 | tail -n 30 >&2
  fail "/ready did not answer 200 within $READY_TIMEOUT_S s"
  exit 1
fi
log "/ready 200 after $((SECONDS - START_S)) s"

# The livenessProbe, as podman turned it into a healthcheck (no systemd timers: run it here).
probe=$(engine inspect -f '{{json .Config.Healthcheck.Test}}' "$CONTAINER")
[[ $probe == *financemath_mlops.serving.probe*/health* ]] ||
  fail "the healthcheck is not the manifest's livenessProbe: $probe"
if engine healthcheck run "$CONTAINER" >"$WORK/health" 2>&1; then
  log "livenessProbe passed (podman healthcheck run): $probe"
else
  fail "livenessProbe failed: $(cat "$WORK/health")"
fi

QUESTION='{"question": "What is the future value of $1,000 at 5% for 3 years?", "tables": [], "topic": "Quantitative Analysis & Valuation"}'
got=$(curl -s -o "$WORK/body" -w '%{http_code}' --max-time 60 -H 'content-type: application/json' \
  -H "X-API-Key: $API_KEY" -d "$QUESTION" "$BASE/predict" || true)
if [ "$got" = 200 ] && grep -q '"prediction"' "$WORK/body"; then
  log "/predict with the Secret's key: 200 $(head -c 120 "$WORK/body")"
else
  fail "/predict with the key: $got $(head -c 300 "$WORK/body")"
fi
got=$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 -H 'content-type: application/json' \
  -d "$QUESTION" "$BASE/predict" || true)
[ "$got" = 401 ] || fail "/predict without the key: $got, not 401 (is the Secret in the env?)"

# Inside: the user, the read-only root, the emptyDirs, the prediction log.
uid_gid=$(engine exec "$CONTAINER" awk '/^Uid:/ {u = $2} /^Gid:/ {g = $2} END {print u, g}' /proc/1/status)
[ "$uid_gid" = "$WANT_UID $WANT_GID" ] ||
  fail "the server runs as uid/gid $uid_gid, the manifest says $WANT_UID $WANT_GID"
if [ "$READ_ONLY" = true ]; then
  for path in /app /opt/venv /home/app /; do
    if engine exec "$CONTAINER" touch "$path/.k8s-play-probe" 2>/dev/null; then
      fail "the root file system is writable at $path"
    fi
  done
fi
IFS=, read -r -a mounts <<<"$MOUNTS"
for path in "${mounts[@]}"; do
  engine exec "$CONTAINER" touch "$path/.k8s-play-probe" ||
    fail "$path (an emptyDir in the manifest) is not writable"
  engine exec "$CONTAINER" rm -f "$path/.k8s-play-probe"
done
sleep 2 # the prediction log flushes every log_flush_interval_s (1 s)
logged=$(engine exec "$CONTAINER" find /app/data/predictions -type f -size +0 | grep -vc 'k8s-play-probe' || true)
[ "$logged" -gt 0 ] || fail "no prediction log under /app/data/predictions"
log "uid/gid $uid_gid, root file system read-only, writable: $MOUNTS, prediction log files: $logged"
rss_kib=$(engine exec "$CONTAINER" awk '/^VmRSS:/ {print $2}' /proc/1/status)
log "server RSS in the pod after /predict: $((rss_kib / 1024)) MiB (the manifest requests $(
  "$VENV_BIN/python" -c 'import sys, yaml; d = [x for x in yaml.safe_load_all(open(sys.argv[1])) if x and x["kind"] == "Deployment"][0]; print(d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"])' "$PLAYED"))"

# --- down, and nothing left behind ------------------------------------------------------------------
# (podman without systemd complains that it cannot remove healthcheck timers: harmless)
engine kube down "$PLAYED" >"$WORK/down.log" 2>&1 || { cat "$WORK/down.log" >&2; fail "kube down"; }
while read -r secret; do
  [ -n "$secret" ] && engine secret rm "$secret" >/dev/null 2>&1 || true
done <"$WORK/secrets"
left=$(engine pod ps -q --filter "name=^$POD\$" | wc -l)
[ "$left" = 0 ] || fail "kube down left the pod $POD"
for secret in $(cat "$WORK/secrets"); do
  if engine secret inspect "$secret" >/dev/null 2>&1; then fail "the Secret $secret is still there"; fi
done
rm -f "$PLAYED" # cleanup has nothing left to take down
log "kube down: no pod, no Secret left"
[ "$FAILED" = 0 ]
