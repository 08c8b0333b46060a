#!/usr/bin/env bash
# CPU per request of a per-user connection (issue 24: `grants: per_user`, the request names
# its subject with `tokenwarden-subject`) against a single-grant connection, one binary,
# two request shapes under the same load at the same time, as benches/ab.sh does for two
# builds: two identical sidecars (same binary, same config) pinned to one core (PROXY_CORE,
# default 1), each behind its own `wrk -t1 -c$CONNS` on that core, in front of one upstream
# nginx on OTHER_CORE (0). Both configs hold connection `api` (client credentials, the
# ab.sh one: token `ab-token`) and connection `users` (authorization code, grants: per_user)
# with SUBJECTS grants imported through the admin API (tokens of the same length). Each
# round one sidecar gets load A — `GET /api/` — and the other load B — `GET /users/` with
# `tokenwarden-subject: uNNNNNN`, cycling over the SUBJECTS subjects; the next round swaps
# them. Both wrk run the same kind of Lua script (prebuilt requests), so they cost the core
# the same. CPU per request is each sidecar's user+sys time over its requests.
#
# Usage:  benches/ab_subject.sh [BINARY]      (default target/release/tokenwarden)
# Knobs:  ROUNDS (default 6), DURATION (s, default 8), CONNS (default 32), WARMUP (s, 2),
#         SUBJECTS (1000), PROXY_CORE (1), OTHER_CORE (0).
# Needs:  nginx, wrk, curl, taskset, awk, python3 (Debian: apt-get install nginx-light wrk
#         curl util-linux python3).
# Prints one line per round (each load's CPU µs/request and req/s, and B/A), then the
# mean and range of B/A (target: B/A ≤ 1.05).
set -euo pipefail

(($# <= 1)) || { sed -n '2,20p' "$0" >&2; exit 64; }
BIN=$(realpath "${1:-$(dirname "$0")/../target/release/tokenwarden}")
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-8}
CONNS=${CONNS:-32}
WARMUP=${WARMUP:-2}
SUBJECTS=${SUBJECTS:-1000}
PROXY_CORE=${PROXY_CORE:-1}
OTHER_CORE=${OTHER_CORE:-0}
for tool in nginx wrk curl taskset awk python3; do
    command -v "$tool" >/dev/null || { echo "ab_subject.sh: needs $tool" >&2; exit 1; }
done
[[ -x $BIN ]] || { echo "ab_subject.sh: $BIN is not an executable" >&2; exit 1; }

W=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
# shellcheck source=benches/upstream.sh
. "$(dirname "$0")/upstream.sh"
start_upstream taskset -c "$OTHER_CORE"

# Imports SUBJECTS grants (u000000… with tokens ab000000…: as long as `ab-token`).
import_grants() { # admin port
    python3 - "$1" "$SUBJECTS" <<'EOF'
import http.client, json, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
for i in range(n):
    body = json.dumps({"access_token": "ab%06d" % i, "expires_in": 86400})
    c.request("PUT", "/api/v1/connection/users/grants/u%06d" % i, body, {"content-type": "application/json"})
    r = c.getresponse()
    r.read()
    if r.status not in (200, 201):
        sys.exit("import u%06d: %d" % (i, r.status))
EOF
}

start() { # name → sets PID_<name>, PORT_<name>
    local name=$1 listen admin
    listen=$(port)
    admin=$(port)
    mkdir -p "$W/$name"
    write_config "$W/$name/config.yaml" "$listen" "$admin" "$W/$name/tokens.db"
    sed -i "s|^admin: { |admin: { public_url: \"https://tw.example\", |" "$W/$name/config.yaml"
    users_connection >>"$W/$name/config.yaml"
    taskset -c "$PROXY_CORE" "$BIN" run --config "$W/$name/config.yaml" 2>>"$W/$name/stderr.log" &
    PIDS+=($!)
    printf -v "PID_$name" '%s' "$!"
    printf -v "PORT_$name" '%s' "$listen"
    wait_for "http://127.0.0.1:$listen/api/" '"id"'
    import_grants "$admin"
    curl -fsS -H 'tokenwarden-subject: u000000' "http://127.0.0.1:$listen/users/" | grep -q '"id"' ||
        { echo "ab_subject.sh: a per-user request failed (logs in $W)" >&2; exit 1; }
}

cat >"$W/a.lua" <<'EOF'
local req = wrk.format("GET", "/api/")
request = function() return req end
EOF
cat >"$W/b.lua" <<'EOF'
local n = tonumber(os.getenv("SUBJECTS"))
local reqs = {}
for i = 0, n - 1 do
    reqs[i] = wrk.format("GET", "/users/", { ["tokenwarden-subject"] = string.format("u%06d", i) })
end
local i = 0
request = function() i = (i + 1) % n; return reqs[i] end
EOF
export SUBJECTS

load() { # port script seconds output
    taskset -c "$PROXY_CORE" wrk -t1 -c"$CONNS" -d"$3s" -s "$2" "http://127.0.0.1:$1/" >"$4" 2>&1
}
requests() { awk '/ requests in / {print $1}' "$1"; }
rps() { awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$1"; }
non2xx() { awk '/Non-2xx/ {print $NF}' "$1"; }

start one
start two
echo "ab_subject.sh: $BIN; A = single-grant connection, B = per-user connection with a subject header ($SUBJECTS subjects); both sidecars on core $PROXY_CORE with their wrk -t1 -c$CONNS, upstream on core $OTHER_CORE; $ROUNDS rounds of ${DURATION}s" >&2
RATIOS=()
for round in $(seq "$ROUNDS"); do
    # Alternate which sidecar gets which load.
    if ((round % 2)); then sa=one sb=two; else sa=two sb=one; fi
    pa=PORT_$sa pb=PORT_$sb ia=PID_$sa ib=PID_$sb
    load "${!pa}" "$W/a.lua" "$WARMUP" /dev/null &
    w1=$!
    load "${!pb}" "$W/b.lua" "$WARMUP" /dev/null &
    w2=$!
    wait "$w1" "$w2" || true
    t_a=$(ticks "${!ia}")
    t_b=$(ticks "${!ib}")
    load "${!pa}" "$W/a.lua" "$DURATION" "$W/a.txt" &
    w1=$!
    load "${!pb}" "$W/b.lua" "$DURATION" "$W/b.txt" &
    w2=$!
    wait "$w1" "$w2"
    a=$(awk -v d=$(($(ticks "${!ia}") - t_a)) -v t="$TICK" -v n="$(requests "$W/a.txt")" 'BEGIN { printf "%.2f", d / t * 1e6 / n }')
    b=$(awk -v d=$(($(ticks "${!ib}") - t_b)) -v t="$TICK" -v n="$(requests "$W/b.txt")" 'BEGIN { printf "%.2f", d / t * 1e6 / n }')
    for f in a b; do
        [[ -z $(non2xx "$W/$f.txt") ]] || { echo "ab_subject.sh: load $f got non-2xx answers:" >&2; cat "$W/$f.txt" >&2; exit 1; }
    done
    ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b / a }')
    RATIOS+=("$ratio")
    printf 'round %d: A %6s µs CPU/req at %6s req/s   B %6s µs CPU/req at %6s req/s   B/A %s\n' \
        "$round" "$a" "$(rps "$W/a.txt")" "$b" "$(rps "$W/b.txt")" "$ratio"
done
printf '%s\n' "${RATIOS[@]}" | awk '
    { s += $1; if (NR == 1 || $1 < lo) lo = $1; if (NR == 1 || $1 > hi) hi = $1 }
    END { printf "B/A CPU per request (per-user with subject / single grant): mean %.3f, range %.3f–%.3f over %d rounds\n", s / NR, lo, hi, NR }'
