"""The session panel in real JupyterLab, driven by Playwright (Python) and Debian's chromium.

JupyterLab serves a temporary folder holding ``panel.ipynb``: an agent whose
first message carries ``<img src=x onerror=...>``, and ``%session_panel`` on
the SQLite store ``panel.db``. The test clicks Save and finds the checkpoint in
the store file, changes the agent from a new cell, saves again, selects the
first checkpoint, checks that the message shows as text and runs nothing,
clicks Restore then Confirm, and reads the kernel's objects back from a cell's
output. It keeps a screenshot of the panel (docs/images/panel.png, used by the
README). Without chromium it is skipped, except in CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nb_sessions as nbs

from .browser_support import (
    CHROMIUM_ARGS,
    INSTALL_HINT,
    find_chromium,
    jupyterlab,
    wait_kernel_idle,
    write_notebook,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "images" / "panel.png"
XSS = '<img src=x onerror="window.__nbs_xss=1">'

SETUP = f"""\
%load_ext nb_sessions
%config SessionMagics.store = 'panel.db'
from nb_sessions.agent import Msg, ScriptedAgent

agent = ScriptedAgent("Friday")
await agent(Msg("user", {f"look: {XSS}"!r}, "user"))
await agent(Msg("user", "what is 6*7", "user"))
print("messages:", len(agent.memory.content))"""

CHECK = """\
import nb_sessions as nbs
saved = nbs.open_store("panel.db").get_state("panel@first")["agent"]
print("restored:", len(agent.memory.content), "messages; same as panel@first:", agent.state_dict() == saved)"""

#: Milliseconds: generous, a cold kernel on a busy CI machine can take a while.
KERNEL_TIMEOUT = 90_000
STEP_TIMEOUT = 30_000


@pytest.fixture
def chromium() -> str:
    """The chromium to drive; without it the test fails saying how to install it."""
    path = find_chromium()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        pytest.fail(f"the browser test cannot run: {INSTALL_HINT}", pytrace=False)
    return path


@pytest.fixture
def page(chromium: str, tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """A chromium page and the folder JupyterLab serves (with panel.ipynb in it)."""
    from playwright.sync_api import sync_playwright

    write_notebook(tmp_path / "panel.ipynb", [SETUP, "%session_panel"])
    with jupyterlab(tmp_path) as lab, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, headless=True, timeout=60_000
        )
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            tab.set_default_timeout(STEP_TIMEOUT)
            tab.goto(f"{lab.url}/lab/tree/panel.ipynb", wait_until="domcontentloaded")
            try:
                yield tab, tmp_path
            except BaseException:
                tab.screenshot(path=str(tmp_path / "failure.png"))
                print(f"JupyterLab log:\n{lab.log_tail()}\nscreenshot: {tmp_path / 'failure.png'}")
                raise
        finally:
            browser.close()


def open_notebook(page: Any) -> None:
    """Wait for the notebook and an Idle kernel; reload once if the kernel is slow to come up."""
    for attempt in range(2):
        try:
            page.wait_for_selector(".jp-Notebook", timeout=KERNEL_TIMEOUT)
            wait_kernel_idle(page, KERNEL_TIMEOUT)
            return
        except Exception:
            if attempt:
                raise
            page.reload(wait_until="domcontentloaded")


def collapse_left_sidebar(page: Any) -> None:
    """Give the notebook the full width (cosmetic, for the screenshot): click the open sidebar tab."""
    current = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if current.count():
        current.first.click()


def run_all_cells(page: Any) -> None:
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def run_new_cell(page: Any, code: str) -> str:
    """Add a cell below the last one through the UI, run it, and return its output text."""
    from playwright.sync_api import expect

    cells = page.locator(".jp-Notebook .jp-Cell")
    count = cells.count()
    cells.nth(count - 1).locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")  # command mode
    page.keyboard.press("b")  # insert a cell below
    expect(cells).to_have_count(count + 1)
    page.keyboard.press("Enter")  # edit mode
    page.keyboard.insert_text(code)  # no typing: the editor's auto-closing brackets stay out of it
    page.keyboard.press("Shift+Enter")
    output = cells.nth(count).locator(".jp-OutputArea-output")
    expect(output.first).to_be_visible(timeout=STEP_TIMEOUT)
    wait_idle_output(cells.nth(count))
    return "\n".join(output.all_inner_texts())


def wait_idle_output(cell: Any) -> None:
    """Wait until a cell has finished running (its prompt shows a number, not ``*``)."""
    prompt = cell.locator(".jp-InputPrompt")
    deadline = time.monotonic() + STEP_TIMEOUT / 1000
    while time.monotonic() < deadline:
        if re.search(r"\[\d+\]", prompt.inner_text()):
            return
        time.sleep(0.1)
    raise TimeoutError(f"the cell did not finish: prompt {prompt.inner_text()!r}")


def test_panel_saves_restores_and_escapes_in_jupyterlab(page: tuple[Any, Path]) -> None:
    from playwright.sync_api import expect

    tab, folder = page
    started = time.monotonic()
    open_notebook(tab)
    collapse_left_sidebar(tab)
    run_all_cells(tab)

    panel = tab.locator(".nbs-panel")
    expect(panel).to_be_visible(timeout=KERNEL_TIMEOUT)
    first_output = tab.locator(".jp-Notebook .jp-Cell").first.locator(".jp-OutputArea-output")
    expect(first_output).to_contain_text("messages:")
    match = re.search(r"messages: (\d+)", first_output.inner_text())
    assert match, first_output.inner_text()
    n_messages = int(match[1])
    assert n_messages == 6  # user + fallback reply, then user, tool call, tool result, answer
    status = panel.locator(".nbs-status")

    # Save: the checkpoint is in the store file, read by this process.
    panel.locator(".nbs-save-as input").fill("panel")
    panel.locator(".nbs-label input").fill("first")
    panel.locator("button.nbs-save").click()
    expect(status).to_contain_text("saved panel@1 [first]")
    store = nbs.open_store(folder / "panel.db")
    (cp,) = store.history("panel")
    assert (cp.seq, cp.label, cp.modules) == (1, "first", ("agent",))
    assert cp.metadata["saved_by"] == "SessionPanel"
    saved = store.get_state("panel@first")["agent"]
    assert len(saved["memory"]["content"]) == n_messages

    # Change the agent from the notebook, and save that too.
    cleared = run_new_cell(
        tab, "await agent.memory.clear()\nprint('cleared:', len(agent.memory.content))"
    )
    assert "cleared: 0" in cleared
    panel.locator(".nbs-label input").fill("cleared")
    panel.locator("button.nbs-save").click()
    expect(status).to_contain_text("saved panel@2 [cleared]")
    assert [c.label for c in store.history("panel")] == ["first", "cleared"]

    # Select panel@1: its preview shows the HTML message as text, and runs nothing.
    panel.locator(".nbs-checkpoints select").select_option(index=1)  # newest first
    preview = panel.locator(".nbs-preview")
    expect(preview).to_contain_text("panel@1")
    expect(preview).to_contain_text("<img src=x onerror=")
    assert preview.locator("img").count() == 0
    assert tab.evaluate("() => window.__nbs_xss") is None

    # Restore asks first; Confirm does it.
    panel.locator("button.nbs-restore").click()
    confirm = panel.locator("button.nbs-confirm")
    expect(confirm).to_be_visible()
    expect(status).to_contain_text("Restore panel@1 into agent?")
    assert [c.label for c in store.history("panel")] == ["first", "cleared"]  # nothing yet
    confirm.click()
    expect(status).to_contain_text("restored agent from panel@1")
    expect(confirm).to_be_hidden()

    # The kernel's objects are those of panel@first.
    checked = run_new_cell(tab, CHECK)
    assert f"restored: {n_messages} messages; same as panel@first: True" in checked, checked
    assert tab.evaluate("() => window.__nbs_xss") is None

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    panel.screenshot(path=str(folder / "panel.png"))
    if not SCREENSHOT.exists() or os.environ.get("NB_SESSIONS_UPDATE_SCREENSHOT"):
        panel.screenshot(path=str(SCREENSHOT))  # the README's picture; kept unless asked to refresh
    tab.screenshot(path=str(folder / "jupyterlab.png"))
    assert SCREENSHOT.stat().st_size > 10_000
    print(f"browser test body took {time.monotonic() - started:.1f} s")
