#!/usr/bin/env bash
# The hot-path cost of authorization: generate and decrypt by the admin and by non-admin
# identities at depth 1 (created by the admin) and depth 3 (created by an identity created by an
# identity created by the admin), against one release kes-node on loopback. Prints requests per
# second and the server's CPU time per request (the least noisy column on a shared machine).
#   bash bench/authz.sh [SECONDS_PER_RUN] [CONNECTIONS] [ROUNDS]
# KES_NODE_BIN=path measures that binary instead of building this tree's (for before/after:
# run it for both binaries, alternating, on the same machine state).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-5}"
CONNS="${2:-16}"
ROUNDS="${3:-2}"
if [ -z "${KES_NODE_BIN:-}" ]; then cargo build --release -q -p kes-node; fi
BIN="${KES_NODE_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/kes-node}"
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

"$BIN" server --dev "$WORK/dev" --addr 127.0.0.1:0 >"$WORK/dev.log" 2>&1 &
DEV=$!
for _ in $(seq 100); do grep -qs listening "$WORK/dev.log" && break; sleep 0.1; done
kill "$DEV"; wait "$DEV" 2>/dev/null || true
ADMIN=$(grep -o 'admin:    [0-9a-f]*' "$WORK/dev.log" | awk '{print $2}')
export KES_HSM_KEY="$(cat "$WORK/dev/hsm.key")"
unset KES_API_KEY KES_ENCLAVE KES_CLIENT_CERT KES_CLIENT_KEY
cat >"$WORK/config.yml" <<YML
version: v1
admin:
  identity: $ADMIN
tls:
  key: $WORK/dev/server.key
  cert: $WORK/dev/server.cert
YML
PORT=$(free_port)
mkdir -p "$WORK/kes"
"$BIN" server --config "$WORK/config.yml" --addr "127.0.0.1:$PORT" "$WORK/kes" >"$WORK/kes.log" 2>&1 &
PID=$!
PIDS+=("$PID")
wait_port "$PORT"
URL="https://127.0.0.1:$PORT"
curl_as() { local who=$1; shift; curl -sS --fail --cacert "$WORK/dev/server.cert" --cert "$WORK/$who.cert" --key "$WORK/$who.key" "$@"; }
cp "$WORK/dev/admin.cert" "$WORK/admin.cert"; cp "$WORK/dev/admin.key" "$WORK/admin.key"
new_identity() { "$BIN" identity new --key "$WORK/$1.key" --cert "$WORK/$1.cert" "$1" | awk '/Identity:/ {print $2}'; }

curl_as admin -X PUT "$URL/v1/key/create/bench-key" >/dev/null
curl_as admin -X PUT "$URL/v1/policy/create/bench" \
    -d '{"allow":{"/v1/key/*":{},"/v1/identity/create/*":{}}}' >/dev/null
parent=admin
for depth in 1 2 3; do
    id=$(new_identity "d$depth")
    curl_as "$parent" -X PUT "$URL/v1/identity/create/$id" -d '{"policy":"bench"}' >/dev/null
    parent="d$depth"
done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
bench() { # who op
    local before out after
    before=$(ticks "$PID")
    out=$(KES_SERVER="127.0.0.1:$PORT" KES_CLIENT_CERT="$WORK/$1.cert" KES_CLIENT_KEY="$WORK/$1.key" \
        chrt -b 0 "$BIN" bench -k --json --op "$2" -c "$CONNS" --seconds "$SECS")
    after=$(ticks "$PID")
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); cpu=int(sys.argv[2])*1e6/int(sys.argv[3])/max(r["requests"],1)
print("%-6s %-9s %9.0f %6.2fms %6.2fms %6.1fus errors=%d" % (sys.argv[4], sys.argv[5], r["rps"], r["p50_ms"], r["p99_ms"], cpu, r["errors"]))' \
        "$out" "$((after - before))" "$HZ" "$1" "$2"
}
echo "authorization hot path ($CONNS connections, ${SECS}s per run, $(nproc) cores shared with the load generator)"
printf '%-6s %-9s %9s %8s %8s %8s\n' who op req/s p50 p99 cpu/req
for round in $(seq "$ROUNDS"); do
    for op in generate decrypt; do
        for who in admin d1 d3; do bench "$who" "$op"; done
    done
done
