#!/usr/bin/env bash
# Instructions the server executes per REST `me`, counted by callgrind:
# the same count for the same binary whatever else the machine is doing,
# so two builds can be compared where the load tests' run-to-run spread
# (±0.1 of a ratio on a shared 2-core machine) hides a few percent.
#
#   bench/callgrind-me.sh [--requests N] SERVER_BINARY...
#
# For each binary: starts it under `valgrind --tool=callgrind` with memory
# sessions and a throw-away SQLite database (instrumentation off), registers
# and signs in one user, sends 200 `me` to warm up, then counts the
# instructions of N more (default 2000), all over one kept-alive
# connection from curl, and prints them per request. Callgrind runs the
# program on one simulated CPU and without SHA extensions, so the token's
# HMAC weighs more here than on the machine; compare builds, not
# seconds. Needs valgrind, curl and python3.
set -euo pipefail

requests=2000
if [[ ${1:-} == --requests ]]; then
    requests=$2
    shift 2
fi
if [[ $# -eq 0 ]]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# `me` URLs for curl, one per request.
urls() {
    local port=$1 count=$2
    for _ in $(seq 1 "$count"); do
        printf 'http://127.0.0.1:%s/api/v1/auth/me\n' "$port"
    done
}

count_one() {
    local binary=$1 dir port vg
    dir=$(mktemp -d)
    port=$(free_port)
    # valgrind names its control pipe after HOST and USER, which the
    # server's HOST setting would change: callgrind_control is given the
    # same below.
    env HOST=127.0.0.1 USER=slop PORT="$port" METRICS_ADDR=127.0.0.1:0 \
        LOG_LEVEL=warn DATABASE_URL="sqlite:$dir/db.sqlite" \
        JWT_SECRET=callgrind-me-jwt-secret-0123456789abcdef \
        APP_SECRET=callgrind-me-app-secret-0123456789abcdef \
        valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$dir/callgrind.out" "$binary" >"$dir/server.log" 2>&1 &
    vg=$!
    control() { HOST=127.0.0.1 USER=slop callgrind_control "$@" "$vg" >/dev/null 2>&1; }
    for _ in $(seq 1 600); do
        curl -sf "http://127.0.0.1:$port/health/live" >/dev/null 2>&1 && break
        sleep 0.5
    done
    local credentials='"email":"me@example.com","password":"callgrind me password"'
    curl -sf -H 'content-type: application/json' -d "{$credentials,\"displayName\":\"Me\"}" \
        "http://127.0.0.1:$port/api/v1/auth/register" >/dev/null
    local token
    token=$(curl -sf -H 'content-type: application/json' -d "{$credentials}" \
        "http://127.0.0.1:$port/api/v1/auth/login" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["tokens"]["accessToken"])')
    local bearer="authorization: Bearer $token"
    # shellcheck disable=SC2046 # one URL per word
    curl -sf -H "$bearer" $(urls "$port" 200) >/dev/null
    control -i on
    # shellcheck disable=SC2046
    curl -sf -H "$bearer" $(urls "$port" "$requests") >/dev/null
    control -i off
    control -d
    kill "$vg"
    wait "$vg" 2>/dev/null || true
    local total
    total=$(awk '/^totals:/ { print $2 }' "$dir"/callgrind.out.1)
    printf '%s: %d instructions per me (%d over %d)\n' \
        "$binary" $((total / requests)) "$total" "$requests"
    rm -rf "$dir"
}

for binary in "$@"; do
    count_one "$binary"
done
