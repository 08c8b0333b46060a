#!/usr/bin/env bash
# Upstream HTTP/2 against HTTP/1.1 (issue 27), one binary, the same load at the same time,
# as benches/ab.sh does for two builds: two sidecars pinned to one core (PROXY_CORE,
# default 1), each behind its own load on that core, in front of one upstream nginx on
# OTHER_CORE (0) that speaks TLS with HTTP/2 on (ALPN `h2, http/1.1`). The sidecars differ
# only in connection `api`'s `upstream_http2`: A `never` (ALPN http/1.1: a pool of HTTP/1.1
# connections), B `auto` (the upstream chooses h2: one multiplexed connection per origin
# and worker). Each round starts both anew and swaps which is started (and loaded) first.
# CPU per request is each sidecar's user+sys time over its requests.
#
# The load is the app's leg, the same for A and B:
#   CLIENT=wrk (default): HTTP/1.1, `wrk -t1 -c$CONNS` on `/api/` (reverse mode). A stays on
#     the fast path end to end; B's requests go to the hyper path, the one that speaks
#     HTTP/2 upstream: what switching a connection to `auto` costs an HTTP/1.1 app.
#   CLIENT=h2load: h2c with prior knowledge on the listener, `h2load -t1 -c$H2_CLIENTS
#     -m$H2_STREAMS` on `/api/`: both on the hyper path with HTTP/2 from the app, so B/A is
#     the upstream leg's version alone.
#
# Usage:  benches/ab_h2.sh [BINARY]      (default target/release/tokenwarden)
# Knobs:  CLIENT (wrk or h2load), ROUNDS (default 4), DURATION (s, default 10), CONNS (wrk
#         connections, default 32), H2_CLIENTS (default 4), H2_STREAMS (default 8), WARMUP
#         (s, 2), PROXY_CORE (1), OTHER_CORE (0), UP_KEEPALIVE_REQUESTS (the upstream's
#         keepalive_requests, requests per connection on either version: default 10000000;
#         nginx's own default is 1000).
# The sidecars run with `max_requests_per_connection: 10000000`: h2load does not reconnect
# after a GOAWAY, which the default (10,000 streams) sends within a round.
# Needs:  nginx with the HTTP/2 module, wrk or h2load, curl, openssl, taskset, awk, python3
#         (Debian: apt-get install nginx-light wrk nghttp2-client curl openssl util-linux).
# Prints one line per round (each sidecar's CPU µs/request, req/s and peak RSS, and B/A),
# then the mean and range of B/A for CPU per request and for req/s.
set -euo pipefail

(($# <= 1)) || { sed -n '2,30p' "$0" >&2; exit 64; }
BIN=$(realpath "${1:-${CARGO_TARGET_DIR:-$(dirname "$0")/../target}/release/tokenwarden}")
CLIENT=${CLIENT:-wrk}
ROUNDS=${ROUNDS:-4}
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
H2_CLIENTS=${H2_CLIENTS:-4}
H2_STREAMS=${H2_STREAMS:-8}
WARMUP=${WARMUP:-2}
UP_KEEPALIVE_REQUESTS=${UP_KEEPALIVE_REQUESTS:-10000000}
PROXY_CORE=${PROXY_CORE:-1}
OTHER_CORE=${OTHER_CORE:-0}
case $CLIENT in
wrk | h2load) ;;
*) echo "ab_h2.sh: CLIENT must be wrk or h2load" >&2; exit 64 ;;
esac
for tool in nginx "$CLIENT" curl openssl taskset awk python3; do
    command -v "$tool" >/dev/null || {
        echo "ab_h2.sh: needs $tool (Debian: apt-get install nginx-light wrk nghttp2-client curl openssl util-linux python3)" >&2
        exit 1
    }
done
nginx -V 2>&1 | grep -q -- '--with-http_v2_module' ||
    { echo "ab_h2.sh: this nginx has no HTTP/2 module (nginx-light has it)" >&2; exit 1; }
[[ -x $BIN ]] || { echo "ab_h2.sh: $BIN is not an executable" >&2; exit 1; }

W=$(mktemp -d)
chmod 755 "$W" # nginx workers may run as another user when started by root
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
# shellcheck source=benches/upstream.sh
. "$(dirname "$0")/upstream.sh"

# A CA, and a leaf for 127.0.0.1 signed by it (the sidecars trust it by tls.ca_file).
mkdir -p "$W/tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ab_h2 CA" \
    -keyout "$W/tls/ca.key" -out "$W/tls/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$W/tls/leaf.key" -out "$W/tls/leaf.csr" >/dev/null 2>&1
printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
    "extendedKeyUsage=serverAuth" >"$W/tls/ext.cnf"
openssl x509 -req -in "$W/tls/leaf.csr" -CA "$W/tls/ca.pem" -CAkey "$W/tls/ca.key" \
    -CAcreateserial -days 2 -extfile "$W/tls/ext.cnf" -out "$W/tls/leaf.pem" >/dev/null 2>&1
chmod -R a+rX "$W/tls"

# The upstream: the token endpoint over plain HTTP on UP, the API over TLS with HTTP/2 on
# UPTLS (`http2 on` since nginx 1.25.1, the listen parameter before); /proto answers the
# protocol a request came in.
UP=$(port)
UPTLS=$(port)
NGINX_VERSION=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
if printf '%s\n' 1.25.1 "$NGINX_VERSION" | sort -V -C; then
    H2_LISTEN="" H2_ON="http2 on;"
else
    H2_LISTEN=" http2" H2_ON=""
fi
mkdir -p "$W/up"
cat >"$W/up/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $W/up/nginx.pid;
error_log $W/up/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests $UP_KEEPALIVE_REQUESTS;
    keepalive_timeout 120s;
    client_body_temp_path $W/up/body;
    proxy_temp_path $W/up/proxy;
    fastcgi_temp_path $W/up/fastcgi;
    uwsgi_temp_path $W/up/uwsgi;
    scgi_temp_path $W/up/scgi;
    server {
        listen 127.0.0.1:$UP;
        listen 127.0.0.1:$UPTLS ssl$H2_LISTEN;
        $H2_ON
        ssl_certificate $W/tls/leaf.pem;
        ssl_certificate_key $W/tls/leaf.key;
        default_type application/json;
        location / { return 200 '{"id":12345,"name":"Ada Lovelace","active":true}'; }
        location = /proto { return 200 "\$server_protocol"; }
        location = /_status { stub_status; }
        location = /oauth/token { return 200 '{"access_token":"ab-token","token_type":"Bearer","expires_in":86400}'; }
    }
}
EOF
taskset -c "$OTHER_CORE" nginx -p "$W/up" -e "$W/up/error.log" -c "$W/up/nginx.conf" &
PIDS+=($!)
wait_for "http://127.0.0.1:$UP/" '"id"'
got=$(curl -sS --http2 --cacert "$W/tls/ca.pem" "https://127.0.0.1:$UPTLS/proto")
[[ $got == HTTP/2.0 ]] || { echo "ab_h2.sh: the upstream does not speak HTTP/2 over TLS (got $got)" >&2; exit 1; }

start() { # mode name → sets PID_<name>, PORT_<name>; `mode` is the upstream_http2 value
    local mode=$1 name=$2 listen admin want
    listen=$(port)
    admin=$(port)
    mkdir -p "$W/$name"
    cat >"$W/$name/config.yaml" <<EOF
proxy: { listen: "127.0.0.1:$listen", worker_threads: 1, max_requests_per_connection: 10000000 }
admin: { listen: "127.0.0.1:$admin", watch_config: 0 }
store: { path: "$W/$name/tokens-$round.bin" }
tls: { ca_file: "$W/tls/ca.pem" }
log: { level: warn }
connections:
  - key: api
    upstream_http2: $mode
    secrets: { client_id: ab, client_secret: ab }
    client_config:
      protocol: https
      host: "127.0.0.1:$UPTLS"
      authentication:
        strategy: oauth2_client_credentials
        configuration:
          token_request:
            method: POST
            path: /oauth/token
            client_config: { protocol: http, host: "127.0.0.1:$UP" }
EOF
    taskset -c "$PROXY_CORE" "$BIN" run --config "$W/$name/config.yaml" 2>>"$W/$name/stderr.log" &
    PIDS+=($!)
    printf -v "PID_$name" '%s' "$!"
    printf -v "PORT_$name" '%s' "$listen"
    wait_for "http://127.0.0.1:$listen/api/" '"id"'
    # the upstream leg's version is the one configured
    want=HTTP/1.1
    [[ $mode == never ]] || want=HTTP/2.0
    got=$(curl -sS "http://127.0.0.1:$listen/api/proto")
    [[ $got == "$want" ]] || { echo "ab_h2.sh: upstream_http2: $mode went upstream as $got, not $want (logs in $W)" >&2; exit 1; }
    if [[ $CLIENT == h2load ]]; then
        got=$(curl -sS --http2-prior-knowledge -w ' %{http_version}' "http://127.0.0.1:$listen/api/proto")
        [[ $got == "$want 2" ]] || { echo "ab_h2.sh: h2c to the listener: got $got (logs in $W)" >&2; exit 1; }
    fi
}

load() { # port seconds output
    local url="http://127.0.0.1:$1/api/v1/contacts/12345"
    if [[ $CLIENT == wrk ]]; then
        taskset -c "$PROXY_CORE" wrk -t1 -c"$CONNS" -d"$2s" "$url" >"$3" 2>&1
    else
        # bounded: h2load 1.52 never returns when -D ends before every client connected
        taskset -c "$PROXY_CORE" timeout $(($2 + 30)) h2load -t1 -c"$H2_CLIENTS" -m"$H2_STREAMS" -D "$2" "$url" >"$3" 2>&1
    fi
}
# requests done, req/s, requests not answered 2xx
requests() {
    awk '/ requests in / {print $1} /^requests: / {print $6}' "$1"
}
rps() {
    awk '/^Requests\/sec:/ {printf "%.0f", $2} /^finished in / {printf "%.0f", $4}' "$1"
}
failed() {
    awk '/Non-2xx or 3xx responses:/ {e += $NF} /Socket errors:/ {gsub(/,/, ""); e += $4 + $6 + $8 + $10}
         /^requests: / {done = $6} /^status codes: / {e += done - $3} END {print e + 0}' "$1"
}
peak_rss_mb() { awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

if [[ $CLIENT == wrk ]]; then
    SHAPE="wrk -t1 -c$CONNS (HTTP/1.1)"
else
    SHAPE="h2load -t1 -c$H2_CLIENTS -m$H2_STREAMS (h2c, prior knowledge)"
fi
echo "ab_h2.sh: $BIN; A = upstream_http2: never (HTTP/1.1 upstream), B = upstream_http2: auto (HTTP/2 upstream, nginx $NGINX_VERSION over TLS); both on core $PROXY_CORE, each with its $SHAPE on /api/, upstream on core $OTHER_CORE; $ROUNDS rounds of ${DURATION}s" >&2
RATIOS=()
RPS_RATIOS=()
# shellcheck disable=SC2154 # PID_one, PORT_one… are set by start (printf -v)
for round in $(seq "$ROUNDS"); do
    # Alternate which sidecar gets started (and loaded) first.
    if ((round % 2)); then first=never second=auto; else first=auto second=never; fi
    start "$first" one
    start "$second" two
    load "$PORT_one" "$WARMUP" /dev/null &
    w1=$!
    load "$PORT_two" "$WARMUP" /dev/null &
    w2=$!
    wait "$w1" "$w2" || true
    t_one=$(ticks "$PID_one")
    t_two=$(ticks "$PID_two")
    load "$PORT_one" "$DURATION" "$W/one.txt" &
    w1=$!
    load "$PORT_two" "$DURATION" "$W/two.txt" &
    w2=$!
    wait "$w1" "$w2"
    d_one=$(($(ticks "$PID_one") - t_one))
    d_two=$(($(ticks "$PID_two") - t_two))
    for s in one two; do
        n=$(failed "$W/$s.txt")
        ((n == 0)) || { echo "ab_h2.sh: $n requests through sidecar $s failed:" >&2; cat "$W/$s.txt" >&2; exit 1; }
    done
    cpu_one=$(awk -v d="$d_one" -v t="$TICK" -v n="$(requests "$W/one.txt")" 'BEGIN { printf "%.2f", d / t * 1e6 / n }')
    cpu_two=$(awk -v d="$d_two" -v t="$TICK" -v n="$(requests "$W/two.txt")" 'BEGIN { printf "%.2f", d / t * 1e6 / n }')
    if [[ $first == never ]]; then
        a=$cpu_one b=$cpu_two a_rps=$(rps "$W/one.txt") b_rps=$(rps "$W/two.txt")
        a_rss=$(peak_rss_mb "$PID_one") b_rss=$(peak_rss_mb "$PID_two")
    else
        a=$cpu_two b=$cpu_one a_rps=$(rps "$W/two.txt") b_rps=$(rps "$W/one.txt")
        a_rss=$(peak_rss_mb "$PID_two") b_rss=$(peak_rss_mb "$PID_one")
    fi
    ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b / a }')
    rps_ratio=$(awk -v a="$a_rps" -v b="$b_rps" 'BEGIN { printf "%.3f", b / a }')
    RATIOS+=("$ratio")
    RPS_RATIOS+=("$rps_ratio")
    printf 'round %d: A (h1 up) %6s µs CPU/req at %6s req/s, %5s MB   B (h2 up) %6s µs CPU/req at %6s req/s, %5s MB   B/A CPU %s req/s %s\n' \
        "$round" "$a" "$a_rps" "$a_rss" "$b" "$b_rps" "$b_rss" "$ratio" "$rps_ratio"
    kill "$PID_one" "$PID_two"
    wait "$PID_one" "$PID_two" 2>/dev/null || true
done
summary() { # label ratios...
    local label=$1
    shift
    printf '%s\n' "$@" | awk -v l="$label" '
        { s += $1; if (NR == 1 || $1 < lo) lo = $1; if (NR == 1 || $1 > hi) hi = $1 }
        END { printf "B/A %s (HTTP/2 upstream / HTTP/1.1 upstream): mean %.3f, range %.3f–%.3f over %d rounds\n", l, s / NR, lo, hi, NR }'
}
summary "CPU per request" "${RATIOS[@]}"
summary "req/s" "${RPS_RATIOS[@]}"
