#!/usr/bin/env bash
# A/B of two tokenwarden builds under the same load at the same time: both run pinned to
# one core (PROXY_CORE, default 1), each behind its own `wrk -t1 -c$CONNS` on that core,
# in front of one upstream nginx on OTHER_CORE (0); CPU per request is each process's
# user+sys time over its requests. Loading both at once cancels the background load of a
# shared machine, which sequential runs (benches/compare.sh) cannot: there, one build's CPU
# per request varies by ±30 % between runs, here the B/A ratio is stable to a few percent.
# Use it for "does this change cost CPU per request" (e.g. the ≤ 5 % budget of a change
# on the request path); use compare.sh for the comparison with nginx and HAProxy.
#
# Usage:  benches/ab.sh A_BINARY B_BINARY      e.g. a build of main and one of a branch
#         (or one binary twice, with two settings: A_API_EXTRA / B_API_EXTRA below)
# Knobs:  ROUNDS (default 5), DURATION (s, default 8), CONNS (default 32), WARMUP (s, 2),
#         PROXY_CORE (1), OTHER_CORE (0), EXTRA_CONNECTIONS (0: see upstream.sh),
#         A_API_EXTRA / B_API_EXTRA (YAML lines for connection `api` of build A / B, e.g.
#         $'    scrub_response_headers: false\n'), A_HEADER / B_HEADER (a header each
#         request of A's / B's load sends, e.g. "x-api-key: twph_…").
# Needs:  nginx, wrk, curl, taskset, awk (Debian: apt-get install nginx-light wrk curl util-linux).
# Prints one line per round (each build's CPU µs/request and req/s, and B/A), then the
# mean and range of B/A. Each round swaps which build gets the first port.
set -euo pipefail

(($# == 2)) || { sed -n '2,20p' "$0" >&2; exit 64; }
A=$(realpath "$1")
B=$(realpath "$2")
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8}
CONNS=${CONNS:-32}
WARMUP=${WARMUP:-2}
PROXY_CORE=${PROXY_CORE:-1}
OTHER_CORE=${OTHER_CORE:-0}
for tool in nginx wrk curl taskset awk; do
    command -v "$tool" >/dev/null || { echo "ab.sh: needs $tool" >&2; exit 1; }
done
[[ -x $A && -x $B ]] || { echo "ab.sh: $A or $B is not an executable" >&2; exit 1; }

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

start() { # binary name extra → sets PID_<name>, PORT_<name>; a store file per round: A and
          # B alternate in each slot, and an older build may not read a newer one's file
    local bin=$1 name=$2 listen admin
    listen=$(port)
    admin=$(port)
    mkdir -p "$W/$name"
    API_EXTRA=$3 write_config "$W/$name/config.yaml" "$listen" "$admin" "$W/$name/tokens-$round.bin"
    taskset -c "$PROXY_CORE" "$bin" run --config "$W/$name/config.yaml" 2>>"$W/$name/stderr.log" &
    PIDS+=($!)
    printf -v "PID_$name" '%s' "$!"
    printf -v "PORT_$name" '%s' "$listen"
    wait_for "http://127.0.0.1:$listen/api/" '"id"'
}

requests() { awk '/ requests in / {print $1}' "$1"; }
rps() { awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$1"; }

echo "ab.sh: A=$A B=$B; both on core $PROXY_CORE with their wrk -t1 -c$CONNS, upstream on core $OTHER_CORE; $ROUNDS rounds of ${DURATION}s" >&2
RATIOS=()
for round in $(seq "$ROUNDS"); do
    # Alternate which build gets started (and loaded) first.
    # (A and B may be the same binary: the slots follow the round, the settings follow A/B.)
    if ((round % 2)); then
        first=$A second=$B extra_one=${A_API_EXTRA:-} extra_two=${B_API_EXTRA:-}
        header_one=${A_HEADER:-x-ab: a} header_two=${B_HEADER:-x-ab: b}
    else
        first=$B second=$A extra_one=${B_API_EXTRA:-} extra_two=${A_API_EXTRA:-}
        header_one=${B_HEADER:-x-ab: b} header_two=${A_HEADER:-x-ab: a}
    fi
    start "$first" one "$extra_one"
    start "$second" two "$extra_two"
    taskset -c "$PROXY_CORE" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -H "$header_one" "http://127.0.0.1:$PORT_one/api/" >/dev/null 2>&1 &
    w1=$!
    taskset -c "$PROXY_CORE" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -H "$header_two" "http://127.0.0.1:$PORT_two/api/" >/dev/null 2>&1 &
    w2=$!
    wait "$w1" "$w2" || true
    t_one=$(ticks "$PID_one")
    t_two=$(ticks "$PID_two")
    taskset -c "$PROXY_CORE" wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "$header_one" "http://127.0.0.1:$PORT_one/api/" >"$W/one.txt" 2>&1 &
    w1=$!
    taskset -c "$PROXY_CORE" wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "$header_two" "http://127.0.0.1:$PORT_two/api/" >"$W/two.txt" 2>&1 &
    w2=$!
    wait "$w1" "$w2"
    cpu_one=$(awk -v d=$(($(ticks "$PID_one") - t_one)) -v t="$TICK" -v n="$(requests "$W/one.txt")" 'BEGIN { printf "%.2f", d / t * 1e6 / n }')
    cpu_two=$(awk -v d=$(($(ticks "$PID_two") - t_two)) -v t="$TICK" -v n="$(requests "$W/two.txt")" 'BEGIN { printf "%.2f", d / t * 1e6 / n }')
    if ((round % 2)); then
        a=$cpu_one b=$cpu_two a_rps=$(rps "$W/one.txt") b_rps=$(rps "$W/two.txt")
    else
        a=$cpu_two b=$cpu_one a_rps=$(rps "$W/two.txt") b_rps=$(rps "$W/one.txt")
    fi
    ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b / a }')
    RATIOS+=("$ratio")
    printf 'round %d: A %6s µs CPU/req at %6s req/s   B %6s µs CPU/req at %6s req/s   B/A %s\n' \
        "$round" "$a" "$a_rps" "$b" "$b_rps" "$ratio"
    kill "$PID_one" "$PID_two"
    wait "$PID_one" "$PID_two" 2>/dev/null || true
done
printf '%s\n' "${RATIOS[@]}" | awk '
    { s += $1; if (NR == 1 || $1 < lo) lo = $1; if (NR == 1 || $1 > hi) hi = $1 }
    END { printf "B/A CPU per request: mean %.3f, range %.3f–%.3f over %d rounds\n", s / NR, lo, hi, NR }'
