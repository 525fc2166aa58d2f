"""Limits and budgets per client (issue 11), with the official Python SDKs as the clients.

Each test starts its own llmtap (so its own counters) with a policy file whose one client,
``code-sandbox``, is every connection from 127.0.0.1 (``sources``), with a ``[profile.code.limits]``
table made for that test. A call past a limit is answered by llmtap itself: ``429`` in the
provider's own error shape, which the SDK raises as its ``RateLimitError``; nothing reaches the
provider mock. The SDKs run with ``max_retries=0``: they would otherwise sleep ``retry-after`` and
try again (which is what an agent gets without it); one test keeps their retries on, to show that
``x-should-retry: false`` (a used-up budget) stops them.

The windows are fixed UTC windows (the minute, the hour, the day). A test whose calls must fall in
one window waits, when fewer than ``WINDOW_MARGIN_S`` seconds of the current one are left, for the
next one to start (at most that long).

Each call carries its probe in the prompt and as ``x-request-id``, a header the records keep (a
refused call's record has no body to find the probe in).

Prices (addons-config/prices.toml): the mock answers ``<requested model>-2025-09-29``.
``claude-haiku-4-5`` is priced by its answer's model (pattern ``claude-haiku-4-5*``);
``gpt-4o-mini`` by the request's model (its patterns do not match the mock's dated name, and
llmtap then falls back to the requested model).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import anthropic
import openai
import pytest

from conftest import Llmtap, LlmtapFactory
from provider_mock import (ANTHROPIC_HOST, JSON_TEXT, OPENAI_HOST, STREAM_TEXT, USAGE, ProviderMock, filler_text,
                           new_probe)

CLIENT = "code-sandbox"
API_KEY = "sk-test-limits-not-a-real-key"
WINDOW_MARGIN_S = 10.0
MINUTE, HOUR, DAY = 60, 3600, 86_400

POLICY = """\
mode = "enforce"

[[client]]
name = "{client}"
profile = "code"
sources = ["127.0.0.1/32"]

[profile.code]
allow = ["{anthropic}", "{openai}"]

[profile.code.limits]
{limits}

[profile.default]
allow = []
"""

# What the mock's JSON answers cost (USD per million tokens from prices.toml, see the module doc).
# Anthropic claude-haiku-4-5: input 1.00, cache read 0.10, cache write 1.25, output 5.00; the
# mock's input side is 21 uncached + 1000 read + 300 written.
_A = USAGE["anthropic_json"]
ANTHROPIC_JSON_COST = (_A["input_tokens"] * 1.0 + _A["cache_read_input_tokens"] * 0.10
                       + _A["cache_creation_input_tokens"] * 1.25 + _A["output_tokens"] * 5.0) / 1e6
# OpenAI gpt-4o-mini: input 0.15, cache read 0.075, output 0.60 (reasoning is inside completion_tokens).
_O = USAGE["openai_chat"]
OPENAI_JSON_COST = ((_O["prompt_tokens"] - _O["cached_tokens"]) * 0.15 + _O["cached_tokens"] * 0.075
                    + _O["completion_tokens"] * 0.60) / 1e6


@dataclass(frozen=True)
class Provider:
    name: str
    host: str
    model: str  # priced in prices.toml (see the module doc)
    json_cost: float
    json_output_tokens: int

    @property
    def rate_limit_error(self) -> type[Exception]:
        return anthropic.RateLimitError if self.name == "anthropic" else openai.RateLimitError

    def base_url(self, llmtap: Llmtap, mock: ProviderMock, way: str) -> str:
        if way == "proxy":  # through HTTPS_PROXY: the real name, on the mock's port
            return f"https://{self.host}:{mock.port}" + ("" if self.name == "anthropic" else "/v1")
        assert way == "base-url"
        return f"http://127.0.0.1:{llmtap.reverse_port}/" + ("anthropic" if self.name == "anthropic" else "openai/v1")


ANTHROPIC = Provider("anthropic", ANTHROPIC_HOST, "claude-haiku-4-5", ANTHROPIC_JSON_COST, _A["output_tokens"])
OPENAI = Provider("openai", OPENAI_HOST, "gpt-4o-mini", OPENAI_JSON_COST, _O["completion_tokens"])
PROVIDERS = [ANTHROPIC, OPENAI]
PROVIDER_IDS = [p.name for p in PROVIDERS]


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(autouse=True)
def no_anthropic_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials or config of the machine's for the anthropic SDK to find."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("ANTHROPIC_CONFIG_DIR", "ANTHROPIC_PROFILE", "ANTHROPIC_IDENTITY_TOKEN",
                 "ANTHROPIC_IDENTITY_TOKEN_FILE", "ANTHROPIC_FEDERATION_RULE_ID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def limits_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderMock]:
    m = ProviderMock(tmp_path_factory.mktemp("limits-mock"))
    yield m
    m.close()


@dataclass
class Limited:
    """An llmtap whose one client is held to ``limits``, the mock behind it, and how the SDK reaches it."""
    llmtap: Llmtap
    mock: ProviderMock
    way: str

    def base_url(self, provider: Provider) -> str:
        return provider.base_url(self.llmtap, self.mock, self.way)


StartLimited = Callable[..., Limited]


@pytest.fixture
def start_limited(limits_mock: ProviderMock, llmtap_factory: LlmtapFactory, agent_env: Callable[..., None],
                  tmp_path: Path) -> Iterator[StartLimited]:
    """``start(limits, way="proxy")``: a fresh llmtap (fresh counters) with a policy holding
    ``code-sandbox`` to ``limits`` (the lines of [profile.code.limits]); the environment set for
    ``way`` ("proxy": HTTPS_PROXY and llmtap's CA; "base-url": no proxy at all). Stopped after the test."""
    started: list[Llmtap] = []

    def start(limits: str, way: str = "proxy") -> Limited:
        policy = tmp_path / f"policy-{len(started)}.toml"
        policy.write_text(POLICY.format(client=CLIENT, anthropic=ANTHROPIC_HOST, openai=OPENAI_HOST, limits=limits))
        proc = llmtap_factory(limits_mock, extra_args=["--policy", str(policy)], reverse=(way == "base-url"))
        started.append(proc)
        if way == "proxy":
            agent_env("bundle", proxy=proc)
        else:
            agent_env("direct")
        return Limited(proc, limits_mock, way)

    yield start
    for proc in started:
        proc.stop()


def metric(llmtap: Llmtap, name: str, **labels: str) -> float | None:
    """The value of one sample of llmtap's /metrics (Prometheus text), by name and labels; None when absent."""
    conn = http.client.HTTPConnection("127.0.0.1", llmtap.port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        res = conn.getresponse()
        assert res.status == 200
        text = res.read().decode()
    finally:
        conn.close()
    for line in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if found == labels:
            return float(m.group(3))
    return None


@contextlib.contextmanager
def in_one_window(length_s: int) -> Iterator[None]:
    """A failure inside says so when the fixed UTC window of ``length_s`` changed meanwhile
    (the test's margin was too small for this machine)."""
    start = int(time.time() // length_s)
    try:
        yield
    except Exception as e:
        if int(time.time() // length_s) != start:
            raise AssertionError(f"the calls crossed a {length_s} s window boundary (a slow machine?): {e}") from e
        raise


def wait_for_window(length_s: int, margin_s: float = WINDOW_MARGIN_S) -> None:
    """If fewer than ``margin_s`` seconds are left in the current fixed UTC window of ``length_s``
    seconds, sleep until the next one has begun (at most ``margin_s`` + 0.25 s)."""
    left = length_s - (time.time() % length_s)
    if left < margin_s:
        time.sleep(left + 0.25)


# --------------------------------------------------------------------------------------------
# The calls


def _anthropic(base_url: str, probe: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=API_KEY, base_url=base_url, max_retries=0, timeout=20,
                               default_headers={"x-request-id": probe})


def _openai(base_url: str, probe: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=API_KEY, base_url=base_url, max_retries=0, timeout=20,
                         default_headers={"x-request-id": probe})


def call_json(provider: Provider, base_url: str, probe: str) -> str:
    """One non-streaming call of ``provider.model``; its answer's text."""
    prompt = [{"role": "user", "content": f"ping {probe}"}]
    if provider is ANTHROPIC:
        with _anthropic(base_url, probe) as client:
            msg = client.messages.create(model=provider.model, max_tokens=64, messages=prompt)
        return "".join(b.text for b in msg.content)
    with _openai(base_url, probe) as client:
        c = client.chat.completions.create(model=provider.model, max_completion_tokens=64, messages=prompt)
    return c.choices[0].message.content or ""


def refused(provider: Provider, base_url: str, probe: str) -> Any:
    """One call that must raise the SDK's RateLimitError; returns it after the checks every
    llmtap limit refusal must pass (status, llmtap's headers, the provider's error shape)."""
    with pytest.raises(provider.rate_limit_error) as info:
        call_json(provider, base_url, probe)
    err = info.value
    assert type(err) is provider.rate_limit_error, f"{type(err).__name__}: {err}"
    assert err.status_code == 429
    headers = err.response.headers
    assert headers.get("x-llmtap-error") == "limit", "llmtap answered, not the provider"
    assert re.fullmatch(r"[0-9]+", headers.get("retry-after", "")), f"retry-after: {headers.get('retry-after')!r}"
    assert int(headers["retry-after"]) >= 1
    body = err.body
    if provider is ANTHROPIC:
        # The SDK keeps the whole document: {"type":"error","error":{...}}.
        assert isinstance(body, dict) and body.get("type") == "error", body
        assert body["error"]["type"] == "rate_limit_error"
        assert err.type == "rate_limit_error"
        message = body["error"]["message"]
    else:
        # The SDK keeps the inner "error" object.
        assert isinstance(body, dict), body
        assert body["type"] == "rate_limit_exceeded" and body["code"] == "rate_limit_exceeded", body
        assert err.code == "rate_limit_exceeded" and err.type == "rate_limit_exceeded"
        message = body["message"]
    assert message in err.message, "the SDK's message carries llmtap's"
    assert err.response.json() == json.loads(err.response.text), "a JSON body"
    return err


def assert_refusal_record(llmtap: Llmtap, probe: str, limit: str, provider: Provider) -> dict[str, Any]:
    [record] = llmtap.wait_for_records(probe)
    attrs = record["attributes"]
    assert attrs["http.response.status_code"] == 429
    assert attrs["llmtap.limit"] == limit
    assert attrs["llmtap.outcome"] == "refused"
    assert attrs["error.type"] == "limit"
    assert attrs["llmtap.client.name"] == CLIENT
    assert attrs["server.address"] == provider.host
    assert attrs["gen_ai.provider.name"] == provider.name
    assert "llmtap.cost.usd" not in attrs, "a refused call costs nothing, and gets no made-up cost"
    return attrs


def success_record(llmtap: Llmtap, probe: str) -> dict[str, Any]:
    [record] = llmtap.wait_for_records(probe)
    attrs = record["attributes"]
    assert attrs["http.response.status_code"] == 200
    assert attrs["llmtap.outcome"] == "complete"
    assert attrs["llmtap.client.name"] == CLIENT
    assert "llmtap.limit" not in attrs
    return attrs


# --------------------------------------------------------------------------------------------
# The tests


@pytest.mark.parametrize("way", ["proxy", "base-url"])
@pytest.mark.parametrize("provider", PROVIDERS, ids=PROVIDER_IDS)
def test_requests_per_minute_third_call_raises_rate_limit_error(provider: Provider, way: str,
                                                                 start_limited: StartLimited) -> None:
    """requests_per_minute = 2: two calls go through, the third is the SDK's RateLimitError (429,
    retry-after in whole seconds within the minute, x-should-retry: true), naming the limit and
    the client; the mock saw two requests; the refusal's record names the limit."""
    limited = start_limited("requests_per_minute = 2", way)
    mock, llmtap, base_url = limited.mock, limited.llmtap, limited.base_url(provider)
    wait_for_window(MINUTE)
    before = len(mock.seen)
    probes = [new_probe() for _ in range(3)]
    with in_one_window(MINUTE):
        for probe in probes[:2]:
            assert call_json(provider, base_url, probe) == JSON_TEXT
        err = refused(provider, base_url, probes[2])
    assert "requests_per_minute" in err.message and CLIENT in err.message, err.message
    retry_after = int(err.response.headers["retry-after"])
    assert 1 <= retry_after <= 60, retry_after
    assert err.response.headers.get("x-should-retry") == "true", "a rate limit frees up: retrying later helps"

    assert [len(mock.requests_for(p)) for p in probes] == [1, 1, 0], "the refused call never reached the provider"
    assert len(mock.seen) - before == 2, "the mock received only two requests"

    for probe in probes[:2]:
        success_record(llmtap, probe)
    assert_refusal_record(llmtap, probes[2], "requests_per_minute", provider)
    assert metric(llmtap, "llmtap_limit_refusals_total", client=CLIENT, limit="requests_per_minute") == 1


@pytest.mark.parametrize("provider", PROVIDERS, ids=PROVIDER_IDS)
def test_output_tokens_budget_used_up_by_one_call(provider: Provider, start_limited: StartLimited) -> None:
    """output_tokens_per_hour below one answer's output: that call goes through (a call in flight
    is never cut) and is charged; the next is RateLimitError with x-should-retry: false (a used-up
    budget renews only with the hour)."""
    limit = provider.json_output_tokens - 2
    limited = start_limited(f"output_tokens_per_hour = {limit}")
    mock, llmtap, base_url = limited.mock, limited.llmtap, limited.base_url(provider)
    wait_for_window(HOUR)
    first, second = new_probe(), new_probe()
    assert call_json(provider, base_url, first) == JSON_TEXT
    # The charge lands when the answer's usage is known; the record is written after it.
    attrs = success_record(llmtap, first)
    assert attrs["gen_ai.usage.output_tokens"] == provider.json_output_tokens > limit
    assert attrs.get("llmtap.usage.estimated") in (None, False), "the provider reported its usage"

    err = refused(provider, base_url, second)
    assert "output_tokens_per_hour" in err.message and CLIENT in err.message, err.message
    assert err.response.headers.get("x-should-retry") == "false", "retrying this hour cannot help"
    assert 1 <= int(err.response.headers["retry-after"]) <= HOUR
    assert mock.requests_for(second) == []
    assert_refusal_record(llmtap, second, "output_tokens_per_hour", provider)


@pytest.mark.parametrize("provider", PROVIDERS, ids=PROVIDER_IDS)
def test_cost_of_a_priced_model_and_the_daily_cost_budget(provider: Provider, start_limited: StartLimited) -> None:
    """A priced model's record carries llmtap.cost.usd (> 0, as prices.toml makes it); that cost
    is charged to cost_usd_per_day, set below it, so the next call is refused, and its 429 record
    has llmtap.limit = cost_usd_per_day."""
    budget = 0.000005  # 5 millionths of a dollar: below either answer's cost
    assert provider.json_cost > budget
    limited = start_limited(f"cost_usd_per_day = {budget}")
    mock, llmtap, base_url = limited.mock, limited.llmtap, limited.base_url(provider)
    wait_for_window(DAY)
    first, second = new_probe(), new_probe()
    assert call_json(provider, base_url, first) == JSON_TEXT
    attrs = success_record(llmtap, first)
    cost = attrs.get("llmtap.cost.usd")
    assert isinstance(cost, float) and cost > 0, f"llmtap.cost.usd = {cost!r} for {provider.model}"
    assert cost == pytest.approx(provider.json_cost, rel=1e-9), "the cost prices.toml gives the mock's usage"
    assert metric(llmtap, "llmtap_cost_usd_total", client=CLIENT) == pytest.approx(cost, rel=1e-9)

    err = refused(provider, base_url, second)
    assert "cost_usd_per_day" in err.message and CLIENT in err.message, err.message
    assert err.response.headers.get("x-should-retry") == "false"
    assert mock.requests_for(second) == []
    assert_refusal_record(llmtap, second, "cost_usd_per_day", provider)
    assert metric(llmtap, "llmtap_limit_refusals_total", client=CLIENT, limit="cost_usd_per_day") == 1


def test_openai_stream_without_include_usage_is_charged_an_estimate(start_limited: StartLimited) -> None:
    """An OpenAI stream without stream_options.include_usage reports no usage: llmtap charges an
    estimate from its bytes (llmtap.usage.estimated = true, gen_ai.usage.* left out), which uses up
    output_tokens_per_hour, so the next call is refused. The mock pads this stream with 12 KB of
    content: about 3000 tokens at 4 bytes a token, above the budget of 2000."""
    budget, padding = 2000, 12_000
    limited = start_limited(f"output_tokens_per_hour = {budget}")
    mock, llmtap, base_url = limited.mock, limited.llmtap, limited.base_url(OPENAI)
    wait_for_window(HOUR)
    first, second = new_probe(), new_probe()
    mock.pad_stream(first, padding)
    mock.release(first)  # no gate: this test is not about incremental delivery
    with _openai(base_url, first) as client:
        stream = client.chat.completions.create(model=OPENAI.model, max_completion_tokens=64, stream=True,
                                                messages=[{"role": "user", "content": f"ping {first}"}])
        with stream:
            chunks = list(stream)
    assert all(c.usage is None for c in chunks), "no usage without include_usage"
    text = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
    assert text == STREAM_TEXT + filler_text(padding)
    [seen] = mock.requests_for(first)
    assert seen.stream and "stream_options" not in seen.body

    attrs = success_record(llmtap, first)
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["llmtap.usage.estimated"] is True
    assert "gen_ai.usage.output_tokens" not in attrs and "gen_ai.usage.input_tokens" not in attrs, \
        "gen_ai.usage.* stays what the provider said: nothing"
    cost = attrs.get("llmtap.cost.usd")
    assert isinstance(cost, float) and cost >= padding / 4 * 0.60 / 1e6, f"the estimate is priced: {cost!r}"

    err = refused(OPENAI, base_url, second)
    assert "output_tokens_per_hour" in err.message and CLIENT in err.message, err.message
    assert err.response.headers.get("x-should-retry") == "false"
    assert mock.requests_for(second) == []
    assert_refusal_record(llmtap, second, "output_tokens_per_hour", OPENAI)


def test_concurrent_calls_refuses_while_a_stream_is_open(start_limited: StartLimited) -> None:
    """concurrent_calls = 1: while an Anthropic stream is open (the mock holds its tail), a second
    call is RateLimitError naming concurrent_calls, with x-should-retry: true; once the stream has
    ended (its record written), the place is free again."""
    limited = start_limited("concurrent_calls = 1")
    mock, llmtap, base_url = limited.mock, limited.llmtap, limited.base_url(ANTHROPIC)
    streaming, during, after = new_probe(), new_probe(), new_probe()
    outcome: list[Any] = []  # the RateLimitError, or what went wrong instead

    def on_first() -> None:
        try:
            outcome.append(refused(ANTHROPIC, base_url, during))
        except BaseException as e:  # noqa: BLE001 - reported by the test's thread below
            outcome.append(e)
        finally:
            mock.release(streaming)

    with _anthropic(base_url, streaming) as client:
        stream = client.messages.create(model=ANTHROPIC.model, max_tokens=64, stream=True,
                                        messages=[{"role": "user", "content": f"ping {streaming}"}])
        events = []
        with stream:
            for event in stream:
                if not events:
                    # The mock holds the rest until release: the stream is still open here.
                    threading.Thread(target=on_first, daemon=True).start()
                events.append(event)
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == STREAM_TEXT
    [seen] = mock.requests_for(streaming)
    assert seen.released_by == "ack", "the second call was made (and refused) while the stream was held open"
    assert len(outcome) == 1, "the call made during the stream has its answer"
    err = outcome[0]
    if not isinstance(err, ANTHROPIC.rate_limit_error):
        raise AssertionError(f"the call made during the stream was not refused as it should be: {err!r}") from err
    assert "concurrent_calls" in err.message and CLIENT in err.message, err.message
    assert err.response.headers.get("x-should-retry") == "true"
    assert mock.requests_for(during) == []
    assert_refusal_record(llmtap, during, "concurrent_calls", ANTHROPIC)

    success_record(llmtap, streaming)
    assert call_json(ANTHROPIC, base_url, after) == JSON_TEXT, "the place came back when the stream ended"


# A limit refusal is answered without reading the request body, so llmtap closes the HTTP/1
# connection after it and says so (`Connection: close`): a client that keeps connections alive
# (httpx does) then opens a new one for its next call instead of writing into a closed socket.


@pytest.mark.parametrize("way", ["proxy", "base-url"])
@pytest.mark.parametrize("provider", PROVIDERS, ids=PROVIDER_IDS)
def test_one_client_over_kept_alive_connections(provider: Provider, way: str, start_limited: StartLimited) -> None:
    """An agent holds one SDK client: its calls share kept-alive connections. With
    requests_per_minute = 2 and a large prompt (a body llmtap does not read when it refuses), ten
    calls are two answers and eight RateLimitErrors: no refusal leaves the connection unusable
    (which max_retries=0 would surface as APIConnectionError)."""
    limited = start_limited("requests_per_minute = 2", way)
    mock, llmtap, base_url = limited.mock, limited.llmtap, limited.base_url(provider)
    wait_for_window(MINUTE)
    padding = "x" * 64_000
    probes = [new_probe() for _ in range(10)]
    outcomes: list[str] = []
    if provider is ANTHROPIC:
        client: Any = anthropic.Anthropic(api_key=API_KEY, base_url=base_url, max_retries=0, timeout=20)
    else:
        client = openai.OpenAI(api_key=API_KEY, base_url=base_url, max_retries=0, timeout=20)
    with client, in_one_window(MINUTE):
        for probe in probes:
            prompt = [{"role": "user", "content": f"ping {probe} {padding}"}]
            try:
                if provider is ANTHROPIC:
                    client.messages.create(model=provider.model, max_tokens=64, messages=prompt,
                                           extra_headers={"x-request-id": probe})
                else:
                    client.chat.completions.create(model=provider.model, messages=prompt,
                                                   extra_headers={"x-request-id": probe})
                outcomes.append("ok")
            except (anthropic.APIError, openai.APIError) as e:
                outcomes.append(type(e).__name__)
        assert outcomes == ["ok", "ok"] + ["RateLimitError"] * 8
    assert [len(mock.requests_for(p)) for p in probes] == [1, 1] + [0] * 8
    for probe in probes[2:]:
        assert_refusal_record(llmtap, probe, "requests_per_minute", provider)


@pytest.mark.parametrize("provider", PROVIDERS, ids=PROVIDER_IDS)
def test_a_used_up_budget_is_not_retried_by_an_sdk_that_retries(provider: Provider, start_limited: StartLimited) -> None:
    """The SDKs' default is to retry a 429 after retry-after; x-should-retry: false (a used-up
    budget) tells them not to. With max_retries=2, the refused call still raises RateLimitError at
    once, and llmtap saw it once."""
    limited = start_limited(f"output_tokens_per_hour = {provider.json_output_tokens - 2}")
    llmtap, base_url = limited.llmtap, limited.base_url(provider)
    wait_for_window(HOUR)
    first, second = new_probe(), new_probe()
    assert call_json(provider, base_url, first) == JSON_TEXT
    success_record(llmtap, first)
    if provider is ANTHROPIC:
        client: Any = anthropic.Anthropic(api_key=API_KEY, base_url=base_url, max_retries=2, timeout=20)
    else:
        client = openai.OpenAI(api_key=API_KEY, base_url=base_url, max_retries=2, timeout=20)
    started = time.monotonic()
    with client, pytest.raises(provider.rate_limit_error) as info:
        prompt = [{"role": "user", "content": f"ping {second}"}]
        if provider is ANTHROPIC:
            client.messages.create(model=provider.model, max_tokens=64, messages=prompt,
                                   extra_headers={"x-request-id": second})
        else:
            client.chat.completions.create(model=provider.model, messages=prompt, extra_headers={"x-request-id": second})
    elapsed = time.monotonic() - started
    assert info.value.response.headers.get("x-should-retry") == "false"
    assert elapsed < 5, f"the SDK waited {elapsed:.1f} s: it retried"
    assert_refusal_record(llmtap, second, "output_tokens_per_hour", provider)
    # A retry would have been sent within the SDK's first backoff (about 0.5 s); its record would
    # follow the first one's.
    time.sleep(2.0)
    assert len(llmtap.lines_mentioning(second)) == 1, "one attempt only"


def _http1_post(sock: Any, path: str, body: bytes, pause_s: float) -> None:
    """A POST whose body follows its head after ``pause_s`` (as httpx sends a large body: in writes of its own)."""
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                  f"authorization: Bearer {API_KEY}\r\ncontent-length: {len(body)}\r\n\r\n").encode())
    time.sleep(pause_s)
    sock.sendall(body)


def _http1_response(sock: Any) -> tuple[int, dict[str, str]] | None:
    """The status and headers of one response with a content-length body; None when the
    connection ended first."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        while len(rest) < int(headers.get("content-length", "0")):
            chunk = sock.recv(65536)
            if not chunk:
                return None
            rest += chunk
    except (ConnectionResetError, BrokenPipeError):
        return None
    return int(lines[0].split()[1]), headers


def test_a_limit_refusal_keeps_the_connection_or_says_it_closes(start_limited: StartLimited) -> None:
    """The protocol-level form of the keep-alive test, deterministic: on a base-URL route (plain
    HTTP/1.1), a call whose body follows its head by 0.2 s is refused (requests_per_minute = 1);
    the 429 must either say ``Connection: close`` or leave the connection usable for the next call."""
    import socket

    limited = start_limited("requests_per_minute = 1", "base-url")
    port = limited.llmtap.reverse_port
    assert port is not None
    wait_for_window(MINUTE)
    path = "/openai/v1/chat/completions"
    body = json.dumps({"model": OPENAI.model, "messages": [{"role": "user", "content": "ping"}]}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        _http1_post(sock, path, body, 0)
        first = _http1_response(sock)
        assert first is not None and first[0] == 200, first
        _http1_post(sock, path, body, 0.2)
        refusal = _http1_response(sock)
        assert refusal is not None and refusal[0] == 429, refusal
        if refusal[1].get("connection", "").lower() == "close":
            return  # the client knows not to reuse the connection
        try:
            _http1_post(sock, path, body, 0)
        except (ConnectionResetError, BrokenPipeError):
            pass
        again = _http1_response(sock)
        assert again is not None, "llmtap closed a connection its 429 did not say it would close"
        assert again[0] == 429
