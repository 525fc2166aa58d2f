"""Real keys live only in llmtap (issue 10), with the official Python SDKs as the clients.

The SDKs hold only the sentinel ``llmtap-managed``; llmtap holds the real keys (a keys file naming
one key file and one environment variable of its own process) and swaps them in, on both ways in:

- through HTTPS_PROXY (CONNECT, llmtap's CA), base URL https://<provider name>:<mock port>;
- through the base-URL routes (--reverse-listen), base URL http://127.0.0.1:<port>/anthropic or
  /openai/v1, with no proxy variables at all.

The provider mock here checks the credential as the real APIs do (it answers 401 to anything but
the real key in the provider's own header), so a call that succeeds carried the real key. The
pinned anthropic SDK sends its api_key as ``Authorization: Bearer``; one case sends the sentinel in
``x-api-key`` instead (a default header), as older SDKs and curl users do. Both
hosts have ``require_sentinel``: an SDK holding a key of its own gets a 403 and nothing reaches the
mock. After every call, neither real key appears anywhere in llmtap's stdout or stderr (logging at
debug). The Anthropic key is key-shaped (as a real one is); the OpenAI key deliberately is not, so
that no redaction pattern could hide it if llmtap ever printed it.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import anthropic
import openai
import pytest

from conftest import Llmtap, LlmtapFactory
from provider_mock import ANTHROPIC_HOST, JSON_TEXT, OPENAI_HOST, STREAM_TEXT, ProviderMock, Seen, new_probe

SENTINEL = "llmtap-managed"
ANTHROPIC_MODEL = "claude-mock-4-7"
OPENAI_MODEL = "gpt-mock-5"
REAL_ANTHROPIC = f"sk-ant-api03-REAL{secrets.token_hex(24)}"  # llmtap reads it from a file
REAL_OPENAI = f"opaque-openai-real-{secrets.token_hex(20)}"  # llmtap reads it from its environment
OPENAI_KEY_VAR = "LLMTAP_TEST_OPENAI_REAL_KEY"
# Keys a sandbox should not hold: real-looking, not the sentinel.
FOREIGN = {ANTHROPIC_HOST: f"sk-ant-api03-{secrets.token_hex(24)}", OPENAI_HOST: f"sk-proj-{secrets.token_hex(24)}"}
REAL = {ANTHROPIC_HOST: REAL_ANTHROPIC, OPENAI_HOST: REAL_OPENAI}


@pytest.fixture(autouse=True)
def no_anthropic_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The anthropic SDK looks for credentials of its own (config dir, workload identity) when it is
    given no api_key: none here, whatever the machine has."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # an empty ~/.config/anthropic
    for name in ("ANTHROPIC_CONFIG_DIR", "ANTHROPIC_PROFILE", "ANTHROPIC_IDENTITY_TOKEN",
                 "ANTHROPIC_IDENTITY_TOKEN_FILE", "ANTHROPIC_FEDERATION_RULE_ID"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class Keyed:
    """The mock that wants the real keys, and the llmtap that holds them."""
    mock: ProviderMock
    llmtap: Llmtap

    def base_url(self, provider: str, way: str) -> str:
        if way == "proxy":
            return f"https://{ANTHROPIC_HOST}:{self.mock.port}" if provider == "anthropic" else f"https://{OPENAI_HOST}:{self.mock.port}/v1"
        assert way == "base-url"
        return f"http://127.0.0.1:{self.llmtap.reverse_port}/{'anthropic' if provider == 'anthropic' else 'openai/v1'}"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, llmtap_factory: LlmtapFactory) -> Iterator[Keyed]:
    mock = ProviderMock(tmp_path_factory.mktemp("keyed-mock"), expect_keys=dict(REAL))
    secrets_dir = tmp_path_factory.mktemp("keys")
    key_file = secrets_dir / "anthropic_api_key"
    key_file.write_text(REAL_ANTHROPIC + "\n")  # as a Docker secret file often is: a trailing newline
    key_file.chmod(0o600)
    keys_toml = secrets_dir / "keys.toml"
    keys_toml.write_text(
        "[[key]]\n"
        f'host = "{ANTHROPIC_HOST}"\n'
        f"from_file = {json.dumps(str(key_file))}\n"
        "require_sentinel = true\n"
        "\n"
        "[[key]]\n"
        f'host = "{OPENAI_HOST}"\n'
        f'from_env = "{OPENAI_KEY_VAR}"\n'
        f'sentinel = "{SENTINEL}"\n'
        "require_sentinel = true\n"
    )
    proc = llmtap_factory(mock, extra_args=["--keys", str(keys_toml)], reverse=True,
                          extra_env={OPENAI_KEY_VAR: REAL_OPENAI, "LLMTAP_LOG": "llmtap=debug,warn"})
    yield Keyed(mock, proc)
    proc.stop()
    mock.close()


def assert_no_real_key_printed(llmtap: Llmtap) -> None:
    out = llmtap.output()
    for host, key in REAL.items():
        assert key not in out, f"the real key for {host} appears in llmtap's output"


# --------------------------------------------------------------------------------------------
# The calls. Each takes the base URL, the key the SDK holds, the probe (in the prompt, and as
# x-request-id, a header the records keep: a refused call has no body in its record) and
# `on_first`, called with the first stream event.

OnFirst = Callable[[Any], None]


def _anthropic(base_url: str, api_key: str, probe: str, in_x_api_key: bool = False) -> anthropic.Anthropic:
    if in_x_api_key:  # no api_key: the SDK then sends the x-api-key default header as the credential
        return anthropic.Anthropic(api_key=None, base_url=base_url, max_retries=0, timeout=20,
                                   default_headers={"x-request-id": probe, "x-api-key": api_key})
    return anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=20,
                               default_headers={"x-request-id": probe})


def _openai(base_url: str, api_key: str, probe: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=20,
                         default_headers={"x-request-id": probe})


def anthropic_json(base_url: str, api_key: str, probe: str, on_first: OnFirst) -> str:
    with _anthropic(base_url, api_key, probe) as client:
        msg = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, messages=[{"role": "user", "content": f"ping {probe}"}])
    return "".join(b.text for b in msg.content)


def anthropic_x_api_key_json(base_url: str, api_key: str, probe: str, on_first: OnFirst) -> str:
    with _anthropic(base_url, api_key, probe, in_x_api_key=True) as client:
        msg = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, messages=[{"role": "user", "content": f"ping {probe}"}])
    return "".join(b.text for b in msg.content)


def anthropic_stream(base_url: str, api_key: str, probe: str, on_first: OnFirst) -> str:
    with _anthropic(base_url, api_key, probe) as client:
        stream = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, stream=True,
                                        messages=[{"role": "user", "content": f"ping {probe}"}])
        events = []
        with stream:
            for event in stream:
                if not events:
                    on_first(event)
                events.append(event)
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    return "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")


def openai_chat_json(base_url: str, api_key: str, probe: str, on_first: OnFirst) -> str:
    with _openai(base_url, api_key, probe) as client:
        c = client.chat.completions.create(model=OPENAI_MODEL, max_completion_tokens=64,
                                           messages=[{"role": "user", "content": f"ping {probe}"}])
    return c.choices[0].message.content or ""


def openai_chat_stream(base_url: str, api_key: str, probe: str, on_first: OnFirst) -> str:
    with _openai(base_url, api_key, probe) as client:
        stream = client.chat.completions.create(model=OPENAI_MODEL, max_completion_tokens=64, stream=True,
                                                stream_options={"include_usage": True},
                                                messages=[{"role": "user", "content": f"ping {probe}"}])
        chunks = []
        with stream:
            for chunk in stream:
                if not chunks:
                    on_first(chunk)
                chunks.append(chunk)
    assert chunks[-1].usage is not None
    return "".join(ch.delta.content or "" for c in chunks for ch in c.choices)


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[str, str, str, OnFirst], str]
    provider: str
    stream: bool
    header: str = "authorization"  # where the SDK puts the credential (Bearer)

    @property
    def host(self) -> str:
        return ANTHROPIC_HOST if self.provider == "anthropic" else OPENAI_HOST

    @property
    def path(self) -> str:
        return "/v1/messages" if self.provider == "anthropic" else "/v1/chat/completions"


CASES = [
    Case("anthropic-json", anthropic_json, "anthropic", False),
    Case("anthropic-x-api-key-json", anthropic_x_api_key_json, "anthropic", False, header="x-api-key"),
    Case("anthropic-stream", anthropic_stream, "anthropic", True),
    Case("openai-chat-json", openai_chat_json, "openai", False),
    Case("openai-chat-stream", openai_chat_stream, "openai", True),
]


def run_with_sentinel(case: Case, keyed: Keyed, way: str) -> tuple[Seen, dict[str, Any]]:
    """One call holding the sentinel; checks what both ways must satisfy and returns the request
    as the mock saw it and the record's attributes."""
    mock, llmtap = keyed.mock, keyed.llmtap
    probe = new_probe()
    state_at_first: list[str] = []

    def on_first(_event: Any) -> None:
        seen = mock.requests_for(probe)
        state_at_first.append(seen[0].state if seen else "not-received")
        mock.release(probe)

    text = case.call(keyed.base_url(case.provider, way), SENTINEL, probe, on_first)
    assert text == (STREAM_TEXT if case.stream else JSON_TEXT), "the SDK got the mock's answer"

    seen = mock.requests_for(probe)
    assert len(seen) == 1, "the mock saw the call exactly once"
    req = seen[0]
    assert req.auth == "accepted", "the upstream got the real key"
    assert req.auth_header == case.header, "in the header the SDK put the sentinel in"
    expected = REAL[case.host] if case.header == "x-api-key" else f"Bearer {REAL[case.host]}"
    assert req.headers.get(case.header) == expected
    assert "x-api-key" not in req.headers or "authorization" not in req.headers, "one credential only"
    assert SENTINEL not in str(req.headers), "no sentinel went upstream"
    assert req.path == case.path
    assert req.servername == case.host, "llmtap connected upstream with the real name as SNI"
    assert req.stream == case.stream
    if case.stream:
        assert state_at_first == ["head-sent"], "the SDK had its first event while the mock still held the rest of the stream"
        assert req.released_by == "ack", "the mock sent the tail only after the SDK got the first event"

    [record] = llmtap.wait_for_records(probe)
    attrs = record["attributes"]
    assert attrs["llmtap.key.injected"] is True
    assert "llmtap.key.foreign" not in attrs
    assert attrs["http.response.status_code"] == 200
    assert attrs["server.address"] == case.host
    assert attrs["gen_ai.provider.name"] == case.provider
    assert attrs["gen_ai.request.stream"] is case.stream
    assert attrs["llmtap.outcome"] == "complete"
    assert_no_real_key_printed(llmtap)
    return req, attrs


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_sentinel_becomes_the_real_key_through_https_proxy(case: Case, keyed: Keyed, agent_env: Callable[..., None]) -> None:
    agent_env("bundle", proxy=keyed.llmtap)
    req, attrs = run_with_sentinel(case, keyed, "proxy")
    assert req.host == f"{case.host}:{keyed.mock.port}", "Host header names the real provider (and the port the SDK used)"
    assert attrs["url.full"] == f"https://{case.host}:{keyed.mock.port}{case.path}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_sentinel_becomes_the_real_key_on_base_url_routes(case: Case, keyed: Keyed, agent_env: Callable[..., None]) -> None:
    agent_env("direct")  # no HTTPS_PROXY / HTTP_PROXY, no CA: a plain-HTTP base URL
    req, attrs = run_with_sentinel(case, keyed, "base-url")
    assert req.host == case.host, "the route's upstream is https://<provider name> on 443"
    assert attrs["url.full"] == f"https://{case.host}{case.path}", "the record names the upstream URL, not the route"


@pytest.mark.parametrize("way", ["proxy", "base-url"])
@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_foreign_key_is_refused_with_403(provider: str, way: str, keyed: Keyed, agent_env: Callable[..., None]) -> None:
    """An SDK holding a real-looking key of its own, to a host with require_sentinel: the SDK raises
    PermissionDeniedError (403, x-llmtap-error: foreign_key), nothing reaches the upstream, and the
    record says llmtap.key.foreign."""
    if way == "proxy":
        agent_env("bundle", proxy=keyed.llmtap)
    else:
        agent_env("direct")
    mock, llmtap = keyed.mock, keyed.llmtap
    host = ANTHROPIC_HOST if provider == "anthropic" else OPENAI_HOST
    foreign = FOREIGN[host]
    probe = new_probe()
    mock.release(probe)
    seen_before = len(mock.seen)
    call = anthropic_json if provider == "anthropic" else openai_chat_json
    error = anthropic.PermissionDeniedError if provider == "anthropic" else openai.PermissionDeniedError
    with pytest.raises(error) as info:
        call(keyed.base_url(provider, way), foreign, probe, lambda _e: None)
    assert info.value.status_code == 403
    assert info.value.response.headers.get("x-llmtap-error") == "foreign_key"
    assert foreign not in info.value.response.text, "the refusal does not echo the key"
    assert mock.requests_for(probe) == [] and len(mock.seen) == seen_before, "nothing reached the upstream"

    [record] = llmtap.wait_for_records(probe)
    attrs = record["attributes"]
    assert attrs["llmtap.key.foreign"] is True
    assert "llmtap.key.injected" not in attrs
    assert attrs["http.response.status_code"] == 403
    assert attrs["server.address"] == host
    path = "/v1/messages" if provider == "anthropic" else "/v1/chat/completions"
    port = f":{mock.port}" if way == "proxy" else ""
    assert attrs["url.full"] == f"https://{host}{port}{path}"
    assert record["severity_text"] == "WARN"
    assert foreign not in llmtap.lines_mentioning(probe)[0], "the foreign key is redacted in the record"
    assert_no_real_key_printed(llmtap)


def test_no_real_key_in_llmtap_output_at_the_end(keyed: Keyed) -> None:
    """After every call of this module (and its start-up summary), still no real key printed."""
    out = keyed.llmtap.output()
    assert "api.anthropic.com" in out and "from_file" in out and OPENAI_KEY_VAR in out, "the start-up summary names the sources"
    assert_no_real_key_printed(keyed.llmtap)
