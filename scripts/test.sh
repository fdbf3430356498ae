#!/usr/bin/env bash
# Run the whole suite: lint, types, tests (real kernels, real SQLite, real chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
VENV="${VENV:-.venv}"

# Debian packages the suite drives for real: chromium (the browser test), redis-server and
# postgresql (throwaway servers the storage tests start themselves). Install what is missing.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# (NB_SESSIONS_TEST_PG_DSN names a server of your own instead of a throwaway one.)
[[ -n "${NB_SESSIONS_TEST_PG_DSN:-}" ]] || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
    || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
if (( ${#missing[@]} )); then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian packages for the tests: ${missing[*]}"
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "missing Debian packages: ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
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
