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

# The PostgreSQL store's tests start a throwaway server from Debian's binaries
# (unless NB_SESSIONS_TEST_PG_DSN names one); install them when missing.
if [[ -z "${NB_SESSIONS_TEST_PG_DSN:-}" ]] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "installing PostgreSQL (Debian package) for the PostgreSQL store's tests"
        apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    else
        echo "PostgreSQL is missing: install Debian's 'postgresql' package (sudo apt-get install postgresql)," >&2
        echo "or set NB_SESSIONS_TEST_PG_DSN=postgresql://user@host:5432/postgres" >&2
        exit 1
    fi
fi

# Real AgentScope 1.0.21 for the interop tests, in a venv of its own (its pins clash with ours).
AS_VENV="${AS_VENV:-.venv-agentscope}"
as_stamp="$AS_VENV/.installed-$(sha256sum tests/agentscope-requirements.txt | cut -c1-16)"
if [[ ! -f "$as_stamp" ]]; then
    echo "installing AgentScope 1.0.21 into $AS_VENV for the interop tests"
    [[ -x "$AS_VENV/bin/python" ]] || python3 -m venv "$AS_VENV"
    "$AS_VENV/bin/python" -m pip install --quiet -r tests/agentscope-requirements.txt
    rm -f "$AS_VENV"/.installed-*
    touch "$as_stamp"
fi
export NB_SESSIONS_AGENTSCOPE_PYTHON="$PWD/$AS_VENV/bin/python"

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
