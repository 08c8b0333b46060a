#!/usr/bin/env bash
# Installs what the tests need and is missing, then checks it is there (fails loudly if not):
# Debian packages (curl for the forward-proxy tests, redis-server and redis-cli for the shared
# store and the Redis topologies, chromium for the status page's browser test, nginx as an
# HTTP/2 upstream), Python
# `requests` and `httpx`, the pinned Python packages of tests/py/requirements.txt (Authlib's
# JWT-bearer server, google-auth, grpcio and h2 for the HTTP/2 tests), and the npm packages of
# the end-to-end authorization server (tests/oidc) and of the Node client of the interception
# test (tests/node: undici).
# Idempotent: run it before `cargo test` on a fresh machine (README) and from CI (.ci/run).
# Needs root for apt-get when a package is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "tests/deps.sh: '$1' is required but missing" >&2; exit 1; }; }

packages=()
command -v curl >/dev/null 2>&1 || packages+=(curl)
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
# redis-cli (Debian's redis-tools, a dependency of redis-server): the TLS, sentinel and
# cluster tests run it, and it creates their clusters.
command -v redis-cli >/dev/null 2>&1 || packages+=(redis-tools)
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
# nginx: the HTTP/2 upstream that ends connections with a GOAWAY (tests/it/http2.rs).
command -v nginx >/dev/null 2>&1 || packages+=(nginx-light)
if [ ${#packages[@]} -gt 0 ]; then
  echo "tests/deps.sh: installing ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${packages[@]}"
fi
for tool in curl redis-server redis-cli chromium nginx cargo node npm python3; do need "$tool"; done

python3 -c 'import requests' 2>/dev/null || python3 -m pip install --quiet requests
python3 -c 'import httpx' 2>/dev/null || python3 -m pip install --quiet httpx
python3 -c 'import requests, httpx'
# Pinned: pip leaves a satisfied requirement alone, without asking the index.
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/py/requirements.txt
python3 -c 'import authlib, joserfc, flask, werkzeug, google.auth, requests, cryptography, grpc, h2' \
  || { echo "tests/deps.sh: a package of tests/py/requirements.txt does not import" >&2; exit 1; }

npm ci --prefix tests/oidc --no-audit --no-fund --silent
npm ci --prefix tests/node --no-audit --no-fund --silent
