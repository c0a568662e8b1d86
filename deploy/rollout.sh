#!/usr/bin/env bash
# Deploy a Tessera image to Kubernetes, wait for it, check /health, and roll back on failure
# (seed 003's check-health-and-rollback, for the manifests in deploy/kubernetes).
#
#   deploy/rollout.sh --image ghcr.io/acme/tessera:3f9c2e1 [--namespace tessera] [--context prod]
#                     [--timeout 300s] [--health-url http://localhost:3000] [--dry-run]
# Steps: 1. record each role's current image; 2. run the migration Job with the new image (a failed
# migration stops here, nothing replaced); 3. `kubectl set image` on the api, worker and scheduler;
# 4. `kubectl rollout status` each; 5. GET /health until 200, a few tries: by default inside an api
# pod with kubectl exec; --health-url takes a base URL that reaches /health directly, i.e. in-cluster
# (http://tessera-api.tessera.svc) or a port-forward (http://localhost:3000). Never the public
# host: the Ingress does not route /health, so that check could never pass. 6. on any failure in
# 3-5: `kubectl rollout undo` every Deployment already changed, wait for the undo, exit 1.
# --dry-run prints every command that would change the cluster and runs only read-only ones.
# Exit codes: 0 deployed and healthy; 1 failed and rolled back (or migration failed, nothing
# changed); 2 usage error; 3 failed and the rollback failed too (page someone).
set -euo pipefail

NAMESPACE=tessera
CONTEXT=
IMAGE=
TIMEOUT=300s
HEALTH_URL=
DRY_RUN=0
HEALTH_TRIES=${HEALTH_TRIES:-5}
HEALTH_INTERVAL=${HEALTH_INTERVAL:-3}
ROLES=(api worker scheduler)
HERE=$(cd "$(dirname "$0")" && pwd)
MIGRATE_JOB="$HERE/kubernetes/migrate-job.yaml"

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
log() { printf '[rollout] %s\n' "$*" >&2; }
die() { log "ERROR: $1"; exit "${2:-1}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --image) IMAGE=${2:-}; shift 2 ;;
    --image=*) IMAGE=${1#*=}; shift ;;
    --namespace|-n) NAMESPACE=${2:-}; shift 2 ;;
    --context) CONTEXT=${2:-}; shift 2 ;;
    --timeout) TIMEOUT=${2:-}; shift 2 ;;
    --health-url) HEALTH_URL=${2%/}; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" 2 ;;
  esac
done
[ -n "$IMAGE" ] || { usage >&2; die "--image is required" 2; }
case "${IMAGE##*/}" in *:*|*@*) ;; *) die "--image needs a tag or digest (got $IMAGE)" 2 ;; esac
[ -f "$MIGRATE_JOB" ] || die "missing $MIGRATE_JOB" 2

k() {
  if [ -n "$CONTEXT" ]; then kubectl --context "$CONTEXT" -n "$NAMESPACE" "$@"; else kubectl -n "$NAMESPACE" "$@"; fi
}
# Commands that change the cluster go through here: printed, and skipped under --dry-run.
change() {
  if [ "$DRY_RUN" = 1 ]; then log "dry-run: would run: kubectl -n $NAMESPACE $*"; return 0; fi
  log "kubectl -n $NAMESPACE $*"
  k "$@"
}

declare -A BEFORE=()
for role in "${ROLES[@]}"; do
  BEFORE[$role]=$(k get deployment "tessera-$role" -o 'jsonpath={.spec.template.spec.containers[0].image}') ||
    die "cannot read deployment/tessera-$role in namespace $NAMESPACE" 2
  log "tessera-$role: ${BEFORE[$role]} -> $IMAGE"
done

# 2. Migrations first, with the new image. A Job's pod template is immutable: replace the Job.
if [ "$DRY_RUN" = 1 ]; then
  log "dry-run: would run: kubectl -n $NAMESPACE delete job tessera-migrate --ignore-not-found"
  log "dry-run: would run: kubectl -n $NAMESPACE apply -f $MIGRATE_JOB (image $IMAGE)"
  log "dry-run: would run: kubectl -n $NAMESPACE wait --for=condition=complete job/tessera-migrate --timeout=$TIMEOUT"
else
  change delete job tessera-migrate --ignore-not-found --wait=true
  sed -E "s#^([[:space:]]*image:[[:space:]]*).*#\1${IMAGE}#" "$MIGRATE_JOB" | change apply -f -
  if ! change wait --for=condition=complete job/tessera-migrate --timeout="$TIMEOUT"; then
    k logs job/tessera-migrate --tail=50 >&2 || true
    die "migration job failed: no Deployment was changed"
  fi
fi

CHANGED=()
rollback() {
  local reason=$1 failed=0
  log "FAILED: $reason; rolling back ${CHANGED[*]:-nothing}"
  for role in "${CHANGED[@]}"; do
    change rollout undo "deployment/tessera-$role" || failed=1
  done
  for role in "${CHANGED[@]}"; do
    change rollout status "deployment/tessera-$role" --timeout="$TIMEOUT" || failed=1
  done
  if [ "$failed" = 1 ]; then die "rollback did not complete: check kubectl -n $NAMESPACE get pods" 3; fi
  die "rolled back to the previous images" 1
}

# 3. New image on every role, then 4. wait for each rollout.
for role in "${ROLES[@]}"; do
  change set image "deployment/tessera-$role" "tessera=$IMAGE" || rollback "set image on tessera-$role"
  CHANGED+=("$role")
  change annotate "deployment/tessera-$role" --overwrite "kubernetes.io/change-cause=rollout.sh $IMAGE" ||
    rollback "annotate tessera-$role"
done
for role in "${ROLES[@]}"; do
  change rollout status "deployment/tessera-$role" --timeout="$TIMEOUT" ||
    rollback "tessera-$role did not become ready within $TIMEOUT"
done

# 5. /health answers 200 (PostgreSQL and NATS reachable from the new pods).
check_health() {
  if [ -n "$HEALTH_URL" ]; then
    curl -fsS --max-time 5 "$HEALTH_URL/health" >/dev/null
  else
    k exec deployment/tessera-api -c tessera -- node -e \
      "fetch('http://127.0.0.1:3000/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
  fi
}
if [ "$DRY_RUN" = 1 ]; then
  log "dry-run: would check ${HEALTH_URL:-deployment/tessera-api (kubectl exec)}/health up to $HEALTH_TRIES times"
  log "dry-run: nothing was changed"
  exit 0
fi
for try in $(seq 1 "$HEALTH_TRIES"); do
  if check_health; then
    log "healthy: $IMAGE is live on ${ROLES[*]}"
    exit 0
  fi
  log "health check $try/$HEALTH_TRIES failed"
  [ "$try" -lt "$HEALTH_TRIES" ] && sleep "$HEALTH_INTERVAL"
done
rollback "/health did not answer 200 after $HEALTH_TRIES tries"
