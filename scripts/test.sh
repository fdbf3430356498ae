#!/usr/bin/env bash
# Run the whole suite: lint, types, tests (real kernels, real SQLite, real chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
VENV="${VENV:-.venv}"

# The browser test drives Debian's chromium; install it when it is missing.
if ! command -v chromium >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium (Debian package) for the browser test"
        apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    else
        echo "chromium is missing: install Debian's 'chromium' package (sudo apt-get install chromium)" >&2
        exit 1
    fi
fi

"$VENV/bin/ruff" check .
"$VENV/bin/mypy"

set +e
"$VENV/bin/python" -m pytest "$@"
rc=$?
set -e
if [[ $rc == 5 ]]; then
    echo "pytest collected no tests for: $*"
    exit 0
fi
exit $rc
