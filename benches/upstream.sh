# Sourced by benches/ab.sh, benches/ab_subject.sh, benches/instructions.sh and
# benches/instructions_subject.sh: the upstream nginx they load tokenwarden in front of,
# the sidecar config they run it with, and a process's CPU time. Expects $W (a work
# directory) and the array PIDS (what the caller's cleanup kills).

# Clock ticks per second, and the user+sys ticks of process $1 and its threads.
TICK=$(getconf CLK_TCK)
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# A free loopback port.
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Waits until `url` answers with a body containing `pattern` (TRIES tries, 0.1 s apart).
wait_for() { # url pattern
    for _ in $(seq "${TRIES:-100}"); do
        curl -fsS --max-time 2 "$1" 2>/dev/null | grep -q "$2" && return 0
        sleep 0.1
    done
    echo "$(basename "$0"): $1 never answered $2 (logs in $W)" >&2
    exit 1
}

# Starts one nginx worker on a free port (prefixed by the command in "$@", e.g. a
# taskset) answering a small JSON API and a token endpoint; sets UP to its port.
start_upstream() { # [command prefix ...]
    UP=$(port)
    mkdir -p "$W/up"
    cat >"$W/up/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $W/up/nginx.pid;
error_log $W/up/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path $W/up/body;
    proxy_temp_path $W/up/proxy;
    fastcgi_temp_path $W/up/fastcgi;
    uwsgi_temp_path $W/up/uwsgi;
    scgi_temp_path $W/up/scgi;
    server {
        listen 127.0.0.1:$UP;
        default_type application/json;
        location / { return 200 '{"id":12345,"name":"Ada Lovelace","active":true}'; }
        location = /oauth/token { return 200 '{"access_token":"ab-token","token_type":"Bearer","expires_in":86400}'; }
    }
}
EOF
    "$@" nginx -p "$W/up" -e "$W/up/error.log" -c "$W/up/nginx.conf" &
    PIDS+=($!)
    wait_for "http://127.0.0.1:$UP/" '"id"'
}

# Writes to `file` a sidecar config: one worker on `listen`, the admin listener on
# `admin` (no config file watch: it re-reads the whole file every 5 s, which with 10,000
# connections is more work than the requests), the token store at `store`, connection `api`
# (client credentials) to the upstream,
# and EXTRA_CONNECTIONS more (default 0): static-bearer connections `extra-1`… to the same
# upstream host (reverse_only: reverse mode tells them apart by key; issue 23's "10,000
# connections")
write_config() { # file listen admin store; API_EXTRA: more lines (4-space indent, each
                 # ending in a newline) of connection `api`, e.g. a placeholder
    cat >"$1" <<EOF
proxy: { listen: "127.0.0.1:$2", worker_threads: 1 }
admin: { listen: "127.0.0.1:$3", watch_config: 0 }
store: { path: "$4" }
log: { level: warn }
connections:
  - key: api
    secrets: { client_id: ab, client_secret: ab }
${API_EXTRA:-}    client_config:
      protocol: http
      host: "127.0.0.1:$UP"
      authentication:
        strategy: oauth2_client_credentials
        configuration:
          token_request: { method: POST, path: /oauth/token }
EOF
    local i
    for ((i = 1; i <= ${EXTRA_CONNECTIONS:-0}; i++)); do
        printf '  - key: extra-%d\n    reverse_only: true\n    secrets: { token: t%d }\n    client_config:\n      protocol: http\n      host: "127.0.0.1:%s"\n      authentication:\n        strategy: bearer\n        configuration: { token: "<token>" }\n' "$i" "$i" "$UP"
    done >>"$1"
}

# Prints connection `users` (authorization code, grants: per_user) on the same upstream, to
# append to a write_config file (reverse mode tells it from `api` by key): ab_subject.sh and
# instructions_subject.sh.
users_connection() {
    cat <<EOF
  - key: users
    reverse_only: true
    grants: per_user
    secrets: { client_id: ab, client_secret: ab }
    client_config:
      protocol: http
      host: "127.0.0.1:$UP"
      authentication:
        strategy: oauth2_authorization_code
        configuration:
          authorization_request:
            method: GET
            path: /authorize
            query_params:
              - { name: client_id, value: <client_id> }
              - { name: redirect_uri, value: <redirect_uri> }
              - { name: state, value: <state> }
          token_request:
            method: POST
            path: /oauth/token
            body: '{"grant_type": "authorization_code", "code": "<code>"}'
EOF
}
