#!/usr/bin/env bash
# A local Kubernetes with mcfs: a kind cluster of one control plane and two workers, the image
# loaded, the chart installed, and two pods on different workers sharing one PVC: a file written in
# one is read in the other.
#   scripts/kind-up.sh            (env CLUSTER=multicloud, TAG=multicloud-csi-driver:0.1.0)
#   kind delete cluster --name multicloud    (to remove it)
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER="${CLUSTER:-multicloud}"
TAG="${TAG:-multicloud-csi-driver:0.1.0}"
NS=multicloud-system

missing=()
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "kind-up: missing ${missing[*]}: install them first (docker, kind, kubectl, helm), then run this again" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "kind-up: docker is installed but its daemon does not answer (is it running? are you in the docker group?)" >&2
  exit 1
fi

if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "kind-up: creating cluster $CLUSTER (1 control plane, 2 workers)"
  kind create cluster --name "$CLUSTER" --config - <<'YAML'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
  - role: worker
YAML
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

ENGINE=docker scripts/build-image.sh "$TAG"
kind load docker-image "$TAG" --name "$CLUSTER"

echo "kind-up: installing the chart"
helm upgrade --install multicloud-csi charts/multicloud-csi \
  --set "images.csiPlugin.repository=${TAG%:*}" --set "images.csiPlugin.tag=${TAG##*:}" \
  --set images.csiPlugin.pullPolicy=Never --wait --timeout 5m
kubectl -n "$NS" rollout status ds/multicloud-csi-node --timeout=5m

mapfile -t WORKERS < <(kubectl get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
if [ ${#WORKERS[@]} -lt 2 ]; then
  echo "kind-up: expected two workers, found ${#WORKERS[@]}" >&2
  exit 1
fi

echo "kind-up: two pods on ${WORKERS[0]} and ${WORKERS[1]} sharing one PVC"
pod() {
  cat <<YAML
---
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  nodeSelector: {kubernetes.io/hostname: $2}
  containers:
    - {name: c, image: busybox:1.36, command: [sleep, "3600"], volumeMounts: [{name: data, mountPath: /data}]}
  volumes: [{name: data, persistentVolumeClaim: {claimName: mcfs-shared}}]
YAML
}
{
  cat <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: mcfs-shared}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: multicloud-csi-sc
  resources: {requests: {storage: 1Gi}}
YAML
  pod mcfs-writer "${WORKERS[0]}"
  pod mcfs-reader "${WORKERS[1]}"
} | kubectl apply -f -
kubectl wait --for=condition=Ready pod/mcfs-writer pod/mcfs-reader --timeout=5m

msg="written on ${WORKERS[0]} at $(date -u +%FT%TZ)"
kubectl exec mcfs-writer -- sh -c "echo '$msg' > /data/hello.txt"
got="$(kubectl exec mcfs-reader -- cat /data/hello.txt)"
echo "kind-up: read on ${WORKERS[1]}: $got"
if [ "$got" != "$msg" ]; then
  echo "kind-up: the reader did not see the writer's file" >&2
  exit 1
fi
echo "kind-up: done. Cluster status:"
# Redis speaks TLS and wants the mcfs user's password: the daemon container has both as files.
kubectl -n "$NS" exec ds/multicloud-csi-node -c mcfs-daemon -- mcfs status \
  -u "rediss://mcfs@multicloud-redis.$NS.svc.cluster.local:6379" \
  --redis-password-file=/etc/mcfs/redis-password --redis-ca=/etc/mcfs/redis-ca.crt
