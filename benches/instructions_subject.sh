#!/usr/bin/env bash
# Instructions and (simulated) cache misses per request of a per-user connection's request
# (issue 24: `tokenwarden-subject` cycling over SUBJECTS imported grants) against the
# single-grant connection's, in one tokenwarden process under valgrind's callgrind: the
# config and grants of benches/ab_subject.sh, one pass over every subject to hold them all,
# then N requests of each shape with the counters zeroed and dumped between them
# (`callgrind_control`). Prints both dumps' totals; with CGOPTS=--cache-sim=yes the columns
# are Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw. Compare the files with callgrind_annotate.
# Figures and reading: docs/performance.md (Per-user grants, CPU).
#
# Usage:  benches/instructions_subject.sh BINARY NAME    (files in $OUT, default /tmp/cg/NAME)
# Knobs:  N (3000), SUBJECTS (1000), CGOPTS (extra valgrind options, e.g. --cache-sim=yes)
# Needs:  valgrind, nginx, curl, python3.
set -euo pipefail
(($# == 2)) || { sed -n '2,14p' "$0" >&2; exit 64; }
BIN=$(realpath "$1")
NAME=$2
N=${N:-3000}
SUBJECTS=${SUBJECTS:-1000}
W=$(mktemp -d)
OUT=${OUT:-/tmp/cg/$NAME}
mkdir -p "$OUT"
rm -f "$OUT"/cg.out*
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
# shellcheck source=benches/upstream.sh
. "$(dirname "$0")/upstream.sh"
TRIES=300
start_upstream
listen=$(port)
admin=$(port)
write_config "$W/config.yaml" "$listen" "$admin" "$W/tokens.db"
sed -i "s|^admin: { |admin: { public_url: \"https://tw.example\", |" "$W/config.yaml"
users_connection >>"$W/config.yaml"
# shellcheck disable=SC2086 # CGOPTS: several options
valgrind --tool=callgrind ${CGOPTS:-} --callgrind-out-file="$OUT/cg.out" \
    "$BIN" run --config "$W/config.yaml" 2>>"$W/stderr.log" &
pid=$!
PIDS+=("$pid")
wait_for "http://127.0.0.1:$listen/api/" '"id"'
python3 - "$admin" "$listen" "$SUBJECTS" "$N" "$pid" <<'EOF'
import http.client, json, sys, subprocess
admin, port, n, N, pid = map(int, sys.argv[1:])
c = http.client.HTTPConnection("127.0.0.1", admin)
for i in range(n):
    body = json.dumps({"access_token": "ab%06d" % i, "expires_in": 86400})
    c.request("PUT", "/api/v1/connection/users/grants/u%06d" % i, body, {"content-type": "application/json"})
    r = c.getresponse(); r.read(); assert r.status in (200, 201), r.status
c = http.client.HTTPConnection("127.0.0.1", port)
def a(k):
    for _ in range(k):
        c.request("GET", "/api/"); r = c.getresponse(); r.read(); assert r.status == 200
def b(k, start=0):
    for j in range(k):
        c.request("GET", "/users/", headers={"tokenwarden-subject": "u%06d" % ((start + j) % n)}); r = c.getresponse(); r.read(); assert r.status == 200, r.status
a(200); b(n)  # warm: every grant in memory
subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
a(N)
subprocess.run(["callgrind_control", "-d", "A", str(pid)], check=True, capture_output=True)
b(N)
subprocess.run(["callgrind_control", "-d", "B", str(pid)], check=True, capture_output=True)
EOF
kill -TERM "$pid"
wait "$pid" 2>/dev/null || true
echo "instructions_subject.sh: A = /api/ (single grant), B = /users/ with a subject ($SUBJECTS subjects), $N requests each; files in $OUT" >&2
for f in "$OUT"/cg.out.*; do
    printf '%s: ' "$f"
    callgrind_annotate "$f" 2>/dev/null | grep -m1 "PROGRAM TOTALS"
done
