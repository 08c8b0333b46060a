#!/usr/bin/env bash
# Side-by-side load benchmark: tokenwarden vs nginx vs HAProxy as the token-injecting proxy
# in front of the same fast upstream, on loopback, in one run. Prints one table (req/s, p50,
# p99, the proxy's own CPU per request, peak RSS) plus tokenwarden/nginx ratios and a
# single-flight line (requests spread across a token refresh → token-endpoint hits).
# The "intercept" case (issue 12) is https:// through HTTPS_PROXY: tokenwarden terminates
# the client's TLS (CONNECT, a leaf minted by `proxy.intercept`'s CA) and originates TLS to
# the upstream, against nginx doing the same with an `ssl` listener and `proxy_pass https`.
# wrk cannot send CONNECT, so a socat relay (on OTHER_CORE, not counted) opens each tunnel
# through tokenwarden (`PROXY:` address); nginx gets an identical plain socat relay.
# The HTTP/2 cases (issue 27) drive the same proxies with h2load (nghttp2-client) instead of
# wrk, H2_CLIENTS connections × H2_STREAMS concurrent streams each: "intercept-h2" is the
# intercept case with the app speaking h2 inside the tunnel (ALPN h2 on tokenwarden's
# minted leaf, through the same socat relay; h2load cannot send CONNECT either), against
# nginx's ssl listener with HTTP/2 on (`http2 on`, or `listen … ssl http2` before nginx
# 1.25.1); "h2c" is h2c with prior knowledge on the proxy's listener (reverse mode,
# `/api/…` to the plain upstream, as the small case) against nginx's plain listener with
# HTTP/2 on. Both proxies keep HTTP/1.1 to the upstream (nginx cannot proxy_pass HTTP/2, and
# the upstream offers no h2): the rows measure the app's leg.
# The proxy `tokenwarden-redis` (add it to PROXIES) is tokenwarden with `store.backend:
# redis` on a throwaway redis-server (free loopback port, no persistence, on OTHER_CORE);
# it gets tokenwarden-redis/tokenwarden ratio lines (target: CPU/req within 5 %). Replicas
# never call Redis on the request path, so this checks that the follower task costs nothing
# there.
#
# Usage:  benches/compare.sh                      (≈ 3 min on 2 cores)
#         CASES="intercept intercept-h2 h2c" PROXIES="tokenwarden nginx" benches/compare.sh
#                                                  (HTTP/2 from the app, with HTTP/1.1 beside it)
#         DURATION=5 CONNS="64" CASES="small" benches/compare.sh   (quicker)
#         PROXIES="tokenwarden tokenwarden-redis nginx" benches/compare.sh   (+ Redis store)
# Needs:  nginx (any flavour with ssl), haproxy (if in PROXIES), wrk, curl, openssl, taskset, cargo; socat
#         for the intercept cases; h2load (apt-get install nghttp2-client) and an nginx
#         with the HTTP/2 module (nginx-light has it) for intercept-h2 and h2c.
#         Debian/Ubuntu: apt-get install nginx-light haproxy wrk curl openssl util-linux
#         tokenwarden-redis also needs redis-server (apt-get install redis-server).
# It installs nothing; it builds target/release/tokenwarden if missing (TOKENWARDEN_BIN
# or CARGO_TARGET_DIR choose another binary).
#
# Core budget (2+ cores): the proxy under test is pinned to core PROXY_CORE (default 1)
# with `taskset`, all its threads/processes included: tokenwarden runs with
# `proxy.worker_threads: 1`, nginx with `worker_processes 1`, HAProxy with `nbthread 1`.
# LAYOUT says where the load runs:
#   sidecar (default): wrk (the app, 1 thread) shares the proxy's core, as an app and its
#     sidecar share a pod's CPUs; the upstream nginx (1 worker) has core OTHER_CORE (0).
#     The proxy's cost then shows in throughput: what it does not use, the app gets.
#   split: the proxy has its core alone; wrk and the upstream share OTHER_CORE. That core
#     is the bottleneck, so req/s and latency measure the load generator as much as the
#     proxy: a proxy that answers sooner leaves its core idle more often, sends work to the
#     load core in smaller batches, and makes wrk and the upstream switch more often.
# With one core nothing is pinned (the numbers then mix load generator and proxy).
#
# Environment knobs: DURATION (s, default 10), CONNS (default "64 256"), BIG_CONNS (1 MB
# case, default 16), CASES (default "small tls big"; add intercept, intercept-h2, h2c),
# PROXIES (default "tokenwarden nginx haproxy"; add tokenwarden-redis for the Redis store;
# the intercept and HTTP/2 cases compare tokenwarden and nginx only), WARMUP (s, default 2),
# H2_CLIENTS (h2load connections, default 8), H2_STREAMS (streams in flight per
# connection, default 8: 64 requests in flight, as wrk -c64),
# SF_EXPIRES_IN (s, default 2), SF_REQUESTS (10000), KEEP_WORKDIR=1 (keep configs and
# logs), RESULTS (also write the table to this file), LAYOUT (sidecar or split, above),
# PROXY_CORE (1), OTHER_CORE (0).
#
# Reading the table: the machine is shared, so compare rows of one run (the ratio lines),
# never numbers across runs. "up conns" counts connections the upstream accepted during
# a row: a few dozen to a few hundred are expected even with perfect pooling, because the
# warm-up's wrk closes its connections with requests in flight and a proxy must close an
# upstream connection whose response it abandons.
set -euo pipefail

DURATION=${DURATION:-10}
CONNS=${CONNS:-"64 256"}
BIG_CONNS=${BIG_CONNS:-16}
CASES=${CASES-"small tls big"}
PROXIES=${PROXIES-"tokenwarden nginx haproxy"}
WARMUP=${WARMUP:-2}
SF_EXPIRES_IN=${SF_EXPIRES_IN:-2}
SF_REQUESTS=${SF_REQUESTS:-10000}
TOKEN_LEN=1000 # a realistic JWT-sized access token, the same bytes for every proxy

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() {
    echo "compare.sh: $*" >&2
    exit 1
}

# ---------------------------------------------------------------- prerequisites
missing=()
for tool in nginx wrk curl openssl taskset awk; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ " $PROXIES " == *" haproxy "* ]]; then
    command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
fi
if [[ " $CASES " == *" intercept "* || " $CASES " == *" intercept-h2 "* ]]; then
    command -v socat >/dev/null 2>&1 || missing+=(socat)
fi
WITH_H2=0
if [[ " $CASES " == *" intercept-h2 "* || " $CASES " == *" h2c "* ]]; then
    WITH_H2=1
    command -v h2load >/dev/null 2>&1 || missing+=("h2load (apt-get install nghttp2-client)")
fi
WITH_REDIS=0
if [[ " $PROXIES " == *" tokenwarden-redis "* ]]; then
    WITH_REDIS=1
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
fi
if ((${#missing[@]})); then
    echo "compare.sh: missing: ${missing[*]}" >&2
    echo "  this benchmark needs nginx (with ssl), haproxy, wrk, curl, openssl and taskset;" >&2
    echo "  on Debian/Ubuntu: apt-get install nginx-light haproxy wrk curl openssl util-linux" >&2
    echo "  (and redis-server for tokenwarden-redis; socat for the intercept cases; h2load," >&2
    echo "  apt-get install nghttp2-client, for intercept-h2 and h2c)" >&2
    exit 2
fi
if ((WITH_H2)) && ! nginx -V 2>&1 | grep -q -- '--with-http_v2_module'; then
    die "this nginx has no HTTP/2 module (--with-http_v2_module): the HTTP/2 cases need one (nginx-light has it)"
fi
H2_CLIENTS=${H2_CLIENTS:-8}
H2_STREAMS=${H2_STREAMS:-8}

BIN=${TOKENWARDEN_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tokenwarden}
if [[ ! -x $BIN ]]; then
    command -v cargo >/dev/null 2>&1 || die "no $BIN and no cargo to build it"
    echo "building $BIN (release; this takes a few minutes the first time)…" >&2
    (cd "$ROOT" && cargo build --release --bin tokenwarden >&2) || die "cargo build --release failed"
fi
[[ -x $BIN ]] || die "no tokenwarden binary at $BIN"

NCPU=$(nproc)
if ((NCPU >= 2)); then
    PROXY_CORE=${PROXY_CORE:-1}
    OTHER_CORE=${OTHER_CORE:-0}
    PIN_PROXY=(taskset -c "$PROXY_CORE")
    PIN_UPSTREAM=(taskset -c "$OTHER_CORE")
    case ${LAYOUT:-sidecar} in
    sidecar)
        PIN_APP=(taskset -c "$PROXY_CORE")
        PINNING="layout sidecar: proxy + wrk on core $PROXY_CORE, upstream on core $OTHER_CORE"
        ;;
    split)
        PIN_APP=(taskset -c "$OTHER_CORE")
        PINNING="layout split: proxy alone on core $PROXY_CORE, wrk + upstream on core $OTHER_CORE"
        ;;
    *) die "LAYOUT must be sidecar or split" ;;
    esac
else
    PIN_PROXY=()
    PIN_UPSTREAM=()
    PIN_APP=()
    PINNING="1 CPU: nothing pinned"
fi
TICK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- work dir + cleanup
W=$(mktemp -d "${TMPDIR:-/tmp}/tokenwarden-bench.XXXXXX")
chmod 755 "$W" # nginx workers may run as another user when started by root
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP_WORKDIR:-0} == 1 ]]; then
        echo "work dir kept: $W" >&2
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Sets variable $1 to a port nothing listens on and no other variable got (checked by
# connecting; only 127.0.0.1 is ever used). Not a subshell, so the picks stay distinct.
# Picked below the ephemeral range, where busy loopback clients cannot hold it.
read -r EPHEMERAL_LOW _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || EPHEMERAL_LOW=32768
((EPHEMERAL_LOW > 12000)) || die "the ephemeral port range starts at $EPHEMERAL_LOW; need free ports below it"
USED_PORTS=" "
free_port() {
    local p
    while :; do
        p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS+="$p "
            printf -v "$1" '%s' "$p"
            return
        fi
    done
}

# Waits until `curl URL` answers 200 with a body matching REGEX (10 s).
wait_for() {
    local url=$1 regex=$2 i
    for i in $(seq 1 200); do
        if curl -fsS --max-time 1 "$url" 2>/dev/null | grep -Eq -- "$regex"; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# The process and its descendants (nginx master + worker).
proc_tree() {
    local pid=$1 child
    echo "$pid"
    for child in $(pgrep -P "$pid" 2>/dev/null || true); do
        proc_tree "$child"
    done
}

# user+sys clock ticks of a process tree (all threads included).
cpu_ticks() {
    local total=0 pid f
    for pid in $(proc_tree "$1"); do
        [[ -r /proc/$pid/stat ]] || continue
        # fields after the ")" of comm: utime is 14th and stime 15th overall
        f=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
        total=$((total + f))
    done
    echo "$total"
}

# Peak resident set (VmHWM, kB) summed over a process tree.
peak_rss_kb() {
    local total=0 pid v
    for pid in $(proc_tree "$1"); do
        v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# ---------------------------------------------------------------- material
TOKEN=$(openssl rand -hex $((TOKEN_LEN / 2)))
STATIC_AUTH="Bearer $TOKEN"
free_port UP      # upstream, plain HTTP (+ the long-lived token endpoint)
free_port UPTLS   # upstream over TLS
free_port UPSF    # single-flight upstream + short-lived token endpoint
free_port TW      # tokenwarden's proxy listener
free_port TWADMIN # … and its admin listener
free_port NGX     # nginx as the proxy
free_port HAP     # HAProxy as the proxy
free_port REDIS   # redis-server for tokenwarden-redis
free_port NGXS    # nginx's ssl listener (intercept case)
free_port RELAY   # the socat relay in front of the proxy (intercept case)
free_port NGXH2   # nginx's ssl listener with HTTP/2 (intercept-h2 case)
free_port NGXH2C  # nginx's plain listener with HTTP/2, h2c (h2c case)
REDIS_STORE_KEY=$(openssl rand -base64 32)

SMALL_JSON='{"id":12345,"name":"Ada Lovelace","email":"ada@example.com","active":true}'
mkdir -p "$W/www" "$W/tls" "$W/up" "$W/ngx" "$W/tw" "$W/twr" "$W/sf"
head -c 1048576 /dev/urandom >"$W/www/big.bin"
printf '%s' "$SMALL_JSON" >"$W/www/small.json"
chmod -R a+rX "$W/www"

# A CA made now, and a leaf for 127.0.0.1/localhost signed by it (trusted via tls.ca_file).
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=tokenwarden bench CA" \
    -keyout "$W/tls/ca.key" -out "$W/tls/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    >/dev/null 2>&1 || die "openssl could not make the CA"
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$W/tls/leaf.key" -out "$W/tls/leaf.csr" >/dev/null 2>&1
printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
    "extendedKeyUsage=serverAuth" >"$W/tls/ext.cnf"
openssl x509 -req -in "$W/tls/leaf.csr" -CA "$W/tls/ca.pem" -CAkey "$W/tls/ca.key" \
    -CAcreateserial -days 2 -extfile "$W/tls/ext.cnf" -out "$W/tls/leaf.pem" >/dev/null 2>&1 \
    || die "openssl could not sign the leaf certificate"
chmod -R a+rX "$W/tls"
# The interception CA (tokenwarden's own `ca init`; key mode 600, as it requires).
"$BIN" ca init --dir "$W/twca" >/dev/null || die "tokenwarden ca init failed"

SF_RATE=$((SF_REQUESTS * 1000 / (750 * SF_EXPIRES_IN)))

# ---------------------------------------------------------------- upstream nginx
cat >"$W/up/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $W/up/nginx.pid;
error_log $W/up/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    sendfile on;
    client_body_temp_path $W/up/body;
    proxy_temp_path $W/up/proxy;
    fastcgi_temp_path $W/up/fastcgi;
    uwsgi_temp_path $W/up/uwsgi;
    scgi_temp_path $W/up/scgi;
    log_format ts '\$msec \$status \$request_uri \$http_authorization';
    limit_req_zone \$server_port zone=sf:1m rate=${SF_RATE}r/s;
    server {
        listen 127.0.0.1:$UP;
        listen 127.0.0.1:$UPTLS ssl;
        ssl_certificate $W/tls/leaf.pem;
        ssl_certificate_key $W/tls/leaf.key;
        default_type application/json;
        location / { return 200 '$SMALL_JSON'; }
        location = /echo-auth { return 200 "\$http_authorization"; }
        location = /_status { stub_status; }
        location = /big.bin { root $W/www; default_type application/octet-stream; }
        location = /oauth/token {
            access_log $W/up/token.log ts;
            return 200 '{"access_token":"$TOKEN","token_type":"Bearer","expires_in":86400}';
        }
    }
    server {
        listen 127.0.0.1:$UPSF;
        default_type application/json;
        location / {
            access_log $W/sf/requests.log ts;
            limit_req zone=sf burst=100000;
            # a file, not a return: limit_req runs after the rewrite phase
            root $W/www;
            rewrite ^ /small.json break;
        }
        location = /oauth/token {
            access_log $W/sf/token.log ts;
            return 200 '{"access_token":"sf-\$request_id","token_type":"Bearer","expires_in":$SF_EXPIRES_IN}';
        }
    }
}
EOF
"${PIN_UPSTREAM[@]}" nginx -p "$W/up" -e "$W/up/error.log" -c "$W/up/nginx.conf" &
PIDS+=($!)
wait_for "http://127.0.0.1:$UP/" '"id"' || die "the upstream nginx did not start ($(tail -3 "$W/up/error.log"))"

# ---------------------------------------------------------------- Redis (tokenwarden-redis)
# Answers +PONG when the redis-server on $REDIS is up.
redis_ping() {
    (exec 3<>"/dev/tcp/127.0.0.1/$REDIS" && printf 'PING\r\n' >&3 && head -c 5 <&3) 2>/dev/null
}
if ((WITH_REDIS)); then
    "${PIN_UPSTREAM[@]}" redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no \
        --protected-mode yes >"$W/twr/redis.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 200); do
        [[ $(redis_ping) == "+PONG" ]] && break
        sleep 0.05
    done
    [[ $(redis_ping) == "+PONG" ]] || die "redis-server did not start ($(tail -3 "$W/twr/redis.log"))"
fi

# ---------------------------------------------------------------- proxies' configs
connection_yaml() { # key protocol host:port
    cat <<EOF
  - key: $1
    secrets: { client_id: bench-client, client_secret: bench-secret }
    client_config:
      protocol: $2
      host: "$3"
      authentication:
        strategy: oauth2_client_credentials
        configuration:
          token_request:
            method: POST
            path: /oauth/token
            client_config: { protocol: http, host: "$4" }
            headers: [{ name: Content-Type, value: application/x-www-form-urlencoded }]
            body: '{"grant_type": "client_credentials", "client_id": "<client_id>", "client_secret": "<client_secret>"}'
EOF
}
{
    cat <<EOF
proxy: { listen: "127.0.0.1:$TW", worker_threads: 1, intercept: { ca_cert: "$W/twca/ca.pem", ca_key: "$W/twca/ca.key" } }
admin: { listen: "127.0.0.1:$TWADMIN" }
store: { path: "$W/tw/tokens.db" }
tls: { ca_file: "$W/tls/ca.pem" }
log: { level: warn }
connections:
EOF
    connection_yaml api http "127.0.0.1:$UP" "127.0.0.1:$UP"
    connection_yaml api-tls https "127.0.0.1:$UPTLS" "127.0.0.1:$UP"
} >"$W/tw/config.yaml"
# The same with the Redis store (default lease and poll interval).
sed "s|^store: .*|store: { backend: redis, url: \"redis://127.0.0.1:$REDIS/0\", key: \"$REDIS_STORE_KEY\" }|" \
    "$W/tw/config.yaml" >"$W/twr/config.yaml"
# For the HTTP/2 cases, the same with no practical limit on requests per connection, as
# nginx's `keepalive_requests 10000000`: at the default 10,000, each h2 connection ends
# (GOAWAY) after 10,000 streams, and h2load, unlike wrk after `connection: close`, does not
# reconnect; its clients would sit idle for the rest of the row.
for d in tw twr; do
    sed 's|^proxy: { listen: \("[^"]*"\), |proxy: { listen: \1, max_requests_per_connection: 10000000, |' \
        "$W/$d/config.yaml" >"$W/$d/config-h2.yaml"
    grep -q 'max_requests_per_connection: 10000000' "$W/$d/config-h2.yaml" || die "could not write $W/$d/config-h2.yaml"
done
{
    cat <<EOF
proxy: { listen: "127.0.0.1:$TW", worker_threads: 1 }
admin: { listen: "127.0.0.1:$TWADMIN" }
store: { path: "$W/sf/tokens.db" }
log: { level: warn }
connections:
EOF
    connection_yaml api http "127.0.0.1:$UPSF" "127.0.0.1:$UPSF"
} >"$W/sf/config.yaml"

# nginx's HTTP/2 listeners, for the HTTP/2 cases only (an nginx without the module refuses
# them): `http2 on;` since nginx 1.25.1, the `http2` listen parameter before.
NGX_H2_SERVERS=
if ((WITH_H2)); then
    NGINX_VERSION=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
    if printf '%s\n' 1.25.1 "$NGINX_VERSION" | sort -V -C; then
        H2_LISTEN="" H2_ON="http2 on;"
    else
        H2_LISTEN=" http2" H2_ON=""
    fi
    NGX_H2_SERVERS=$(
        cat <<EOF
    # intercept-h2 case: the same with HTTP/2 from the app (ALPN h2)
    server {
        listen 127.0.0.1:$NGXH2 ssl$H2_LISTEN;
        $H2_ON
        ssl_certificate $W/tls/leaf.pem;
        ssl_certificate_key $W/tls/leaf.key;
        location / {
            proxy_pass https://up_tls;
            proxy_ssl_trusted_certificate $W/tls/ca.pem;
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
        }
    }
    # h2c case: HTTP/2 with prior knowledge on a plain listener, to the plain upstream
    server {
        listen 127.0.0.1:$NGXH2C$H2_LISTEN;
        $H2_ON
        location /api/ { proxy_pass http://up/; }
    }
EOF
    )
fi
cat >"$W/ngx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $W/ngx/nginx.pid;
error_log $W/ngx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path $W/ngx/body;
    proxy_temp_path $W/ngx/proxy;
    fastcgi_temp_path $W/ngx/fastcgi;
    uwsgi_temp_path $W/ngx/uwsgi;
    scgi_temp_path $W/ngx/scgi;
    upstream up { server 127.0.0.1:$UP; keepalive 512; keepalive_requests 10000000; }
    upstream up_tls { server 127.0.0.1:$UPTLS; keepalive 512; keepalive_requests 10000000; }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Authorization "$STATIC_AUTH";
    # stream large bodies through memory buffers, never to temp files
    proxy_max_temp_file_size 0;
    server {
        listen 127.0.0.1:$NGX;
        location /api/ { proxy_pass http://up/; }
        location /api-tls/ {
            proxy_pass https://up_tls/;
            proxy_ssl_trusted_certificate $W/tls/ca.pem;
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
        }
    }
    # intercept case: terminate the client's TLS, originate TLS upstream
    server {
        listen 127.0.0.1:$NGXS ssl;
        ssl_certificate $W/tls/leaf.pem;
        ssl_certificate_key $W/tls/leaf.key;
        location / {
            proxy_pass https://up_tls;
            proxy_ssl_trusted_certificate $W/tls/ca.pem;
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
        }
    }
$NGX_H2_SERVERS
}
EOF

cat >"$W/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8000
    log stderr format raw local0 emerg
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:$HAP
    use_backend be_tls if { path_beg /api-tls/ }
    default_backend be
backend be
    http-request replace-path ^/api(/.*)\$ \1
    http-request set-header Authorization "$STATIC_AUTH"
    server up 127.0.0.1:$UP
backend be_tls
    http-request replace-path ^/api-tls(/.*)\$ \1
    http-request set-header Authorization "$STATIC_AUTH"
    server up_tls 127.0.0.1:$UPTLS ssl verify required ca-file $W/tls/ca.pem sni str(localhost) verifyhost localhost
EOF

PROXY_PID=
start_proxy() { # name [h2: tokenwarden's config for the HTTP/2 cases]
    local variant=config
    [[ ${2:-} == h2 ]] && variant=config-h2
    case $1 in
    tokenwarden)
        "${PIN_PROXY[@]}" "$BIN" run --config "$W/tw/$variant.yaml" 2>>"$W/tw/stderr.log" &
        PROXY_PID=$!
        PORT=$TW
        ;;
    tokenwarden-redis)
        "${PIN_PROXY[@]}" "$BIN" run --config "$W/twr/$variant.yaml" 2>>"$W/twr/stderr.log" &
        PROXY_PID=$!
        PORT=$TW
        ;;
    nginx)
        "${PIN_PROXY[@]}" nginx -p "$W/ngx" -e "$W/ngx/error.log" -c "$W/ngx/nginx.conf" &
        PROXY_PID=$!
        PORT=$NGX
        ;;
    haproxy)
        "${PIN_PROXY[@]}" haproxy -db -f "$W/haproxy.cfg" 2>>"$W/haproxy.log" &
        PROXY_PID=$!
        PORT=$HAP
        ;;
    esac
    PIDS+=("$PROXY_PID")
    # the injected token must reach the upstream, over plain HTTP and over TLS
    wait_for "http://127.0.0.1:$PORT/api/echo-auth" "^Bearer $TOKEN\$" \
        || die "$1 did not start or does not inject the token (see $W)"
    wait_for "http://127.0.0.1:$PORT/api-tls/echo-auth" "^Bearer $TOKEN\$" \
        || die "$1 does not inject the token over the TLS upstream"
}

stop_proxy() {
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
    PROXY_PID=
}

# Connections the upstream has accepted so far (each call adds its own one).
upstream_accepts() {
    curl -fsS "http://127.0.0.1:$UP/_status" | awk 'NR == 3 {print $1}'
}

# wrk output → "rps p50_ms p99_ms requests errors"
parse_wrk() {
    awk '
        function ms(v) {
            if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
            if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
            if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
            return v
        }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        / requests in / { n = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx or 3xx responses:/ { err += $NF }
        /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
        END { printf "%.0f %.2f %.2f %d %d\n", rps, p50, p99, n, err }
    ' "$1"
}

ROWS=()
run_case() { # proxy case conns path [url]
    local proxy=$1 case=$2 conns=$3 path=$4 url t0 t1 out rps p50 p99 n err cpu_us rss
    url=${5:-"http://127.0.0.1:$PORT$path"}
    "${PIN_APP[@]}" wrk -t1 -c"$conns" -d"${WARMUP}s" "$url" >/dev/null 2>&1 || true
    a0=$(upstream_accepts)
    t0=$(cpu_ticks "$PROXY_PID")
    out="$W/wrk-$proxy-$case-$conns.txt"
    "${PIN_APP[@]}" wrk -t1 -c"$conns" -d"${DURATION}s" --latency "$url" >"$out" 2>&1 \
        || die "wrk failed for $proxy $case: $(tail -3 "$out")"
    t1=$(cpu_ticks "$PROXY_PID")
    upconns=$(($(upstream_accepts) - a0 - 1))
    read -r rps p50 p99 n err < <(parse_wrk "$out")
    ((n > 0)) || die "wrk made no requests through $proxy ($case): $(cat "$out")"
    cpu_us=$(awk -v d=$((t1 - t0)) -v t="$TICK" -v n="$n" 'BEGIN { printf "%.2f", d / t * 1e6 / n }')
    cpu_pct=$(awk -v d=$((t1 - t0)) -v t="$TICK" -v s="$DURATION" 'BEGIN { printf "%.0f", d / t / s * 100 }')
    rss=$(awk -v k="$(peak_rss_kb "$PROXY_PID")" 'BEGIN { printf "%.1f", k / 1024 }')
    ROWS+=("$case $conns $proxy $rps $p50 $p99 $cpu_us $cpu_pct $rss $err $upconns")
    printf '  %-6s c=%-4s %-17s %8s req/s  p50 %6s ms  p99 %6s ms  %6s µs CPU/req  %5s MB  errors %s  new upstream conns %s\n' \
        "$case" "$conns" "$proxy" "$rps" "$p50" "$p99" "$cpu_us" "$rss" "$err" "$upconns" >&2
}

# The intercept cases: a socat relay on $RELAY (OTHER_CORE) that the load's TLS goes
# through — a CONNECT tunnel through tokenwarden to the TLS upstream, or straight to nginx's
# ssl listener (HTTP/1.1 only, or with HTTP/2: `h2` as the second argument); checks that
# the token arrives, the minted certificate verifies, and (h2) that ALPN chose HTTP/2.
RELAY_PID=
start_relay() { # proxy [h2]
    local target version=1.1 http=(--http1.1)
    if [[ ${2:-} == h2 ]]; then
        version=2 http=(--http2)
    fi
    case $1 in
    tokenwarden*) target="PROXY:127.0.0.1:127.0.0.1:$UPTLS,proxyport=$TW" ;;
    nginx) target="TCP:127.0.0.1:$([[ $version == 2 ]] && echo "$NGXH2" || echo "$NGXS")" ;;
    *) die "the intercept cases compare tokenwarden and nginx only (not $1)" ;;
    esac
    "${PIN_UPSTREAM[@]}" socat "TCP-LISTEN:$RELAY,bind=127.0.0.1,fork,reuseaddr" "$target" 2>>"$W/socat.log" &
    RELAY_PID=$!
    PIDS+=("$RELAY_PID")
    # prints the body, then the HTTP version on a line of its own
    local probe
    if [[ $1 == tokenwarden* ]]; then
        probe=(curl -sS --max-time 2 "${http[@]}" -w '\n%{http_version}' --cacert "$W/twca/ca.pem"
            -x "http://127.0.0.1:$TW" "https://127.0.0.1:$UPTLS/echo-auth")
    else
        probe=(curl -sS --max-time 2 "${http[@]}" -w '\n%{http_version}' --cacert "$W/tls/ca.pem"
            --resolve "localhost:$RELAY:127.0.0.1" "https://localhost:$RELAY/echo-auth")
    fi
    local got
    for _ in $(seq 1 100); do
        got=$("${probe[@]}" 2>&1 || true)
        [[ $got == "Bearer $TOKEN"$'\n'"$version" ]] && return 0
        sleep 0.05
    done
    die "$1 does not answer https:// with the token over HTTP/$version through the relay (got: ${got:0:200}; see $W)"
}
# h2load output (and its --log-file: start µs, status, µs to the end of the response) →
# "rps p50_ms p99_ms requests errors". Requests: those done; errors: those that failed
# (a stream reset or refused, a timeout) or were answered 3xx–5xx.
parse_h2load() { # output log
    local p50 p99
    read -r p50 p99 < <(awk '{print $3}' "$2" | sort -n | awk '
        { v[NR] = $1 }
        END { if (NR) printf "%.2f %.2f\n", v[int((NR - 1) * 0.50) + 1] / 1000, v[int((NR - 1) * 0.99) + 1] / 1000; else print "0 0" }')
    awk -v p50="$p50" -v p99="$p99" '
        /^finished in / { rps = $4 }
        /^requests: / { done = $6; failed = $10 }
        /^status codes: / { other = $5 + $7 + $9 }
        END { printf "%.0f %s %s %d %d\n", rps, p50, p99, done, failed + other }
    ' "$1"
}

# Like run_case, with h2load (H2_CLIENTS connections × H2_STREAMS streams) as the app.
run_case_h2() { # proxy case url
    local proxy=$1 case=$2 url=$3 t0 t1 out rps p50 p99 n err cpu_us cpu_pct rss a0 upconns
    # h2load 1.52 never returns when its -D ends before every client has connected (seen
    # with -D 1 through the relay): the warm-up uses its own --warm-up-time, and each run
    # is bounded by `timeout`.
    local load=(timeout $((WARMUP + DURATION + 30)) h2load -t1 -c"$H2_CLIENTS" -m"$H2_STREAMS")
    "${PIN_APP[@]}" "${load[@]}" --warm-up-time="$WARMUP" -D 1 "$url" >"$W/h2load-warmup.txt" 2>&1 \
        || die "h2load (warm-up) failed or hung for $proxy $case: $(tail -5 "$W/h2load-warmup.txt")"
    a0=$(upstream_accepts)
    t0=$(cpu_ticks "$PROXY_PID")
    out="$W/h2load-$proxy-$case.txt"
    "${PIN_APP[@]}" "${load[@]}" -D "$DURATION" --log-file="$out.log" "$url" >"$out" 2>&1 \
        || die "h2load failed or hung for $proxy $case: $(tail -5 "$out")"
    t1=$(cpu_ticks "$PROXY_PID")
    upconns=$(($(upstream_accepts) - a0 - 1))
    grep -q '^Application protocol: h2' "$out" || die "h2load did not speak HTTP/2 to $proxy ($case): $(grep -i protocol "$out")"
    read -r rps p50 p99 n err < <(parse_h2load "$out" "$out.log")
    ((n > 0)) || die "h2load made no requests through $proxy ($case): $(cat "$out")"
    cpu_us=$(awk -v d=$((t1 - t0)) -v t="$TICK" -v n="$n" 'BEGIN { printf "%.2f", d / t * 1e6 / n }')
    cpu_pct=$(awk -v d=$((t1 - t0)) -v t="$TICK" -v s="$DURATION" 'BEGIN { printf "%.0f", d / t / s * 100 }')
    rss=$(awk -v k="$(peak_rss_kb "$PROXY_PID")" 'BEGIN { printf "%.1f", k / 1024 }')
    local conns="${H2_CLIENTS}x$H2_STREAMS"
    ROWS+=("$case $conns $proxy $rps $p50 $p99 $cpu_us $cpu_pct $rss $err $upconns")
    printf '  %-8s c=%-4s %-17s %8s req/s  p50 %6s ms  p99 %6s ms  %6s µs CPU/req  %5s MB  errors %s  new upstream conns %s  (%s)\n' \
        "$case" "$conns" "$proxy" "$rps" "$p50" "$p99" "$cpu_us" "$rss" "$err" "$upconns" \
        "$(awk '/^TLS Protocol:/ {printf "%s ", $3} /^Cipher:/ {printf "%s, ", $2} /^Application protocol:/ {printf "%s", $3}' "$out")" >&2
}

# The h2c case: checks that the proxy's plain listener answers h2c with prior knowledge,
# with the token.
check_h2c() { # proxy port
    local got
    for _ in $(seq 1 100); do
        got=$(curl -sS --max-time 2 --http2-prior-knowledge -w '\n%{http_version}' "http://127.0.0.1:$2/api/echo-auth" 2>&1 || true)
        [[ $got == "Bearer $TOKEN"$'\n'2 ]] && return 0
        sleep 0.05
    done
    die "$1 does not answer h2c (prior knowledge) with the token on 127.0.0.1:$2 (got: ${got:0:200}; see $W)"
}

stop_relay() {
    kill "$RELAY_PID" 2>/dev/null || true
    wait "$RELAY_PID" 2>/dev/null || true
    RELAY_PID=
}

# ---------------------------------------------------------------- the runs
echo "tokenwarden bench: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $PINNING" >&2
echo "  ${DURATION}s per row after ${WARMUP}s warm-up; work dir $W" >&2
# Proxies alternate within each case, so a change in the machine's background load
# during the run biases the compared rows as little as possible.
for case in $CASES; do
    for proxy in $PROXIES; do
        case $case in
        intercept-h2 | h2c) start_proxy "$proxy" h2 ;;
        *) start_proxy "$proxy" ;;
        esac
        case $case in
        small) for c in $CONNS; do run_case "$proxy" small "$c" "/api/v1/contacts/12345?fields=name,email"; done ;;
        tls) run_case "$proxy" tls "${CONNS%% *}" "/api-tls/v1/contacts/12345?fields=name,email" ;;
        big) run_case "$proxy" 1MB "$BIG_CONNS" "/api/big.bin" ;;
        intercept)
            start_relay "$proxy"
            run_case "$proxy" icept "${CONNS%% *}" "" "https://127.0.0.1:$RELAY/v1/contacts/12345?fields=name,email"
            stop_relay
            ;;
        intercept-h2)
            start_relay "$proxy" h2
            run_case_h2 "$proxy" icept-h2 "https://127.0.0.1:$RELAY/v1/contacts/12345?fields=name,email"
            stop_relay
            ;;
        h2c)
            case $proxy in
            tokenwarden*) h2c_port=$TW ;;
            nginx) h2c_port=$NGXH2C ;;
            *) die "the h2c case compares tokenwarden and nginx only (not $proxy)" ;;
            esac
            check_h2c "$proxy" "$h2c_port"
            run_case_h2 "$proxy" h2c "http://127.0.0.1:$h2c_port/api/v1/contacts/12345?fields=name,email"
            ;;
        *) die "unknown case $case (small, tls, big, intercept, intercept-h2, h2c)" ;;
        esac
        stop_proxy
    done
done

# ---------------------------------------------------------------- single flight
# A token lives SF_EXPIRES_IN (L) s; tokenwarden refreshes it ahead of expiry, at 45–50 %
# of its lifetime, and stops injecting it at 90 %. After a token fetch is seen in the token
# endpoint's log, SF_REQUESTS requests go through tokenwarden from 5 % to 80 % of L: the
# upstream paces them with nginx `limit_req` (SF_RATE = SF_REQUESTS / 0.75 L per second;
# excess requests wait, none is refused), so the window holds the next refresh and ends
# before the one after. Expected: every request answered 200 with a token, the handover
# from one token to the next inside the window, and exactly one token-endpoint hit in it.
SF_LINE="single-flight: not run"
if [[ " $PROXIES " == *" tokenwarden "* ]]; then
    "${PIN_PROXY[@]}" "$BIN" run --config "$W/sf/config.yaml" 2>>"$W/sf/stderr.log" &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_for "http://127.0.0.1:$TW/api/x" '"id"' || die "tokenwarden (single-flight) did not start"
    sf_url="http://127.0.0.1:$TW/api/v1/items"
    cat >"$W/sf/count.lua" <<EOF
local limit, n = $SF_REQUESTS, 0
function response(status, headers, body)
    n = n + 1
    if n >= limit then wrk.thread:stop() end
end
EOF
    # wait for a fresh token fetch, then start at 5 % of its lifetime
    fetched=$(wc -l <"$W/sf/token.log")
    for _ in $(seq 1 $((SF_EXPIRES_IN * 400))); do
        (($(wc -l <"$W/sf/token.log") > fetched)) && break
        sleep 0.002
    done
    sleep "$(awk -v L="$SF_EXPIRES_IN" 'BEGIN { printf "%.3f", 0.05 * L }')"
    : >"$W/sf/requests.log"
    "${PIN_APP[@]}" wrk -t1 -c64 -d$((SF_EXPIRES_IN + 5))s -s "$W/sf/count.lua" "$sf_url" >"$W/sf/wrk.txt" 2>&1 \
        || die "wrk failed (single flight)"
    stop_proxy
    read -r _ _ _ sf_n sf_err < <(parse_wrk "$W/sf/wrk.txt")
    read -r first last upstream_n non200 tokens < <(awk '
        { if (!f) f = $1; l = $1; n++; if ($2 != 200) bad++; seen[$5] = 1 }
        END { t = 0; for (k in seen) t++; printf "%s %s %d %d %d\n", f, l, n, bad, t }' "$W/sf/requests.log")
    in_window=$(awk -v a="$first" -v b="$last" '$1 >= a && $1 <= b' "$W/sf/token.log" | wc -l)
    span=$(awk -v a="$first" -v b="$last" 'BEGIN { printf "%.2f", b - a }')
    verdict=FAIL
    if ((in_window == 1 && sf_err == 0 && non200 == 0 && tokens == 2 && sf_n >= SF_REQUESTS)); then
        verdict=ok
    fi
    SF_LINE="single-flight: $sf_n requests (64 connections, paced to $SF_RATE/s; $upstream_n reached the upstream, $non200 non-200, $sf_err errors) over ${span}s spanning the refresh of a ${SF_EXPIRES_IN}s token → $in_window token request(s) in that window, $tokens distinct tokens injected [$verdict]"
    if ((tokens < 2)); then
        SF_LINE+=" (the window missed the refresh: the machine was too busy to pace; rerun)"
    fi
fi

# ---------------------------------------------------------------- the table
{
    echo
    echo "## tokenwarden vs nginx vs HAProxy — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "machine: $NCPU × $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
    echo "versions: tokenwarden $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo '+dirty'), $(nginx -v 2>&1 | sed 's/.*: //'), $(command -v haproxy >/dev/null && haproxy -v | awk 'NR==1 {print "haproxy " $3 ", "}')wrk $(wrk -v 2>&1 | awk 'NR==1 {print $2}')$( ((WITH_H2)) && h2load --version | awk '{print ", h2load " $2}')$( ((WITH_REDIS)) && redis-server --version | awk '{print ", redis " substr($3, 3)}')"
    echo "method: $PINNING; 1 worker/thread per proxy; wrk -t1$( ((WITH_H2)) && echo " (HTTP/2 rows: h2load -t1 -c$H2_CLIENTS -m$H2_STREAMS, conns = connections x streams)"), ${DURATION}s per row; CPU = user+sys of the proxy's processes over the run / requests; RSS = peak VmHWM (summed over processes); up conns = connections the upstream accepted during the run (pool churn); token ${TOKEN_LEN} bytes"
    echo
    printf '| %-8s | %5s | %-17s | %9s | %7s | %7s | %11s | %5s | %8s | %6s | %8s |\n' \
        case conns proxy "req/s" "p50 ms" "p99 ms" "CPU µs/req" "CPU%" "RSS MB" errors "up conns"
    echo '|:---------|------:|:------------------|----------:|--------:|--------:|------------:|------:|---------:|-------:|---------:|'
    for row in "${ROWS[@]}"; do
        # shellcheck disable=SC2086
        set -- $row
        printf '| %-8s | %5s | %-17s | %9s | %7s | %7s | %11s | %5s | %8s | %6s | %8s |\n' "$@"
    done
    echo
    # tokenwarden / nginx per case: CPU per request, throughput, p99
    for row in "${ROWS[@]}"; do
        set -- $row
        [[ $3 == tokenwarden ]] || continue
        for other in "${ROWS[@]}"; do
            set -- $row $other
            [[ $1 == "${12}" && $2 == "${13}" && ${14} == nginx ]] || continue
            awk -v c="$1" -v k="$2" -v cpu="$7" -v ncpu="${18}" -v rps="$4" -v nrps="${15}" -v p99="$6" -v np99="${17}" \
                'BEGIN { printf "tokenwarden/nginx %-8s c=%-4s CPU/req %.2f×  req/s %.2f×  p99 %.2f×\n", c, k, cpu / ncpu, rps / nrps, (np99 > 0 ? p99 / np99 : 0) }'
        done
    done
    # tokenwarden with the Redis store / with the file store, per case (target: CPU/req ≤ 1.05×)
    for row in "${ROWS[@]}"; do
        set -- $row
        [[ $3 == tokenwarden-redis ]] || continue
        for other in "${ROWS[@]}"; do
            set -- $row $other
            [[ $1 == "${12}" && $2 == "${13}" && ${14} == tokenwarden ]] || continue
            awk -v c="$1" -v k="$2" -v cpu="$7" -v fcpu="${18}" -v rps="$4" -v frps="${15}" -v p99="$6" -v fp99="${17}" \
                'BEGIN { r = cpu / fcpu; printf "tokenwarden-redis/tokenwarden %-5s c=%-4s CPU/req %.3f× [%s]  req/s %.2f×  p99 %.2f×\n", c, k, r, (r <= 1.05 ? "ok, within 5 %" : "over 5 %"), rps / frps, (fp99 > 0 ? p99 / fp99 : 0) }'
        done
    done
    echo "$SF_LINE"
} | tee ${RESULTS:+"$RESULTS"}
