#!/usr/bin/env bash
# Instructions per request of tokenwarden builds, counted by valgrind's callgrind: N
# keep-alive GETs (default 4000) through one proxy worker to a local nginx, per build, and
# the same with one request, whose difference divided by N is the cost of a request in
# user-space instructions. Deterministic, unlike CPU time on a shared machine: use it to see
# *where* a change on the request path costs (callgrind_annotate on the .out files it
# keeps), and benches/ab.sh for what it costs in CPU time.
#
# Usage:  benches/instructions.sh BINARY [BINARY ...]     e.g. a build of main and a branch
# Knobs:  N (requests, default 4000), OUT (where the callgrind files go, default a temp dir),
#         EXTRA_CONNECTIONS (more connections in the config, default 0: see upstream.sh)
# Needs:  valgrind, nginx, curl, python3 (Debian: apt-get install valgrind nginx-light curl)
set -euo pipefail

(($# >= 1)) || { sed -n '2,14p' "$0" >&2; exit 64; }
N=${N:-4000}
for tool in valgrind callgrind_annotate nginx curl python3; do
    command -v "$tool" >/dev/null || { echo "instructions.sh: needs $tool" >&2; exit 1; }
done
W=$(mktemp -d)
OUT=${OUT:-$W/out}
mkdir -p "$OUT"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
# shellcheck source=benches/upstream.sh
. "$(dirname "$0")/upstream.sh"
TRIES=${TRIES:-300} # (valgrind starts slowly; more for EXTRA_CONNECTIONS)
start_upstream

# Total instructions of one run of `bin` serving `n` requests (after the one wait_for sends).
count() { # bin n name
    local bin=$1 n=$2 name=$3 listen admin pid
    listen=$(port)
    admin=$(port)
    mkdir -p "$W/$name"
    write_config "$W/$name/config.yaml" "$listen" "$admin" "$W/$name/tokens.db"
    valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.out" \
        "$bin" run --config "$W/$name/config.yaml" 2>>"$W/$name/stderr.log" &
    pid=$!
    PIDS+=("$pid")
    wait_for "http://127.0.0.1:$listen/api/" '"id"'
    python3 - "$listen" "$n" <<'EOF'
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("GET", "/api/x?i=1", headers={"Accept": "application/json"})
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
EOF
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    callgrind_annotate "$OUT/$name.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}

echo "instructions.sh: $N keep-alive requests per build, one worker, ${EXTRA_CONNECTIONS:-0} extra connections, callgrind files in $OUT" >&2
i=0
for bin in "$@"; do
    i=$((i + 1))
    one=$(count "$(realpath "$bin")" 1 "b$i-one")
    many=$(count "$(realpath "$bin")" "$N" "b$i")
    awk -v b="$bin" -v one="$one" -v many="$many" -v n="$N" \
        'BEGIN { printf "%s: %.0f instructions per request (%d over %d requests)\n", b, (many - one) / (n - 1), many - one, n - 1 }'
done
