"""Fixtures of the browser tests: a sandbox, JupyterLab on loopback, Debian's Chromium.

* ``chromium``: the path of Debian's Chromium (DESIGN.md section 10); the tests are skipped, with
  how to enable them, when it is missing (``playwright install`` cannot download a browser here).
* ``lab_sandbox``: a sandbox of its own (``moat_nb.sandbox.start``, port 0, temporary data).
* ``lab``: ``jupyter lab`` in a temporary folder holding this folder's notebooks, with a random
  token, its own settings (no news, no update check: the machine has no Internet) and the
  sandbox's ``MOAT_URL`` / ``MOAT_USER`` / ``MOAT_PASSWORD`` in its environment, which the kernel
  inherits (section 6: credentials through the environment).
* ``browser``: Chromium driven by Playwright's sync API, headless, with the flags this machine
  needs (no background networking: the closed network refuses it), a fresh profile.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
HERE = Path(__file__).parent
#: The user-facing what-if notebook (section 9); the browser test runs it when it shows the workbench.
WHAT_IF = HERE.parent.parent / "notebooks" / "explore_what_if.ipynb"
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
HOW_TO_ENABLE = (
    "the browser tests need Debian's chromium at /usr/bin/chromium: run `make test` as root (it "
    "installs it) or `apt-get install chromium`"
)


@dataclass
class Lab:
    """A running JupyterLab: ``url`` (no token), ``token``, ``root`` (its folder), the process."""

    url: str
    token: str
    root: Path
    process: subprocess.Popen[bytes]
    log: Path

    def page_url(self, path: str) -> str:
        return f"{self.url}/lab/tree/{path}?token={self.token}&reset"

    def notebook(self) -> str:
        """``explore_what_if.ipynb`` when it shows the ReplayWorkbench, else this folder's
        ``workbench.ipynb`` (the same workbench, alone)."""
        what_if = self.root / WHAT_IF.name
        if what_if.exists() and "ReplayWorkbench(" in what_if.read_text(encoding="utf-8"):
            return what_if.name
        return "workbench.ipynb"


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(HOW_TO_ENABLE)
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'")
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed: pip install -e '.[dev]'")
    return CHROMIUM


@pytest.fixture(scope="module")
def lab_sandbox(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from moat_nb.sandbox import start

    handle = start(data=tmp_path_factory.mktemp("lab-sandbox"), per_env=15, seed=7)
    try:
        yield handle
    finally:
        handle.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(folder: Path) -> None:
    """User settings of the test's JupyterLab: no news or update checks (no Internet here),
    notifications quiet, the light theme to start with."""
    files = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "checkForUpdates": False,
            "fetchNews": "false",
            "doNotDisturbMode": True,
        },
        "@jupyterlab/apputils-extension/themes.jupyterlab-settings": {"theme": "JupyterLab Light"},
    }
    for name, value in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value), encoding="utf-8")


@pytest.fixture(scope="module")
def lab(lab_sandbox: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    import httpx

    root = tmp_path_factory.mktemp("lab")
    for notebook in [*HERE.glob("*.ipynb"), WHAT_IF]:
        if notebook.exists():
            shutil.copy(notebook, root / notebook.name)
    home = tmp_path_factory.mktemp("lab-home")
    _settings(home / "settings")
    token = secrets.token_hex(16)
    port = _free_port()
    env = {
        **os.environ,
        "MOAT_URL": lab_sandbox.url,
        "MOAT_USER": "operator",
        "MOAT_PASSWORD": "operator",
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "IPYTHONDIR": str(home / "ipython"),
    }
    env.pop("MOAT_TOKEN", None)
    log = home / "lab.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={root}",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.news_url=", "--ServerApp.terminals_enabled=False",
                *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
            ],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"jupyter lab exited with {process.returncode}:\n{log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{url}/api/status", params={"token": token}, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"jupyter lab did not answer within 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield Lab(url, token, root, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # launch() gives every run a fresh temporary profile (Playwright's own user data dir).
        instance = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    """``out/screenshots/`` of the repository (issue 7), created when missing."""
    folder = HERE.parent.parent / "out" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
