#!/usr/bin/env bash
# Create .venv and install nb_sessions with its dev extras; re-run only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "bootstrap: creating the virtual environment $VENV with $("$PYTHON" --version)"
        "$PYTHON" -m venv "$VENV"
    fi
    echo "bootstrap: upgrading pip in $VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    echo "bootstrap: installing nb_sessions and its dependencies into $VENV" \
        "(JupyterLab, pandas, AgentScope 2.x for the tests, ...); the first time takes a few minutes"
    "$VENV/bin/python" -m pip install --quiet --progress-bar off -e ".[dev]"
    # JupyterLab of this venv: no news pop-up or update check over the tutorials.
    settings="$VENV/share/jupyter/lab/settings"
    mkdir -p "$settings"
    cat > "$settings/overrides.json" <<'JSON'
{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}
JSON
    rm -f "$VENV"/.installed-*
    touch "$stamp"
    echo "bootstrap: $VENV is ready"
fi
