#!/usr/bin/env bash
# Hostile clients (issue 12), measured: for each attack of tests/hostile.rs, whether the server
# survived, its peak resident memory and the slowest admin answer while the attack ran; beside
# them the normal load (kept-alive mTLS requests by the admin, as bench/run.sh drives them).
# With OLD_KES_NODE, the same runs against that binary too, interleaved with this tree's
# release binary (three rounds), so that before/after figures come from one run on the same
# machine state; `server cpu` (the server's CPU time per request) is the least noisy column.
# The servers run with the default limits (no `limits:` section) under a 512 MiB address-space
# limit; the attack clients are the test harness's.
#   bash bench/hostile.sh [OLD_KES_NODE] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
OLD="${1:-}"
SECS="${2:-5}"
cargo build --release -q -p kes-node
NEW="${CARGO_TARGET_DIR:-$PWD/target}/release/kes-node"
cargo test -q -p kes-node --test hostile --no-run 2>/dev/null
WORK="$(mktemp -d)"
SERVER=""
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
ulimit -n 20000
cat >"$WORK/show.py" <<'PY'
import json, sys
r = json.load(sys.stdin)
cpu = int(sys.argv[3]) * 1e6 / int(sys.argv[4]) / max(r['requests'], 1)
print(f"load: {sys.argv[1]:<6} {sys.argv[2]:<8} {r['rps']:>9.0f} req/s  p50 {r['p50_ms']:.2f} ms  "
      f"p99 {r['p99_ms']:.2f} ms  server cpu {cpu:.1f} us/req  errors {r['errors']}")
PY

HZ=$(getconf CLK_TCK)
load() { # binary label round: a dev server, then `kes-node bench` for version and decrypt
    local dir="$WORK/dev-$2-$3" log="$WORK/$2-$3.log" port before after
    "$1" server --dev "$dir" --addr 127.0.0.1:0 >"$log" 2>&1 &
    SERVER=$!
    for _ in $(seq 100); do grep -qs 'export KES_CLIENT_CERT' "$log" && break; sleep 0.1; done
    port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$log" | cut -d: -f2)
    for op in version decrypt; do
        before=$(awk '{print $14 + $15}' "/proc/$SERVER/stat")
        out=$(KES_SERVER="127.0.0.1:$port" KES_CLIENT_CERT="$dir/admin.cert" KES_CLIENT_KEY="$dir/admin.key" \
            chrt -b 0 "$NEW" bench -k --json --op "$op" -c 16 --seconds "$SECS")
        after=$(awk '{print $14 + $15}' "/proc/$SERVER/stat")
        echo "$out" | python3 "$WORK/show.py" "$2" "$op" "$((after - before))" "$HZ"
    done
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
    SERVER=""
}

attacks() { # binary label: the attacks of tests/hostile.rs against it, one at a time
    KES_HOSTILE_BIN="$1" cargo test -q -p kes-node --test hostile -- --nocapture --test-threads=1 2>&1 |
        grep -o 'hostile: .*' | sed "s/^hostile:/attack: $2/" || true
}

echo "normal load (16 kept-alive mTLS connections, ${SECS}s per run, $(nproc) cores shared with the load generator)"
for round in 1 2 3; do
    [ -n "$OLD" ] && load "$OLD" before "$round"
    load "$NEW" after "$round"
done
echo
echo "attacks (RLIMIT_AS 512 MiB; admin: the slowest fresh-connection /v1/status during the attack)"
[ -n "$OLD" ] && attacks "$OLD" before
attacks "$NEW" after
