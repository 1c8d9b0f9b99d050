#!/usr/bin/env bash
# Write benchmark for kes-node clusters on loopback, with fsync: key creations per second and
# latency for 1 and 3 nodes, with and without group commit, at 1 and 64 connections.
# Everything runs on this machine (loopback only); numbers are relative to each other.
#   bash bench/cluster-writes.sh [SECONDS] [NODES]   (NODES 3: only the 3-node, group-commit,
#   64-connection row, the one bench/run.sh reports)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-5}"
ONLY="${2:-}"
cargo build --release -q -p kes-node
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/kes-node"
WORK="$(mktemp -d)"
NODE_PIDS=()
stop_nodes() {
    for p in "${NODE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${NODE_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    NODE_PIDS=()
}
trap 'stop_nodes; rm -rf "$WORK"' EXIT

# Certificates and an admin key from a throwaway dev server directory.
"$BIN" server --dev "$WORK/dev" --addr 127.0.0.1:0 > "$WORK/dev.log" 2>&1 &
DEV=$!
for _ in $(seq 50); do grep -qs listening "$WORK/dev.log" && break; sleep 0.1; done
kill "$DEV"; wait "$DEV" 2>/dev/null || true
ADMIN=$(grep -o 'admin:    [0-9a-f]*' "$WORK/dev.log" | awk '{print $2}')
export KES_HSM_KEY="$(cat "$WORK/dev/hsm.key")"
cat > "$WORK/config.yml" <<YML
version: v1
admin:
  identity: $ADMIN
tls:
  key: $WORK/dev/server.key
  cert: $WORK/dev/server.cert
YML
export KES_CLIENT_CERT="$WORK/dev/admin.cert" KES_CLIENT_KEY="$WORK/dev/admin.key"

port=7600
start_cluster() { # nodes group_commit
    local n=$1; stop_nodes
    local json="{" i
    for i in $(seq 0 $((n - 1))); do json+="\"$i\":\"127.0.0.1:$((port + i))\""; [ "$i" -lt $((n - 1)) ] && json+=","; done
    json+="}"
    for i in $(seq 0 $((n - 1))); do
        rm -rf "$WORK/n$i"; mkdir -p "$WORK/n$i"; echo "$json" > "$WORK/n$i/.cluster.json"
        KES_GROUP_COMMIT=$2 "$BIN" server --config "$WORK/config.yml" --addr "127.0.0.1:$((port + i))" "$WORK/n$i" > "$WORK/n$i.log" 2>&1 &
        NODE_PIDS+=("$!")
    done
    export KES_SERVER="127.0.0.1:$port"
    for _ in $(seq 100); do
        "$BIN" cluster info -k --json 2>/dev/null | grep -q '"role":"leader"\|"leader_id":[0-6],' && break; sleep 0.1
    done
    sleep 1
}

printf '%-6s %-13s %-6s %10s %10s %10s\n' nodes group-commit conns writes/s p50-ms p99-ms
NODE_COUNTS="1 3" GCS="on off" CONN_COUNTS="1 64"
[ -n "$ONLY" ] && NODE_COUNTS="$ONLY" GCS=on CONN_COUNTS=64
for nodes in $NODE_COUNTS; do
    for gc in $GCS; do
        start_cluster "$nodes" "$gc"
        for conns in $CONN_COUNTS; do
            out=$(chrt -b 0 "$BIN" bench -k --json --op create --connections "$conns" --seconds "$SECONDS_PER_RUN")
            python3 - "$nodes" "$gc" "$conns" "$out" <<'PY'
import json, sys
n, gc, c, out = sys.argv[1:5]
r = json.loads(out)
print(f"{n:<6} {gc:<13} {c:<6} {r['rps']:>10.0f} {r['p50_ms']:>10.2f} {r['p99_ms']:>10.2f}" + (f"  ({r['errors']} errors)" if r['errors'] else ""))
PY
        done
        port=$((port + 10))
    done
done
