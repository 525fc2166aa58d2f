"""Fixtures: the provider mock, the real llmtap binary pinned to it (both on loopback), and
`agent_env`, which sets the process environment the way an agent behind llmtap has it.

llmtap: LLMTAP_BIN, default ../../target/debug/llmtap (relative to this folder); build it with
`cargo build --bin llmtap`. It runs on its default LLM hosts (api.anthropic.com, api.openai.com),
both pinned to the mock's port with --resolve, trusting the mock's CA with --upstream-ca, with a
fresh CA dir, and prints one JSON record per exchange on stdout, which the fixture collects.

`llmtap_factory` starts more of them, with extra flags and environment (a keys file, say) and,
with ``reverse=True``, the base-URL routes (--reverse-listen on a loopback port of their own, and
port 443 of the provider names pinned to the mock with --connect-to, as the routes' upstream is
https://<name>). `agent_env` takes the llmtap to point at, or ``"direct"`` for a client with no
proxy at all (a base-URL client).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import pytest

from provider_mock import PROVIDER_HOSTS, ProviderMock

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LLMTAP_BIN = (HERE / os.environ.get("LLMTAP_BIN", "../../target/debug/llmtap")).resolve()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class Llmtap:
    """A running llmtap process and the JSON records it printed."""

    def __init__(self, mock: ProviderMock, ca_dir: Path, extra_args: Sequence[str] = (),
                 extra_env: Mapping[str, str] | None = None, reverse: bool = False) -> None:
        if not LLMTAP_BIN.exists():
            raise RuntimeError(f"llmtap binary not found at {LLMTAP_BIN}: run `cargo build --bin llmtap` or set LLMTAP_BIN")
        self.port = _free_port()
        self.ca_dir = ca_dir
        self.ca_pem = ca_dir / "ca.pem"
        self.proxy_url = f"http://127.0.0.1:{self.port}"
        # The base-URL routes' listener, with reverse=True: http://127.0.0.1:<reverse_port>/anthropic, ...
        self.reverse_port: int | None = _free_port() if reverse else None
        args = [
            str(LLMTAP_BIN),
            "--listen", f"127.0.0.1:{self.port}",
            "--ca-dir", str(ca_dir),
            "--upstream-ca", str(mock.ca_pem),
            "--addons-config", str(REPO / "addons-config"),
        ]
        for host in PROVIDER_HOSTS:
            args += ["--resolve", f"{host}:{mock.port}:127.0.0.1"]
        if self.reverse_port is not None:
            args += ["--reverse-listen", f"127.0.0.1:{self.reverse_port}"]
            # A route's upstream is port 443 of the provider's name: pinned to the mock, never looked up.
            for host in PROVIDER_HOSTS:
                args += ["--connect-to", f"{host}:443:127.0.0.1:{mock.port}"]
        args += list(extra_args)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(ca_dir),
            "LANG": "C.UTF-8",
            "LLMTAP_LOG": os.environ.get("LLMTAP_LOG", "llmtap=info,warn"),
            **(extra_env or {}),
        }
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for stream, sink in ((self.proc.stdout, self.stdout_lines), (self.proc.stderr, self.stderr_lines)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            if _healthy(self.port) and self.ca_pem.exists() and (self.reverse_port is None or _accepts(self.reverse_port)):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"llmtap did not become healthy on 127.0.0.1:{self.port}\n{self.stderr_tail()}")

    def _pump(self, stream: Any, sink: list[str]) -> None:
        for line in stream:
            with self._cond:
                sink.append(line.rstrip("\n"))
                self._cond.notify_all()

    def stderr_tail(self, n: int = 40) -> str:
        with self._cond:
            return "\n".join(self.stderr_lines[-n:])

    def output(self) -> str:
        """Everything llmtap printed so far, stdout and stderr."""
        with self._cond:
            return "\n".join([*self.stdout_lines, *self.stderr_lines])

    def lines_mentioning(self, marker: str) -> list[str]:
        with self._cond:
            return [line for line in self.stdout_lines if marker in line and line.lstrip().startswith("{")]

    def wait_for_records(self, marker: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The JSON records that mention ``marker``, waiting up to ``timeout`` s for ``count`` of them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [json.loads(line) for line in self.stdout_lines if marker in line and line.lstrip().startswith("{")]
                remaining = deadline - time.monotonic()
                if len(found) >= count or remaining <= 0:
                    break
                self._cond.wait(remaining)
        if len(found) < count:
            raise AssertionError(f"{len(found)} llmtap records mention {marker} after {timeout} s, expected {count}\nstderr tail:\n{self.stderr_tail()}")
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderMock]:
    m = ProviderMock(tmp_path_factory.mktemp("provider-mock"))
    yield m
    m.close()


@pytest.fixture(scope="session")
def llmtap(mock: ProviderMock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Llmtap]:
    proc = Llmtap(mock, tmp_path_factory.mktemp("llmtap-ca"))
    yield proc
    proc.stop()


LlmtapFactory = Callable[..., Llmtap]


@pytest.fixture(scope="session")
def llmtap_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmtapFactory]:
    """``start(mock, extra_args=(), extra_env=None, reverse=False)``: one more llmtap in front of
    ``mock`` (see Llmtap), stopped at the end of the session."""
    started: list[Llmtap] = []

    def start(mock: ProviderMock, extra_args: Sequence[str] = (), extra_env: Mapping[str, str] | None = None,
              reverse: bool = False) -> Llmtap:
        proc = Llmtap(mock, tmp_path_factory.mktemp("llmtap-ca"), extra_args, extra_env, reverse)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")
CA_VARS = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
ENV_CONFIG = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL",
              "OPENAI_ORG_ID", "OPENAI_PROJECT_ID")
SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")


def system_roots() -> str:
    """The platform's CA bundle as PEM text ('' when there is none)."""
    for path in (ssl.get_default_verify_paths().openssl_cafile, *SYSTEM_BUNDLES):
        if path and Path(path).is_file():
            return Path(path).read_text()
    return ""


@pytest.fixture
def agent_env(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., None]:
    """Sets the process environment as an agent behind llmtap has it; ``trust`` picks the CA setup,
    ``proxy`` the llmtap (default: the session's `llmtap`). ``trust="direct"``: no proxy and no CA
    variables at all, as a client of the base-URL routes has it (loopback in NO_PROXY)."""

    def apply(trust: str = "bundle", proxy: Llmtap | None = None) -> None:
        for name in (*PROXY_VARS, *CA_VARS, *ENV_CONFIG):
            monkeypatch.delenv(name, raising=False)
            monkeypatch.delenv(name.lower(), raising=False)
        if trust == "direct":
            monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
            return
        llmtap: Llmtap = proxy if proxy is not None else request.getfixturevalue("llmtap")
        monkeypatch.setenv("HTTPS_PROXY", llmtap.proxy_url)
        # Loopback control traffic (none in these tests, but a user's health checks) stays direct.
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        if trust == "bundle":  # what certs/README.md tells users: system roots + llmtap's CA
            bundle = tmp_path / "bundle.pem"
            bundle.write_text(system_roots() + "\n" + llmtap.ca_pem.read_text())
            monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        elif trust == "ca-only":
            monkeypatch.setenv("SSL_CERT_FILE", str(llmtap.ca_pem))
        elif trust == "cert-dir":  # an OpenSSL hashed directory holding llmtap's CA
            cert_dir = tmp_path / "certs"
            cert_dir.mkdir()
            digest = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(llmtap.ca_pem)],
                                    check=True, capture_output=True, text=True, timeout=20).stdout.strip()
            shutil.copy(llmtap.ca_pem, cert_dir / f"{digest}.0")
            monkeypatch.setenv("SSL_CERT_DIR", str(cert_dir))
        elif trust == "system":  # the system roots only: llmtap's CA is not trusted
            bundle = tmp_path / "system.pem"
            bundle.write_text(system_roots())
            monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        else:
            raise ValueError(trust)

    return apply
