#!/usr/bin/env bash
# Footprint of a single kes-node server (loopback only): resident memory when idle, after
# 10,000 keys were created, and while 1,000 mTLS connections are open (each has done one
# request and stays kept alive); plus the size of the stripped release binary.
#   bash bench/footprint.sh [KEYS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS="${1:-10000}"
OPEN="${2:-1000}"
cargo build --release -q -p kes-node
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/kes-node"
ulimit -n 8192
WORK="$(mktemp -d)"
SERVER=""
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
rss() { awk '/VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$SERVER/status"; }

# The first start generates the dev identity (certificates, HSM key); what that setup leaves
# on the heap is reported, but the server at rest is the one restarted on its directory.
"$BIN" server --dev "$WORK/dev" --addr 127.0.0.1:0 >"$WORK/dev.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do grep -qs 'export KES_CLIENT_CERT' "$WORK/dev.log" && break; sleep 0.1; done
PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$WORK/dev.log" | cut -d: -f2)
sleep 1
FIRST="$(rss)"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
"$BIN" server --dev "$WORK/dev" --addr "127.0.0.1:$PORT" >"$WORK/dev2.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do grep -qs 'export KES_CLIENT_CERT' "$WORK/dev2.log" && break; sleep 0.1; done
export KES_SERVER="127.0.0.1:$PORT" KES_CLIENT_CERT="$WORK/dev/admin.cert" KES_CLIENT_KEY="$WORK/dev/admin.key"
unset KES_API_KEY KES_ENCLAVE
sleep 1
echo "footprint (kes-node, single node):"
echo "  binary (stripped release):   $(stat -c %s "$BIN" | awk '{printf "%.2f MiB", $1 / 1048576}')"
echo "  idle RSS:                    $(rss)   (first start, generating the dev identity: $FIRST)"
"$BIN" bench -k --json --op create -c 8 -n "$KEYS" >"$WORK/create.json"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["requests"] == int(sys.argv[2]) and not r["errors"], r' "$WORK/create.json" "$KEYS"
echo "  RSS with $KEYS keys:         $(rss)"
python3 - "$PORT" "$WORK/dev/admin.cert" "$WORK/dev/admin.key" "$OPEN" "$SERVER" <<'PY'
import socket, ssl, sys
port, cert, key, n, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.load_cert_chain(cert, key)
conns = []
for _ in range(n):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
    s.sendall(b"GET /version HTTP/1.1\r\nHost: kes\r\n\r\n")
    if not s.recv(4096).startswith(b"HTTP/1.1 200"):
        sys.exit("unexpected answer")
    conns.append(s)
rss = [l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1]
print(f"  RSS with keys + {n} conns:  {int(rss) / 1024:.1f} MiB")
PY
echo "  idle RSS afterwards:         $(rss)"
