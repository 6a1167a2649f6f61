#!/usr/bin/env bash
# A deployed federation in containers: the SuperLink and three sites in the Flower image
# (infra/flower.Dockerfile) on two Docker networks, each container holding only its own PKI part
# and data file; the coordinator (this host, the pipeline environment) runs `fedmm run` of the
# deployed graph against the operator network. Needs root (the mounts are chowned to the image's
# user), a running Docker daemon and the image:
#   infra/container_trial.sh IMAGE WORKDIR
# Networks: fedmm-sites 10.78.0.0/24 (SuperLink 10.78.0.2, sites .10+k) and fedmm-operator
# 10.78.1.0/24 (SuperLink 10.78.1.2; the host reaches it through the bridge). Everything it
# starts is removed on exit, also after a failure.
set -euo pipefail
IMAGE=${1:?image}
WORK=$(realpath -m "${2:?workdir}")
REPO=$(cd "$(dirname "$0")/.." && pwd)
DOCKER=${DOCKER:-docker}
SITES=3
PUBLIC=10.78.0.2 OPERATOR=10.78.1.2
CONTAINERS=(fedmm-superlink $(seq -f "fedmm-site%g" 0 $((SITES - 1))))
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 FEDMM_HOME="$WORK/coordinator/home" PYTHONPATH="$REPO"

cleanup() {
  "$DOCKER" rm -f "${CONTAINERS[@]}" >/dev/null 2>&1 || true
  "$DOCKER" network rm fedmm-sites fedmm-operator >/dev/null 2>&1 || true
}
trap cleanup EXIT
wait_for() {  # wait_for CONTAINER TEXT SECONDS
  for _ in $(seq "$3"); do
    "$DOCKER" logs "$1" 2>&1 | grep -q "$2" && return 0
    sleep 1
  done
  "$DOCKER" logs "$1" 2>&1 | tail -20
  echo "$1: no '$2' within $3 s" >&2
  return 1
}

mkdir -p "$WORK"
[ -z "$(ls -A "$WORK")" ] || { echo "$WORK is not empty" >&2; exit 2; }
OVERRIDES=(partition.scheme=iid partition.num_clients=$SITES train.centralized=false train.rounds=3)
"$REPO/.venv/bin/fedmm" export-sites -c "$REPO/configs/tiny.yaml" "${OVERRIDES[@]/#/--set=}" --dir "$WORK/export"
"$REPO/.venv/bin/fedmm" pki init --dir "$WORK/pki" --superlink-host $PUBLIC --operator-host $OPERATOR --sites $SITES
# What each container mounts, owned by the image's user (uid 10001): its PKI part and its data file only.
for k in $(seq 0 $((SITES - 1))); do
  mkdir -p "$WORK/site$k"
  cp -r "$WORK/pki/sites/site_$k" "$WORK/site$k/key" && cp "$WORK/export/sites/site_$k.npz" "$WORK/site$k/"
done
mkdir -p "$WORK/superlink" && cp -r "$WORK/pki/superlink" "$WORK/pki/pki.json" "$WORK/superlink/"
chown -R 10001 "$WORK"/site* "$WORK/superlink"

cleanup
"$DOCKER" network create --subnet 10.78.0.0/24 fedmm-sites >/dev/null
"$DOCKER" network create --subnet 10.78.1.0/24 fedmm-operator >/dev/null
"$DOCKER" create --name fedmm-superlink --network fedmm-operator --ip $OPERATOR \
  -v "$WORK/superlink:/pki:ro" "$IMAGE" superlink --pki /pki >/dev/null
"$DOCKER" network connect --ip $PUBLIC fedmm-sites fedmm-superlink
"$DOCKER" start fedmm-superlink >/dev/null
wait_for fedmm-superlink "Control and Runtime APIs on" 120
export FLWR_HOME="$WORK/pki/coordinator/flwr"
for k in $(seq 0 $((SITES - 1))); do
  "$REPO/.venv-site/bin/flwr" supernode register "$WORK/pki/coordinator/keys/site_$k.pub" fedmm >/dev/null
  "$DOCKER" run -d --name "fedmm-site$k" --network fedmm-sites --ip "10.78.0.$((10 + k))" \
    -v "$WORK/site$k:/site" "$IMAGE" site --data "/site/site_$k.npz" --partition-id "$k" \
    --superlink $PUBLIC:9092 --root-certificates /site/key/ca.pem --auth-key "/site/key/site_$k" >/dev/null
done
for k in $(seq 0 $((SITES - 1))); do wait_for "fedmm-site$k" "connected to" 180; done
# A site cannot reach the operator address (no route from its network).
if "$DOCKER" exec fedmm-site0 python -c "import socket; socket.create_connection(('$OPERATOR', 9093), 3)" 2>/dev/null; then
  echo "a site reached the operator address" >&2; exit 1
fi
unset FLWR_HOME
"$REPO/.venv/bin/fedmm" run -c "$REPO/configs/tiny.yaml" "${OVERRIDES[@]/#/--set=}" \
  --set flower.num_sites=$SITES --set flower.superlink=$OPERATOR:9093 \
  --set "flower.root_certificates=$WORK/pki/coordinator/ca.pem" \
  --set "flower.superexec_secret=$WORK/pki/coordinator/superexec.secret" \
  --set "flower.validation_data=$WORK/export/coordinator/validation.npz" \
  --set "flower.test_data=$WORK/export/coordinator/test.npz" --set registry.model_name=fedmm-containers
for c in "${CONTAINERS[@]}"; do echo "== $c"; "$DOCKER" logs "$c" 2>&1 | tail -8; done
