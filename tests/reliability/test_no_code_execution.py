"""Nothing in nb_sessions ever executes code from data: a guard over the package's source AST.

Loading a checkpoint must never run code, so the package may not call eval,
exec or compile, use pickle, marshal, shelve or dill, run a shell
(``subprocess`` with ``shell=True``, ``os.system``, ``os.popen``) or call
``__import__``. (``importlib.import_module`` is allowed: the package uses it
for lazy submodules named by a constant list.)
"""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path

import pytest

import nb_sessions
from tests.reliability.conftest import Figures

PACKAGE = Path(nb_sessions.__file__).resolve().parent
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile", "input"}
FORBIDDEN_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "marshal",
    "shelve",
    "dill",
    "cloudpickle",
    "joblib",
}
FORBIDDEN_ATTRS = {
    ("os", "system"),
    ("os", "popen"),
    ("os", "execv"),
    ("os", "execvp"),
    ("os", "spawnl"),
    ("builtins", "eval"),
    ("builtins", "exec"),
}
SUBPROCESS = {"run", "call", "check_call", "check_output", "Popen", "getoutput", "getstatusoutput"}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def problems_in(source: str, name: str) -> list[str]:
    """Every forbidden construct in ``source``, as ``name:line: what``."""
    found: list[str] = []
    tree = ast.parse(source, name)
    for node in ast.walk(tree):
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{where}: from {node.module} import ...")
            for alias in node.names:
                if (node.module, alias.name) in FORBIDDEN_ATTRS or (
                    node.module == "builtins" and alias.name in FORBIDDEN_CALLS
                ):
                    found.append(f"{where}: from {node.module} import {alias.name}")
        elif isinstance(node, ast.Call):
            func = dotted(node.func)
            head, _, last = func.rpartition(".")
            if (
                func in FORBIDDEN_CALLS
                or (head, last) in FORBIDDEN_ATTRS
                or head.split(".")[0] in FORBIDDEN_MODULES
            ):
                found.append(f"{where}: {func}()")
            elif head == "subprocess" and last in SUBPROCESS:
                for kw in node.keywords:
                    if kw.arg == "shell" and not (
                        isinstance(kw.value, ast.Constant) and kw.value.value is False
                    ):
                        found.append(f"{where}: {func}(shell=...)")
            elif (
                last == "getattr"
                and len(node.args) >= 2
                and dotted(node.args[0]) in ("builtins", "__builtins__")
            ):
                found.append(f"{where}: getattr(builtins, ...)")
    return found


def test_the_guard_catches_what_it_is_for() -> None:
    bad = (
        "import pickle\nfrom marshal import loads\nimport subprocess, os\n"
        "eval('1')\nexec('x=1')\ncompile('1', 'f', 'eval')\npickle.loads(b'')\n"
        "subprocess.run('ls', shell=True)\nos.system('ls')\n__import__('os')\n"
    )
    assert [p.split(": ", 1)[1] for p in problems_in(bad, "bad.py")] == [
        "import pickle",
        "from marshal import ...",
        "eval()",
        "exec()",
        "compile()",
        "pickle.loads()",
        "subprocess.run(shell=...)",
        "os.system()",
        "__import__()",
    ]
    fine = "import ast\nast.parse('1+1', mode='eval')\nsubprocess.run(['ls'], shell=False)\nsafe_eval('1')\n"
    assert problems_in(fine, "fine.py") == []


def test_no_eval_exec_pickle_or_shell_anywhere_in_the_package(figures: Figures) -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10, f"the package source was not found under {PACKAGE}"
    found = [
        p
        for f in files
        for p in problems_in(f.read_text(encoding="utf-8"), str(f.relative_to(PACKAGE)))
    ]
    assert found == [], "code-execution hazards in nb_sessions:\n" + "\n".join(found)
    figures.record(files_scanned=len(files), hazards=0)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"box": {"value": "__import__(\'os\').system(\'touch PWNED\')"}}',
        b"\x80\x04\x95\x15\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94.",  # a pickle
        b'{"box": {"value": {"__class__": "os.system", "__reduce__": ["touch PWNED"]}}}',
    ],
)
def test_hostile_payloads_are_data_never_code(
    payload: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = nb_sessions.open_store(tmp_path / "store")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "s.json").write_bytes(payload)  # an "AgentScope file" someone handed us
    with contextlib.suppress(nb_sessions.NbSessionsError):
        store.get_state("s")
    assert not (tmp_path / "PWNED").exists()
