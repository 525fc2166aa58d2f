"""The official Python SDKs (anthropic, openai), unchanged, through the real llmtap binary.

The SDKs are configured the way a user behind llmtap would: HTTPS_PROXY pointing at llmtap and
SSL_CERT_FILE naming a bundle that holds llmtap's CA, with the real host names
(https://api.anthropic.com:<mock port>, https://api.openai.com:<mock port>/v1) that llmtap pins to a
loopback mock of the provider APIs. Checked: the SDK gets the mocked answer (JSON and streaming, the
stream arriving event by event), and llmtap's record of the call has the right model, token counts
and usage source. Plus how the SDKs' HTTP client (httpx2 in these versions) is made to trust llmtap.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from dataclasses import dataclass
from typing import Any, Callable

import anthropic
import openai
import pytest

from conftest import Llmtap
from provider_mock import (
    ANTHROPIC_HOST, JSON_TEXT, OPENAI_HOST, STREAM_TEXT, USAGE, ProviderMock, new_probe, response_model,
)

ANTHROPIC_MODEL = "claude-mock-4-7"
OPENAI_MODEL = "gpt-mock-5"
# Key-shaped secrets: they must reach the mock and never appear in llmtap's output.
ANTHROPIC_KEY = f"sk-ant-api03-{secrets.token_hex(24)}"
OPENAI_KEY = f"sk-proj-{secrets.token_hex(24)}"

TOKEN_ATTRS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
)
def anthropic_kwargs(mock: ProviderMock) -> dict[str, Any]:
    return {"api_key": ANTHROPIC_KEY, "base_url": f"https://{ANTHROPIC_HOST}:{mock.port}", "max_retries": 0, "timeout": 20}


def openai_kwargs(mock: ProviderMock) -> dict[str, Any]:
    return {"api_key": OPENAI_KEY, "base_url": f"https://{OPENAI_HOST}:{mock.port}/v1", "max_retries": 0, "timeout": 20}


# --------------------------------------------------------------------------------------------
# The calls an agent makes. Each takes the mock (for its port), the probe to put in the prompt,
# and `on_first`, called with the first stream event the SDK yields; returns what the SDK got.

OnFirst = Callable[[Any], None]


def anthropic_json(mock: ProviderMock, probe: str, on_first: OnFirst) -> dict[str, Any]:
    client = anthropic.Anthropic(**anthropic_kwargs(mock))
    msg = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, messages=[{"role": "user", "content": f"ping {probe}"}])
    return {"id": msg.id, "model": msg.model, "text": "".join(b.text for b in msg.content), "usage": msg.usage.model_dump()}


def anthropic_stream(mock: ProviderMock, probe: str, on_first: OnFirst) -> dict[str, Any]:
    client = anthropic.Anthropic(**anthropic_kwargs(mock))
    stream = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, stream=True,
                                    messages=[{"role": "user", "content": f"ping {probe}"}])
    events = []
    with stream:
        for event in stream:
            if not events:
                on_first(event)
            events.append(event)
    start = events[0].message
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    usage = next(e.usage for e in events if e.type == "message_delta").model_dump()
    return {"id": start.id, "model": start.model, "text": text, "usage": usage, "types": [e.type for e in events]}


def anthropic_stream_helper(mock: ProviderMock, probe: str, on_first: OnFirst) -> dict[str, Any]:
    """The SDK's own stream helper, which accumulates the message and its usage itself."""
    client = anthropic.Anthropic(**anthropic_kwargs(mock))
    types = []
    with client.messages.stream(model=ANTHROPIC_MODEL, max_tokens=64,
                                messages=[{"role": "user", "content": f"ping {probe}"}]) as stream:
        for event in stream:
            if not types:
                on_first(event)
            types.append(event.type)
        msg = stream.get_final_message()
    return {"id": msg.id, "model": msg.model, "text": "".join(b.text for b in msg.content), "usage": msg.usage.model_dump(),
            "types": types}


def anthropic_async_stream(mock: ProviderMock, probe: str, on_first: OnFirst) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with anthropic.AsyncAnthropic(**anthropic_kwargs(mock)) as client:
            stream = await client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, stream=True,
                                                  messages=[{"role": "user", "content": f"ping {probe}"}])
            events = []
            async for event in stream:
                if not events:
                    on_first(event)
                events.append(event)
        start = events[0].message
        text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
        usage = next(e.usage for e in events if e.type == "message_delta").model_dump()
        return {"id": start.id, "model": start.model, "text": text, "usage": usage, "types": [e.type for e in events]}

    return asyncio.run(run())


def openai_chat_json(mock: ProviderMock, probe: str, on_first: OnFirst) -> dict[str, Any]:
    client = openai.OpenAI(**openai_kwargs(mock))
    c = client.chat.completions.create(model=OPENAI_MODEL, max_completion_tokens=64,
                                       messages=[{"role": "user", "content": f"ping {probe}"}])
    return {"id": c.id, "model": c.model, "text": c.choices[0].message.content, "usage": c.usage.model_dump()}


def _chat_stream(include_usage: bool) -> Callable[[ProviderMock, str, OnFirst], dict[str, Any]]:
    def call(mock: ProviderMock, probe: str, on_first: OnFirst) -> dict[str, Any]:
        client = openai.OpenAI(**openai_kwargs(mock))
        extra = {"stream_options": {"include_usage": True}} if include_usage else {}
        stream = client.chat.completions.create(model=OPENAI_MODEL, max_completion_tokens=64, stream=True,
                                                messages=[{"role": "user", "content": f"ping {probe}"}], **extra)
        chunks = []
        with stream:
            for chunk in stream:
                if not chunks:
                    on_first(chunk)
                chunks.append(chunk)
        text = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
        usage = next((c.usage.model_dump() for c in chunks if c.usage), None)
        return {"id": chunks[0].id, "model": chunks[0].model, "text": text, "usage": usage}

    return call


def openai_async_chat_stream(mock: ProviderMock, probe: str, on_first: OnFirst) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with openai.AsyncOpenAI(**openai_kwargs(mock)) as client:
            stream = await client.chat.completions.create(
                model=OPENAI_MODEL, max_completion_tokens=64, stream=True, stream_options={"include_usage": True},
                messages=[{"role": "user", "content": f"ping {probe}"}])
            chunks = []
            async for chunk in stream:
                if not chunks:
                    on_first(chunk)
                chunks.append(chunk)
        text = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
        usage = next((c.usage.model_dump() for c in chunks if c.usage), None)
        return {"id": chunks[0].id, "model": chunks[0].model, "text": text, "usage": usage}

    return asyncio.run(run())


def openai_responses_json(mock: ProviderMock, probe: str, on_first: OnFirst) -> dict[str, Any]:
    client = openai.OpenAI(**openai_kwargs(mock))
    r = client.responses.create(model=OPENAI_MODEL, max_output_tokens=64, input=f"ping {probe}")
    return {"id": r.id, "model": r.model, "text": r.output_text, "usage": r.usage.model_dump(), "status": r.status}


def openai_responses_stream(mock: ProviderMock, probe: str, on_first: OnFirst) -> dict[str, Any]:
    client = openai.OpenAI(**openai_kwargs(mock))
    stream = client.responses.create(model=OPENAI_MODEL, max_output_tokens=64, input=f"ping {probe}", stream=True)
    events = []
    with stream:
        for event in stream:
            if not events:
                on_first(event)
            events.append(event)
    done = next(e.response for e in events if e.type == "response.completed")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    return {"id": done.id, "model": done.model, "text": text, "usage": done.usage.model_dump(),
            "types": [e.type for e in events]}


# --------------------------------------------------------------------------------------------
# What llmtap must record for each


def _anthropic_tokens(u: dict[str, int]) -> dict[str, int]:
    return {
        "gen_ai.usage.input_tokens": u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"],
        "gen_ai.usage.output_tokens": u["output_tokens"],
        "gen_ai.usage.cache_read.input_tokens": u["cache_read_input_tokens"],
        "gen_ai.usage.cache_creation.input_tokens": u["cache_creation_input_tokens"],
    }


def _chat_tokens(u: dict[str, int]) -> dict[str, int]:
    # prompt_tokens already includes the cached ones.
    return {
        "gen_ai.usage.input_tokens": u["prompt_tokens"],
        "gen_ai.usage.output_tokens": u["completion_tokens"],
        "gen_ai.usage.cache_read.input_tokens": u["cached_tokens"],
        "gen_ai.usage.reasoning.output_tokens": u["reasoning_tokens"],
    }


def _responses_tokens(u: dict[str, int]) -> dict[str, int]:
    return {
        "gen_ai.usage.input_tokens": u["input_tokens"],
        "gen_ai.usage.output_tokens": u["output_tokens"],
        "gen_ai.usage.cache_read.input_tokens": u["cached_tokens"],
        "gen_ai.usage.reasoning.output_tokens": u["reasoning_tokens"],
    }


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[ProviderMock, str, OnFirst], dict[str, Any]]
    provider: str
    stream: bool
    text: str
    usage_source: str
    tokens: dict[str, int]


CASES = [
    Case("anthropic-json", anthropic_json, "anthropic", False, JSON_TEXT, "response", _anthropic_tokens(USAGE["anthropic_json"])),
    # message_delta's usage is cumulative and repeats the input side: replaced, not added.
    Case("anthropic-stream", anthropic_stream, "anthropic", True, STREAM_TEXT, "stream", _anthropic_tokens(USAGE["anthropic_stream_delta"])),
    Case("anthropic-stream-helper", anthropic_stream_helper, "anthropic", True, STREAM_TEXT, "stream",
         _anthropic_tokens(USAGE["anthropic_stream_delta"])),
    Case("anthropic-async-stream", anthropic_async_stream, "anthropic", True, STREAM_TEXT, "stream",
         _anthropic_tokens(USAGE["anthropic_stream_delta"])),
    Case("openai-chat-json", openai_chat_json, "openai", False, JSON_TEXT, "response", _chat_tokens(USAGE["openai_chat"])),
    Case("openai-chat-stream-usage", _chat_stream(True), "openai", True, STREAM_TEXT, "stream", _chat_tokens(USAGE["openai_chat_stream"])),
    # No stream_options.include_usage: the API sends no usage and llmtap must not ask for it.
    Case("openai-chat-stream-no-usage", _chat_stream(False), "openai", True, STREAM_TEXT, "absent", {}),
    Case("openai-async-chat-stream", openai_async_chat_stream, "openai", True, STREAM_TEXT, "stream", _chat_tokens(USAGE["openai_chat_stream"])),
    Case("openai-responses-json", openai_responses_json, "openai", False, JSON_TEXT, "response", _responses_tokens(USAGE["openai_responses"])),
    Case("openai-responses-stream", openai_responses_stream, "openai", True, STREAM_TEXT, "stream",
         _responses_tokens(USAGE["openai_responses_stream"])),
]


def run_case(case: Case, mock: ProviderMock, llmtap: Llmtap) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Runs one call through llmtap and checks what every call must satisfy; returns (SDK result,
    record attributes, the request as the mock saw it)."""
    host = ANTHROPIC_HOST if case.provider == "anthropic" else OPENAI_HOST
    api_key = ANTHROPIC_KEY if case.provider == "anthropic" else OPENAI_KEY
    probe = new_probe()
    state_at_first: list[str] = []

    def on_first(_event: Any) -> None:
        seen = mock.requests_for(probe)
        state_at_first.append(seen[0].state if seen else "not-received")
        mock.release(probe)

    result = case.call(mock, probe, on_first)

    seen = mock.requests_for(probe)
    assert len(seen) == 1, "the mock saw the call exactly once"
    req = seen[0]
    assert req.host == f"{host}:{mock.port}", "Host header names the real provider"
    assert req.servername == host, "llmtap connected upstream with the real name as SNI"
    assert api_key in str(req.headers), "the API key reached the upstream"
    assert req.stream == case.stream
    if case.stream:
        assert state_at_first == ["head-sent"], "the SDK had its first event while the mock still held the rest of the stream"
        assert req.released_by == "ack", "the mock sent the tail only after the SDK got the first event"

    records = llmtap.wait_for_records(probe)
    assert len(records) == 1, "exactly one record for the call"
    line = llmtap.lines_mentioning(probe)[0]
    assert api_key not in line, "the API key appears nowhere in the record"
    attrs = records[0]["attributes"]
    assert attrs["http.response.status_code"] == 200
    assert attrs["server.address"] == host
    assert attrs["llmtap.outcome"] == "complete"
    if not case.stream:
        # The JSON answer went out gzip-compressed (httpx2 accepts it); llmtap decoded its copy only.
        assert req.encoding == "gzip"
    return result, attrs, req


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_sdk_call_through_llmtap(case: Case, mock: ProviderMock, llmtap: Llmtap, agent_env: Callable[..., None]) -> None:
    agent_env("bundle")
    result, attrs, req = run_case(case, mock, llmtap)
    model = ANTHROPIC_MODEL if case.provider == "anthropic" else OPENAI_MODEL

    # The SDK works unchanged.
    assert result["text"] == case.text
    assert result["model"] == response_model(model)
    if case.usage_source == "absent":
        assert result["usage"] is None, "the SDK got no usage: llmtap did not add stream_options"
        assert "stream_options" not in req.body, "llmtap forwarded the request body unchanged"
    else:
        assert result["usage"] is not None
    if "types" in result and case.provider == "anthropic":
        assert result["types"][0] == "message_start" and result["types"][-1] == "message_stop"
    if "types" in result and case.provider == "openai":
        assert result["types"][0] == "response.created" and result["types"][-1] == "response.completed"

    # llmtap's record.
    assert attrs["gen_ai.provider.name"] == case.provider
    assert attrs["gen_ai.request.model"] == model
    assert attrs["gen_ai.response.model"] == response_model(model)
    assert attrs["gen_ai.response.id"] == result["id"]
    assert attrs["gen_ai.request.stream"] is case.stream
    assert attrs["llmtap.usage.source"] == case.usage_source
    for key in TOKEN_ATTRS:
        if key in case.tokens:
            assert attrs.get(key) == case.tokens[key], key
        else:
            assert key not in attrs, f"{key} must be absent, got {attrs.get(key)}"


def test_two_calls_on_one_client(mock: ProviderMock, llmtap: Llmtap, agent_env: Callable[..., None]) -> None:
    """One client, two calls (JSON, then a stream with usage) over its kept-alive connection: two
    records, each with its own usage."""
    agent_env("bundle")
    probe = new_probe()
    mock.release(probe)  # not about incremental delivery: no gate
    messages = [{"role": "user", "content": f"ping {probe}"}]
    with anthropic.Anthropic(**anthropic_kwargs(mock)) as client:
        first = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, messages=messages)
        with client.messages.stream(model=ANTHROPIC_MODEL, max_tokens=64, messages=messages) as stream:
            second = stream.get_final_message()
    assert first.content[0].text == JSON_TEXT
    assert second.content[0].text == STREAM_TEXT
    records = llmtap.wait_for_records(probe, count=2)
    assert len(records) == 2, "one record per call"
    by_source = {r["attributes"]["llmtap.usage.source"]: r["attributes"] for r in records}
    assert sorted(by_source) == ["response", "stream"]
    for source, usage in (("response", USAGE["anthropic_json"]), ("stream", USAGE["anthropic_stream_delta"])):
        for key, value in _anthropic_tokens(usage).items():
            assert by_source[source].get(key) == value, (source, key)


def test_client_stops_reading_a_stream(mock: ProviderMock, llmtap: Llmtap, agent_env: Callable[..., None]) -> None:
    """The agent breaks out of a stream after the first event: the record says so (client_aborted,
    usage stream_cut_short with what had arrived), and llmtap keeps serving."""
    agent_env("bundle")
    probe = new_probe()
    with anthropic.Anthropic(**anthropic_kwargs(mock)) as client:
        with client.messages.stream(model=ANTHROPIC_MODEL, max_tokens=64,
                                    messages=[{"role": "user", "content": f"ping {probe}"}]) as stream:
            first = next(iter(stream))
    assert first.type == "message_start"
    mock.release(probe)
    attrs = llmtap.wait_for_records(probe)[0]["attributes"]
    assert attrs["llmtap.outcome"] == "client_aborted"
    assert attrs["llmtap.usage.source"] == "stream_cut_short"
    start = USAGE["anthropic_stream_start"]
    assert attrs["gen_ai.request.model"] == ANTHROPIC_MODEL
    assert attrs.get("gen_ai.usage.input_tokens") == (
        start["input_tokens"] + start["cache_read_input_tokens"] + start["cache_creation_input_tokens"])
    result, _, _ = run_case(CASES[0], mock, llmtap)
    assert result["text"] == JSON_TEXT


def test_request_model_of_a_prompt_over_the_capture_cap(mock: ProviderMock, llmtap: Llmtap,
                                                         agent_env: Callable[..., None]) -> None:
    agent_env("bundle")
    probe = new_probe()
    mock.release(probe)
    big = "x" * (1100 * 1024)  # over the 1 MiB default --max-body-size: agents with images or long contexts
    with anthropic.Anthropic(**anthropic_kwargs(mock)) as client:
        with client.messages.stream(model=ANTHROPIC_MODEL, max_tokens=64,
                                    messages=[{"role": "user", "content": f"ping {probe} {big}"}]) as stream:
            msg = stream.get_final_message()
    assert msg.content[0].text == STREAM_TEXT
    [record] = llmtap.wait_for_records(probe)
    attrs = record["attributes"]
    assert attrs["llmtap.request.body.truncated"] is True
    assert attrs["llmtap.usage.source"] == "stream"
    assert attrs["gen_ai.usage.output_tokens"] == USAGE["anthropic_stream_delta"]["output_tokens"]
    assert attrs.get("gen_ai.request.model") == ANTHROPIC_MODEL
    assert attrs.get("gen_ai.request.stream") is True


# --------------------------------------------------------------------------------------------
# How the SDKs' HTTP client trusts llmtap's CA


@pytest.mark.parametrize("trust", ["ca-only", "cert-dir"])
def test_trust_from_environment(trust: str, mock: ProviderMock, llmtap: Llmtap, agent_env: Callable[..., None]) -> None:
    """SSL_CERT_FILE naming llmtap's CA alone, or SSL_CERT_DIR naming a hashed dir holding it, is enough."""
    agent_env(trust)
    for case in (CASES[0], CASES[4]):  # anthropic-json, openai-chat-json
        result, attrs, _ = run_case(case, mock, llmtap)
        assert result["text"] == JSON_TEXT
        assert attrs["llmtap.usage.source"] == "response"


def test_trust_with_explicit_http_client(mock: ProviderMock, llmtap: Llmtap, agent_env: Callable[..., None]) -> None:
    """With SSL_CERT_FILE left at the system roots, a client passed in with verify=<ssl context> works
    (the proxy still comes from HTTPS_PROXY)."""
    agent_env("system")
    ctx = ssl.create_default_context(cafile=str(llmtap.ca_pem))
    probe = new_probe()
    a = anthropic.Anthropic(**anthropic_kwargs(mock), http_client=anthropic.DefaultHttpxClient(verify=ctx))
    msg = a.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, messages=[{"role": "user", "content": f"ping {probe}"}])
    assert msg.content[0].text == JSON_TEXT
    o = openai.OpenAI(**openai_kwargs(mock), http_client=openai.DefaultHttpxClient(verify=ctx))
    c = o.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": f"ping {probe}"}])
    assert c.choices[0].message.content == JSON_TEXT
    records = llmtap.wait_for_records(probe, count=2)
    assert sorted(r["attributes"]["gen_ai.provider.name"] for r in records) == ["anthropic", "openai"]
    assert [s.servername for s in mock.requests_for(probe)] == [ANTHROPIC_HOST, OPENAI_HOST]


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_without_llmtap_ca_the_sdk_fails_loudly(provider: str, mock: ProviderMock, llmtap: Llmtap,
                                                 agent_env: Callable[..., None]) -> None:
    """SSL_CERT_FILE with the system roots only: a TLS verification error, never a silent direct call."""
    agent_env("system")
    probe = new_probe()
    with pytest.raises((anthropic.APIConnectionError, openai.APIConnectionError)) as info:
        if provider == "anthropic":
            anthropic.Anthropic(**anthropic_kwargs(mock)).messages.create(
                model=ANTHROPIC_MODEL, max_tokens=64, messages=[{"role": "user", "content": f"ping {probe}"}])
        else:
            openai.OpenAI(**openai_kwargs(mock)).chat.completions.create(
                model=OPENAI_MODEL, messages=[{"role": "user", "content": f"ping {probe}"}])
    chain = []
    err: BaseException | None = info.value
    while err is not None:
        chain.append(f"{type(err).__name__}: {err}")
        err = err.__cause__ or err.__context__
    assert "CERTIFICATE_VERIFY_FAILED" in " <- ".join(chain), chain
    assert mock.requests_for(probe) == [], "nothing reached the upstream"
