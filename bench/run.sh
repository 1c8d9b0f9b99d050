#!/usr/bin/env bash
# The benchmark of issue 7, in one run on this machine (loopback only):
#  1. builds the release binary;
#  2. starts kes-node with a fresh dev identity, and nginx (installed with apt if missing) with
#     mTLS on the same certificates (client certificate required) answering the same paths with
#     the bytes kes-node answered (captured once, so both send the same body);
#  3. for W = 1 and W = N (N = WORKERS, default the cores, issue 16): kes-node with --workers W
#     and nginx with worker_processes W, both driven by `kes-node bench` (the same load
#     generator, connections and time): throughput, p50/p99 and the server's CPU per request
#     (utime+stime from /proc/PID/stat before/after each run, all threads/processes), with the
#     server and the load generator pinned to disjoint cores (taskset) when the machine has
#     enough (at least 2*W and 4 cores), else said and run unpinned;
#  4. the 3-node loopback cluster write benchmark (64 clients, fsync, group commit);
#  5. the footprint (bench/footprint.sh): idle RSS, RSS with 10,000 keys and 1,000 connections,
#     the stripped binary's size.
# Absolute numbers depend on the machine and on what else runs; the ratios are the point.
#   bash bench/run.sh [SECONDS_PER_RUN] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-5}"
CONNS="${2:-16}"
CORES=$(nproc)
N="${WORKERS:-$CORES}"
cargo build --release -q -p kes-node
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/kes-node"
if ! command -v nginx >/dev/null; then
    echo "installing nginx (apt)..." >&2
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light; } >/dev/null 2>&1 ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >/dev/null
fi
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

# A fresh dev identity: server certificate, admin certificate, HSM key.
"$BIN" server --dev "$WORK/dev" --addr 127.0.0.1:0 >"$WORK/dev.log" 2>&1 &
DEV=$!
for _ in $(seq 100); do grep -qs listening "$WORK/dev.log" && break; sleep 0.1; done
kill "$DEV"; wait "$DEV" 2>/dev/null || true
ADMIN=$(grep -o 'admin:    [0-9a-f]*' "$WORK/dev.log" | awk '{print $2}')
export KES_HSM_KEY="$(cat "$WORK/dev/hsm.key")"
export KES_CLIENT_CERT="$WORK/dev/admin.cert" KES_CLIENT_KEY="$WORK/dev/admin.key"
unset KES_API_KEY KES_ENCLAVE
cat >"$WORK/config.yml" <<YML
version: v1
admin:
  identity: $ADMIN
tls:
  key: $WORK/dev/server.key
  cert: $WORK/dev/server.cert
YML

# Pinning for W server loops: the server on cores 0..W-1, the load generator on the rest.
SRV_PIN=() GEN_PIN=()
pin_for() {
    SRV_PIN=() GEN_PIN=()
    if [ "$CORES" -ge 4 ] && [ "$CORES" -ge $((2 * $1)) ]; then
        SRV_PIN=(taskset -c "0-$(($1 - 1))") GEN_PIN=(taskset -c "$1-$((CORES - 1))")
        echo "pinned: server on cores 0-$(($1 - 1)), load generator on $1-$((CORES - 1))"
    else
        echo "$CORES cores: cannot pin $1 server loop(s) and the load generator to disjoint cores meaningfully; unpinned (they share the cores)"
    fi
}
KES_PORT=$(free_port)
mkdir -p "$WORK/kes"
start_kes() { # workers
    "${SRV_PIN[@]}" "$BIN" server --config "$WORK/config.yml" --addr "127.0.0.1:$KES_PORT" --workers "$1" "$WORK/kes" >"$WORK/kes.log" 2>&1 &
    KES_PID=$!
    PIDS+=("$KES_PID")
    wait_port "$KES_PORT"
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }
start_kes "$N"

# The bodies nginx sends: what kes-node answered to the same requests.
C=(curl -sS --fail --cacert "$WORK/dev/server.cert" --cert "$WORK/dev/admin.cert" --key "$WORK/dev/admin.key")
URL="https://127.0.0.1:$KES_PORT"
"${C[@]}" -X PUT "$URL/v1/key/create/bench-key" >/dev/null
B_VERSION=$("${C[@]}" "$URL/version")
B_GENERATE=$("${C[@]}" -X PUT "$URL/v1/key/generate/bench-key" -d '{}')
CT=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ciphertext"])' "$B_GENERATE")
B_DECRYPT=$("${C[@]}" -X PUT "$URL/v1/key/decrypt/bench-key" -d "{\"ciphertext\":\"$CT\"}")
B_ENCRYPT=$("${C[@]}" -X PUT "$URL/v1/key/encrypt/bench-key" -d '{"plaintext":"YSAzMiBieXRlIGxvbmcgYmVuY2htYXJrIG1lc3NhZ2U="}')
B_HMAC=$("${C[@]}" -X PUT "$URL/v1/key/hmac/bench-key" -d '{"message":"YmVuY2htYXJr"}')

NGX_PORT=$(free_port)
mkdir -p "$WORK/nginx"
start_nginx() { # worker_processes
cat >"$WORK/nginx/nginx.conf" <<NGX
daemon off;
user root;
worker_processes $1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  server {
    listen 127.0.0.1:$NGX_PORT ssl;
    ssl_certificate $WORK/dev/server.cert;
    ssl_certificate_key $WORK/dev/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    # mTLS: a client certificate is required and must be the admin's (self-signed) one.
    ssl_client_certificate $WORK/dev/admin.cert;
    ssl_verify_client on;
    keepalive_requests 100000000;
    keepalive_timeout 90s;
    default_type application/json;
    location = /version { return 200 '$B_VERSION'; }
    location /v1/key/generate/ { return 200 '$B_GENERATE'; }
    location /v1/key/decrypt/ { return 200 '$B_DECRYPT'; }
    location /v1/key/encrypt/ { return 200 '$B_ENCRYPT'; }
    location /v1/key/hmac/ { return 200 '$B_HMAC'; }
    location /v1/key/create/ { return 200 ''; }
    location /v1/key/delete/ { return 200 ''; }
  }
}
NGX
rm -f "$WORK/nginx/nginx.pid"
"${SRV_PIN[@]}" nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx/out.log" 2>&1 &
NGX_MAIN=$!
PIDS+=("$NGX_MAIN")
wait_port "$NGX_PORT"
NGX_PID=$(for _ in $(seq 50); do [ -s "$WORK/nginx/nginx.pid" ] && break; sleep 0.1; done; cat "$WORK/nginx/nginx.pid")
}

# CPU time (clock ticks) of a process and its children: nginx's master and workers.
ticks() {
    local t=0 p
    for p in $1 $(cat "/proc/$1/task/$1/children" 2>/dev/null); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$t"
}
HZ=$(getconf CLK_TCK)
# The load generator runs as SCHED_BATCH: on a machine it shares with the server, each answer
# wakes a client thread, and a normal-class wake-up preempts the server on that core in the
# middle of its round (perf sched: most of the single-loop server's switches were such
# preemptions in writev). Batch-class threads never preempt on wake-up: the client then costs
# the server CPU time, not latency, as a client on another machine would. Same for both servers.
LOADGEN="chrt -b 0 $BIN"
bench() { # port server-pid op: the load generator's JSON plus the server's CPU µs per request
    local before out after
    before=$(ticks "$2")
    out=$(KES_SERVER="127.0.0.1:$1" "${GEN_PIN[@]}" $LOADGEN bench -k --json --op "$3" -c "$CONNS" --seconds "$SECS")
    after=$(ticks "$2")
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["cpu_us"]=(int(sys.argv[2]))*1e6/int(sys.argv[3])/max(r["requests"],1); print(json.dumps(r))' \
        "$out" "$((after - before))" "$HZ"
}
stop "$KES_PID"
for W in $(printf '%s\n' 1 "$N" | sort -un); do
echo
pin_for "$W"
start_kes "$W"
start_nginx "$W"
echo "W=$W: kes-node --workers $W vs nginx worker_processes $W (mTLS, keep-alive, $CONNS connections, ${SECS}s each; $CORES cores)"
echo "(cpu: the server's CPU time per request, all its threads/processes: less noisy than req/s)"
printf '%-9s %10s %10s %6s %8s %8s %8s %8s %8s %8s\n' op kes-req/s ngx-req/s ratio kes-p50 kes-p99 ngx-p50 ngx-p99 kes-cpu ngx-cpu
for op in version generate decrypt encrypt hmac; do
    k=$(bench "$KES_PORT" "$KES_PID" "$op")
    n=$(bench "$NGX_PORT" "$NGX_PID" "$op")
    python3 - "$op" "$k" "$n" <<'PY'
import json, sys
op, k, n = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
err = f"  (errors: kes {k['errors']}, nginx {n['errors']})" if k['errors'] or n['errors'] else ""
print(f"{op:<9} {k['rps']:>10.0f} {n['rps']:>10.0f} {k['rps'] / max(n['rps'], 1):>6.2f} "
      f"{k['p50_ms']:>6.2f}ms {k['p99_ms']:>6.2f}ms {n['p50_ms']:>6.2f}ms {n['p99_ms']:>6.2f}ms "
      f"{k['cpu_us']:>6.1f}us {n['cpu_us']:>6.1f}us{err}")
PY
done
stop "$KES_PID"
stop "$NGX_MAIN"
done
SRV_PIN=() GEN_PIN=()
start_kes "$N"
k=$(KES_SERVER="127.0.0.1:$KES_PORT" $LOADGEN bench -k --json --op create-delete -c "$CONNS" --seconds "$SECS")
python3 - "$k" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"create-delete on one node: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, {r['errors']} errors")
PY
kill "$KES_PID"

echo
echo "3-node loopback cluster, fsync, group commit:"
bash bench/cluster-writes.sh "$SECS" 3
echo
bash bench/footprint.sh
