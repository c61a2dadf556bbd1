"""Fixtures for the browser tests (``make test-browser``; not part of ``make test``).

The widgets are driven in a real browser: Playwright for Python steering Debian's
Chromium (``/usr/bin/chromium``, or ``$CAE_CHROMIUM``), headless, against servers started
here on 127.0.0.1 with a random free port:

* ``jupyter_lab``: JupyterLab on the project folder (known random token; autosave, news
  and update checks switched off in a throw-away settings folder, so opening and running a
  notebook never writes it back);
* ``voila_app``: Voila rendering ``notebooks/app_codec.ipynb``.

Both run with ``CAE_QUICK=1``, so their kernels use quick mode. Every server is stopped at
the end of its module (its process and every process it started, by id), also when the
run is interrupted or ``timeout`` sends SIGTERM. Every wait has a deadline, so a hang
fails the test instead of blocking CI. Screenshots go to ``figures/browser_*.png``.
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "figures"
CHROMIUM = Path(os.environ.get("CAE_CHROMIUM", "/usr/bin/chromium"))
#: Flags needed on a closed network (no first-run, sync, component or QUIC traffic) and in
#: a container run as root (no sandbox, no GPU).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_TIMEOUT = 120  # seconds for a server to answer
SERVER_STOP_TIMEOUT = 20    # seconds for a polite shutdown before SIGKILL


def _sigterm_to_interrupt(signum, frame):
    """`timeout` (make test-browser) sends SIGTERM: turn it into an interrupt, so pytest
    still runs the fixtures' teardown and the servers are stopped."""
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _sigterm_to_interrupt)


# --------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process (field 22 of /proc/PID/stat), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                children = []
            for child in children:
                if child not in found:
                    found.append(child)
                    todo.append(child)
    return found


class Server:
    """A server process on 127.0.0.1, its log in a file, stopped with all it started."""

    def __init__(self, name: str, args: list[str], port: int, env: dict, log_path: Path,
                 ready_path: str | None = None):
        self.name, self.args, self.port, self.env = name, args, port, env
        self.log_path, self.ready_path = log_path, ready_path
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def _ready(self) -> bool:
        if self.ready_path is None:  # just a TCP connection (Voila: GET / would start a kernel)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                    return True
            except OSError:
                return False
        try:
            with urllib.request.urlopen(self.url + self.ready_path, timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def start(self, timeout: float = SERVER_START_TIMEOUT) -> "Server":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"{self.name} exited with code {self.proc.returncode} before answering; "
                            f"log:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"{self.name} did not answer on {self.url} within {timeout:.0f} s; "
                            f"log:\n{self.log_tail()}")
            time.sleep(0.3)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        # Remember the kernels and helpers it started (pid + start time, so that a reused
        # pid is never hit), ask the server to shut down, then kill what is left.
        children = [(pid, _start_time(pid)) for pid in _descendants(self.proc.pid)]
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid, started in children:
            if started is not None and _start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._log.close()
        self.proc = None


@pytest.fixture(scope="session")
def server_env() -> dict:
    """The servers' (and so their kernels') environment: quick mode, the MNIST folder."""
    env = dict(os.environ)
    env["CAE_QUICK"] = "1"
    env.setdefault("CAE_MNIST_DIR", str(ROOT.parent / "shared" / "data" / "mnist"))
    env.pop("MPLBACKEND", None)  # tests/conftest.py sets Agg; kernels need the inline backend
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _write_lab_settings(folder: Path) -> None:
    """User settings for the test's JupyterLab only: never autosave, no news, no update
    check, every cell in the DOM (no virtual scrolling)."""
    settings = {
        "@jupyterlab/docmanager-extension/plugin": '{"autosave": false}',
        "@jupyterlab/apputils-extension/notification": '{"fetchNews": "false", "checkForUpdates": false}',
        "@jupyterlab/notebook-extension/tracker": '{"windowingMode": "none"}',
    }
    for plugin, text in settings.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture(scope="module")
def jupyter_lab(tmp_path_factory, server_env):
    """JupyterLab on the project folder: yields the :class:`Server` (``.url``, ``.token``)."""
    tmp = tmp_path_factory.mktemp("jupyterlab")
    _write_lab_settings(tmp / "settings")
    port, token = free_port(), secrets.token_hex(16)
    env = {**server_env, "JUPYTER_CONFIG_DIR": str(tmp / "config")}
    args = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={ROOT}",
            f"--IdentityProvider.token={token}", "--ServerApp.allow_root=True",
            f"--LabApp.user_settings_dir={tmp / 'settings'}",
            f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
            f"--FileCheckpoints.root_dir={tmp / 'checkpoints'}"]  # not notebooks/.ipynb_checkpoints
    server = Server("JupyterLab", args, port, env, tmp / "jupyterlab.log",
                    ready_path=f"/api/status?token={token}")
    server.token = token
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def voila_app(tmp_path_factory, server_env):
    """Voila serving notebooks/app_codec.ipynb: yields the :class:`Server` (``.url``)."""
    tmp = tmp_path_factory.mktemp("voila")
    port = free_port()
    env = {**server_env, "JUPYTER_CONFIG_DIR": str(tmp / "config")}
    args = [sys.executable, "-m", "voila", "notebooks/app_codec.ipynb", "--no-browser",
            f"--port={port}", "--Voila.ip=127.0.0.1", "--Voila.port_retries=0"]
    server = Server("Voila", args, port, env, tmp / "voila.log")
    server.start()
    yield server
    server.stop()


# --------------------------------------------------------------------------------------
# The browser
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not os.access(CHROMIUM, os.X_OK):
        reason = (f"{CHROMIUM} not found: `make test-browser` installs Debian's chromium "
                  "(or set CAE_CHROMIUM to a Chromium binary)")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), headless=True,
                                             args=CHROMIUM_ARGS, timeout=60_000)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page (1300x950); browser console errors are printed if a test fails."""
    context = browser.new_context(viewport={"width": 1300, "height": 950})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.console_errors = []
    page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
    yield page
    context.close()
