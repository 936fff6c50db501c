#!/usr/bin/env bash
# Start a real Kubernetes control plane on 127.0.0.1 for the deploy tests: etcd 3.6.8,
# kube-apiserver, kube-controller-manager and kube-scheduler 1.36.3 (built by
# scripts/provision/kubernetes-build.sh into ~/.cache/autoscorer), and kwok 0.8.0 as the kubelet of
# two nodes (kwok-node-0; kwok-gpu-0, which advertises nvidia.com/gpu and is tainted for it).
# kwok runs no containers: pods move through the stages of deploy/k8s-cluster/kwok.yaml.
#
#   bash scripts/provision/kubernetes.sh          start (idempotent: seconds when already up)
#   bash scripts/provision/kubernetes.sh stop     stop everything, etcd last (state kept)
#   bash scripts/provision/kubernetes.sh reset    stop and delete the state (etcd data, certs)
#
# State, certificates and logs: $AUTOSCORER_K8S_STATE (default /tmp/autoscorer-k8s).
# The admin kubeconfig: $AUTOSCORER_K8S_STATE/admin.kubeconfig (printed at the end).
# The API server runs with --watch-cache=false and a 5 s etcd compaction so that a watch from an
# old resourceVersion gets 410 Gone within seconds (the executor's re-list path is tested).
set -euo pipefail

log() { printf 'provision/kubernetes: %s\n' "$*" >&2; }

repo="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${AUTOSCORER_CACHE:-$HOME/.cache/autoscorer}"
state="${AUTOSCORER_K8S_STATE:-/tmp/autoscorer-k8s}"
bin="$cache/k8s-cluster/current/k8s-cluster"
kwok="$cache/gobin-kwok/kwok"
kubeconfig="$state/admin.kubeconfig"
api_port=16443
etcd_port=23790
kwok_port=10350
api="https://127.0.0.1:$api_port"
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

running() {  # running <component>: its recorded pid is alive
    local pidfile="$state/run/$1.pid"
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

api_ready() {
    [ -f "$state/pki/admin.crt" ] && curl -fsS --max-time 3 --cacert "$state/pki/ca.crt" \
        --cert "$state/pki/admin.crt" --key "$state/pki/admin.key" "$api/readyz" >/dev/null 2>&1
}

stop_all() {
    local i name pidfile pid
    for (( i=${#components[@]}-1; i>=0; i-- )); do
        name=${components[$i]}
        pidfile="$state/run/$name.pid"
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            log "stopped $name (pid $pid)"
        fi
        rm -f "$pidfile"
    done
}

case "${1:-start}" in
    stop) stop_all; exit 0 ;;
    reset) stop_all; rm -rf "$state"; log "removed $state"; exit 0 ;;
    start) ;;
    *) echo "usage: $0 [start|stop|reset]" >&2; exit 2 ;;
esac

all_running=1
for name in "${components[@]}"; do running "$name" || all_running=0; done
# a plane started from an older build (other sources, another kwok config) is restarted
started_from="$(readlink -f "$bin" 2>/dev/null || true) $(sha256sum "$repo/deploy/k8s-cluster/kwok.yaml" | cut -c1-16)"
[ "$(cat "$state/run/started-from" 2>/dev/null)" = "$started_from" ] || all_running=0
if [ "$all_running" = 1 ] && api_ready; then
    log "already running; kubeconfig: $kubeconfig"
    echo "$kubeconfig"
    exit 0
fi

for tool in "$bin" "$kwok"; do
    [ -x "$tool" ] || { log "missing $tool: run scripts/provision/kubernetes-build.sh first"; exit 1; }
done
command -v openssl >/dev/null || { log "openssl is needed for the certificates"; exit 1; }
stop_all  # a partly running plane is restarted whole, on its kept state
t0=$(date +%s%N)
mkdir -p "$state"/{pki,run,logs,etcd,workspaces}
chmod 700 "$state/pki"

# --- certificates (made once, kept with the state) ---------------------------------------------
pki="$state/pki"
sign() {  # sign <name> <subject> [<subjectAltName>]: a key and a certificate signed by the CA
    local name=$1 subject=$2 san=${3:-}
    [ -f "$pki/$name.crt" ] && return 0
    openssl genrsa -out "$pki/$name.key" 2048 2>/dev/null
    openssl req -new -key "$pki/$name.key" -subj "$subject" -out "$pki/$name.csr" 2>/dev/null
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=serverAuth,clientAuth"
        [ -n "$san" ] && echo "subjectAltName=$san"
    } >"$pki/$name.ext"
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 365 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
    rm -f "$pki/$name.csr" "$pki/$name.ext"
}
if [ ! -f "$pki/ca.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" \
        -days 365 -subj "/CN=autoscorer-test-ca" 2>/dev/null
fi
sign apiserver "/CN=kube-apiserver" \
    "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
sign admin "/O=system:masters/CN=autoscorer-admin"
sign controller-manager "/CN=system:kube-controller-manager"
sign scheduler "/CN=system:kube-scheduler"
sign kwok "/O=system:masters/CN=kwok"
sign kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
sign kubelet "/CN=kwok-kubelet" "IP:127.0.0.1,DNS:localhost"
if [ ! -f "$pki/sa.key" ]; then
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
fi

write_kubeconfig() {  # write_kubeconfig <file> <cert name>
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: autoscorer-test
  cluster: {server: "$api", certificate-authority: "$pki/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$pki/$2.crt", client-key: "$pki/$2.key"}
contexts:
- name: autoscorer-test
  context: {cluster: autoscorer-test, user: $2}
current-context: autoscorer-test
EOF
}
for who in admin controller-manager scheduler kwok; do write_kubeconfig "$state/$who.kubeconfig" "$who"; done

launch() {  # launch <name> <command...>: in its own session, so it outlives this script
    local name=$1; shift
    setsid "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$state/run/$name.pid"
}
wait_for() {  # wait_for <what> <seconds> <command...>
    local what=$1 limit=$2; shift 2
    local deadline=$(( $(date +%s) + limit ))
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "$what not ready after ${limit}s; the end of its log:"
            tail -n 30 "$state/logs/$what.log" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
}

# --- etcd -> kube-apiserver -> controller-manager, scheduler -> kwok --------------------------------
launch etcd "$bin" etcd --name default --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster default=http://127.0.0.1:23800 \
    --unsafe-no-fsync --quota-backend-bytes 1073741824 --log-level warn
wait_for etcd 30 curl -fsS "http://127.0.0.1:$etcd_port/health"

launch kube-apiserver "$bin" kube-apiserver \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 \
    --kubelet-client-certificate "$pki/kubelet-client.crt" --kubelet-client-key "$pki/kubelet-client.key" \
    --kubelet-certificate-authority "$pki/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --allow-privileged=false \
    --watch-cache=false --etcd-compaction-interval 5s \
    --profiling=false --v 1
wait_for kube-apiserver 90 api_ready

launch kube-controller-manager "$bin" kube-controller-manager \
    --kubeconfig "$state/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$state/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$state/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10357 --leader-elect=false \
    --root-ca-file "$pki/ca.crt" --service-account-private-key-file "$pki/sa.key" \
    --use-service-account-credentials=true \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --controllers '*,-cloud-node-lifecycle-controller' --v 1
launch kube-scheduler "$bin" kube-scheduler \
    --kubeconfig "$state/scheduler.kubeconfig" \
    --authentication-kubeconfig "$state/scheduler.kubeconfig" \
    --authorization-kubeconfig "$state/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10359 --leader-elect=false --v 1
wait_for kube-controller-manager 60 curl -fsSk https://127.0.0.1:10357/healthz
wait_for kube-scheduler 60 curl -fsSk https://127.0.0.1:10359/healthz

# kwok: its stages, plus where every pod's log comes from (one CRI-format file)
printf '%s stdout F hello from the kwok node\n%s stderr F kwok runs no program: this log is fixed\n' \
    "2026-01-01T00:00:00.000000000Z" "2026-01-01T00:00:00.000000001Z" >"$state/participant.log"
cat >"$state/kwok-logs.yaml" <<EOF
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: participant-log
spec:
  selector: {}
  logs:
  - logsFile: $state/participant.log
EOF
launch kwok "$kwok" --kubeconfig "$state/kwok.kubeconfig" \
    --config "$repo/deploy/k8s-cluster/kwok.yaml" --config "$state/kwok-logs.yaml" \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-ip 127.0.0.1 --node-port "$kwok_port" --server-address "127.0.0.1:$kwok_port" \
    --tls-cert-file "$pki/kubelet.crt" --tls-private-key-file "$pki/kubelet.key"
wait_for kwok 30 curl -fsSk "https://127.0.0.1:$kwok_port/healthz"

kubectl_bin="$cache/k8s-cluster/current/kubectl"  # the same version; else the machine's
[ -x "$kubectl_bin" ] || kubectl_bin=kubectl
kubectl_() { "$kubectl_bin" --kubeconfig "$kubeconfig" "$@"; }
# Two nodes and a hostPath PersistentVolume the workspace PVC (deploy/k8s) binds to.
kubectl_ apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {kubernetes.io/hostname: kwok-node-0, kubernetes.io/os: linux, type: kwok}
status:
  allocatable: {cpu: "16", memory: 64Gi, pods: "110"}
  capacity: {cpu: "16", memory: 64Gi, pods: "110"}
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-gpu-0
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {kubernetes.io/hostname: kwok-gpu-0, kubernetes.io/os: linux, type: kwok, autoscorer.test/gpu: "true"}
spec:
  taints: [{key: nvidia.com/gpu, value: present, effect: NoSchedule}]
status:
  allocatable: {cpu: "8", memory: 32Gi, pods: "110", nvidia.com/gpu: "4"}
  capacity: {cpu: "8", memory: 32Gi, pods: "110", nvidia.com/gpu: "4"}
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: autoscorer-workspaces
  labels: {app.kubernetes.io/name: autoscorer}
spec:
  capacity: {storage: 100Gi}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: "$state/workspaces", type: Directory}
EOF
node_ready() {
    [ "$(kubectl_ get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{end}')" = TrueTrue ]
}
wait_for kwok 60 node_ready
echo "$started_from" >"$state/run/started-from"
log "control plane up in $(( ($(date +%s%N) - t0) / 1000000 )) ms; kubeconfig: $kubeconfig"
echo "$kubeconfig"
