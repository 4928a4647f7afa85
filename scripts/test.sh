#!/usr/bin/env bash
# Runs every test of the project: the one command the README gives.
#
# Needs Redis at 127.0.0.1:6379 and PostgreSQL at 127.0.0.1:5432 running, and
# Rust with cargo-nextest, node/npm and python3 with pip installed. Installs the
# outside test clients (buf from npm, grpcio in a Python venv, aiosmtpd as the
# SMTP server of the mail tests) into .tools/ on
# first use, and Debian's chromium for the browser test when it is missing
# (as root; otherwise it says how), builds the Python client's wheel and
# installs it into the venv (every run), checks the TypeScript client
# (clients/typescript: generated code, tsc --strict, unit tests, and the
# bundle of the browser test), then runs `cargo nextest`. Extra arguments
# go to nextest, e.g.
#   bash scripts/test.sh -E 'test(health)'
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUF_VERSION=1.75.0
BUF=.tools/node_modules/.bin/buf
VENV=.tools/venv

# --- services the tests talk to ---------------------------------------------

reachable() { # host port
    timeout 2 bash -c "</dev/tcp/$1/$2" 2>/dev/null
}

down=0
if ! reachable 127.0.0.1 6379; then
    echo "error: Redis is not reachable at 127.0.0.1:6379. Start it with:" >&2
    echo "  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" --appendonly no" >&2
    down=1
fi
if ! reachable 127.0.0.1 5432; then
    echo "error: PostgreSQL is not reachable at 127.0.0.1:5432. Start it with:" >&2
    echo "  pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start" >&2
    down=1
fi
if ! command -v openssl >/dev/null 2>&1; then
    echo "error: openssl is missing: the TLS tests make their certificates with it (apt-get install openssl)" >&2
    down=1
fi
if [ "$down" -ne 0 ]; then
    exit 1
fi

# --- outside test clients, into .tools/ -------------------------------------

if [ -x "$BUF" ] && [ "$("$BUF" --version 2>/dev/null)" = "$BUF_VERSION" ]; then
    echo "==> buf $BUF_VERSION already installed"
else
    echo "==> installing buf $BUF_VERSION"
    npm install --no-audit --no-fund --prefix .tools "@bufbuild/buf@$BUF_VERSION"
fi

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import grpc, grpc_health.v1, grpc_tools, google.rpc.error_details_pb2, setuptools, jwt, cryptography, aiosmtpd, prometheus_client" 2>/dev/null; then
    echo "==> python gRPC clients already installed"
else
    echo "==> installing python gRPC clients into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r clients/python/requirements.txt "pyjwt[crypto]==2.15.1" \
        "aiosmtpd==1.4.6" "prometheus-client==0.26.0"
fi
# The Python client: a wheel of clients/python with the code generated from
# proto/ inside, built and installed again on every run, so it follows
# proto/. With the venv's pinned build requirements, from no index: offline.
# `pip check` fails when the pins leave the wheel's dependency ranges.
echo "==> building and installing the Python client wheel"
rm -rf .tools/wheels
pip_offline=(--quiet --disable-pip-version-check --no-index --no-deps)
"$VENV/bin/python" -m pip wheel "${pip_offline[@]}" --no-build-isolation \
    --check-build-dependencies --wheel-dir .tools/wheels ./clients/python
"$VENV/bin/python" -m pip install "${pip_offline[@]}" --force-reinstall .tools/wheels/slop_client-*.whl
if ! broken=$("$VENV/bin/python" -m pip check); then
    echo "error: the venv does not satisfy the Python client's dependencies:" >&2
    echo "$broken" >&2
    exit 1
fi

# `npm ci` in a Node project ($1) unless its node_modules was installed
# from this very lock.
npm_ci_once() {
    local lock
    lock=$(sha256sum "$1/package-lock.json" | cut -d' ' -f1)
    if [ "$(cat "$1/node_modules/.installed-lock" 2>/dev/null)" = "$lock" ]; then
        echo "==> $1 dependencies already installed"
    else
        echo "==> npm ci in $1"
        (cd "$1" && npm ci --no-audit --no-fund)
        echo "$lock" >"$1/node_modules/.installed-lock"
    fi
}

# --- OpenAPI test tools (tests/e2e/openapi.rs) ------------------------------
# openapi-spec-validator in the test venv, and the Node project that
# generates a client from the served document (openapi-typescript,
# openapi-fetch, tsc), installed by npm_ci_once.
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0
OPENAPI_JS=tests/e2e/js/openapi
if [ "$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('openapi-spec-validator'))" 2>/dev/null)" = "$OPENAPI_SPEC_VALIDATOR_VERSION" ]; then
    echo "==> openapi-spec-validator $OPENAPI_SPEC_VALIDATOR_VERSION already installed"
else
    echo "==> installing openapi-spec-validator $OPENAPI_SPEC_VALIDATOR_VERSION into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"
fi
npm_ci_once "$OPENAPI_JS"
# --- end of the OpenAPI test tools -------------------------------------------

if [ -n "${CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1; then
    echo "==> chromium already installed"
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing Debian's chromium (for the browser test)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends chromium >/dev/null ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
else
    echo "error: the browser test needs Chromium. Install it with:" >&2
    echo "  sudo apt-get install chromium" >&2
    echo "or set CHROMIUM to a Chromium binary." >&2
    exit 1
fi

# --- the TypeScript client (clients/typescript) ------------------------------
# npm_ci_once, then `npm run check`: the code generated again from proto/ (buf and
# protoc-gen-es from the package's devDependencies), the package built,
# tsc --strict over its sources, tests and README examples, its unit tests
# (node --test), and build/browser-test.js, the bundle the browser test
# (tests/e2e/browser.rs) loads. The same tsc compiles the Node backend of
# tests/e2e/node_client.rs (test/node/backend.ts, which imports the built
# package by its name) to build/test/node/backend.js. Any failure fails
# the run.
TS_CLIENT=clients/typescript
npm_ci_once "$TS_CLIENT"
echo "==> checking the TypeScript client"
(cd "$TS_CLIENT" && npm run --silent check)
# --- end of the TypeScript client --------------------------------------------

# --- the tests ---------------------------------------------------------------

echo "==> cargo nextest run"
status=0
cargo nextest run --workspace --all-targets --no-fail-fast "$@" || status=$?
exit "$status"
