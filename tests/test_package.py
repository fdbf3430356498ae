"""Package-level promises: the layers, the public names, the docs."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import nb_sessions as nbs

ROOT = Path(__file__).resolve().parents[1]
CORE = [
    "nb_sessions", "nb_sessions.state", "nb_sessions.codec", "nb_sessions.chunks", "nb_sessions.errors",
    "nb_sessions.stores", "nb_sessions.sessions", "nb_sessions.views", "nb_sessions.diff",
    "nb_sessions.search", "nb_sessions.repair", "nb_sessions.redact", "nb_sessions.agent",
]


def test_the_core_never_imports_ipython_or_widgets() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {CORE!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('IPython', 'ipywidgets', 'ipykernel'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_only_the_notebook_package_imports_ipython_in_source() -> None:
    offenders = []
    for path in (ROOT / "nb_sessions").rglob("*.py"):
        if "notebook" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("IPython", "ipywidgets")]
    assert offenders == []


def test_every_public_name_exists() -> None:
    for name in nbs.__all__:
        assert getattr(nbs, name) is not None, name


def test_every_magic_is_documented_in_the_readme() -> None:
    from nb_sessions.notebook.magics import SessionMagics

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    magics = SessionMagics.magics["line"]
    assert len(magics) >= 8
    missing = [name for name in magics if f"%{name}" not in readme]
    assert missing == []


def test_readme_commands_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in re.findall(r"^make (\w+)", readme, flags=re.M):
        assert re.search(rf"^{target}:", makefile, flags=re.M), target
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
