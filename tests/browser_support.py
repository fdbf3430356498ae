"""Helpers for the browser test: find chromium, run JupyterLab in a temp folder, drive a notebook.

JupyterLab runs as a subprocess in its own process group (so the kernels it
starts are stopped with it), bound to 127.0.0.1 on a free port, without
token, browser, news or update checks, and with settings, workspaces and
runtime files kept in the temporary folder so nothing of the user's setup
leaks in (no restored tabs, no pop-ups).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Debian's chromium (``apt-get install chromium``), as DESIGN.md prescribes.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = (
    "the browser test needs Debian's chromium at /usr/bin/chromium and the playwright Python "
    "package: `sudo apt-get install chromium` (scripts/test.sh installs it when run as root) "
    "and `pip install -e .[dev]`"
)


def find_chromium() -> str | None:
    """The chromium executable to drive, or None when it is not installed."""
    if Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_notebook(path: Path, cells: list[str]) -> None:
    """Write a python3 notebook of code cells (kernelspec set, so JupyterLab starts the kernel unasked)."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(  # type: ignore[no-untyped-call]
        cells=[new_code_cell(source) for source in cells],  # type: ignore[no-untyped-call]
        metadata={
            "kernelspec": {
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
                "name": "python3",
            },
            "language_info": {"name": "python"},
        },
    )
    nbformat.write(nb, path)


@dataclass
class JupyterLab:
    """A running JupyterLab server."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_tail(self, n: int = 40) -> str:
        """The last lines of the server's log, for failure messages."""
        try:
            lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])


def _quiet_settings(settings_dir: Path) -> None:
    """User settings that keep JupyterLab from asking about news and updates."""
    folder = settings_dir / "@jupyterlab" / "apputils-extension"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}), encoding="utf-8"
    )


@contextlib.contextmanager
def jupyterlab(root: Path, startup_timeout: float = 90.0) -> Iterator[JupyterLab]:
    """Run JupyterLab on ``root`` until the block ends; then stop it and every kernel it started."""
    port = free_port()
    state = root / ".jupyter-state"
    for sub in ("runtime", "settings", "workspaces", "config", "ipython"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    _quiet_settings(state / "settings")
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
        "JUPYTER_CONFIG_DIR": str(state / "config"),
        "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
        "IPYTHONDIR": str(state / "ipython"),
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--allow-root",
        "--no-browser",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ServerApp.port_retries=0",
        "--ServerApp.token=",
        "--ServerApp.password=",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log = state / "jupyterlab.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    lab = JupyterLab(process, f"http://127.0.0.1:{port}", log)
    try:
        _wait_ready(lab, startup_timeout)
        yield lab
    finally:
        stop(process)


def _wait_ready(lab: JupyterLab, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.process.poll() is not None:
            raise RuntimeError(
                f"JupyterLab exited with code {lab.process.returncode}:\n{lab.log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"{lab.url}/api/status", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"JupyterLab did not answer within {timeout:.0f} s:\n{lab.log_tail()}")


def stop(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """Stop the server's whole process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(grace)


def wait_kernel_idle(page: Any, timeout_ms: float) -> None:
    """Wait until the status bar says the notebook's kernel is Idle (e.g. "Python 3 (ipykernel) | Idle").

    The toolbar's execution indicator says idle before any kernel exists, so it is no signal.
    """
    page.wait_for_function(
        """() => {
            const bar = document.querySelector('#jp-main-statusbar');
            const text = bar ? bar.textContent || '' : '';
            return !text.includes('No Kernel') && /\\|\\s*Idle/.test(text);
        }""",
        timeout=timeout_ms,
    )
