"""A loopback HTTPS mock of the provider APIs, in real provider shapes.

  POST /v1/messages          Anthropic Messages, JSON and SSE
  POST /v1/chat/completions  OpenAI Chat Completions, JSON and SSE (the usage chunk only when the
                             request asks with stream_options.include_usage, as the real API does)
  POST /v1/responses         OpenAI Responses, JSON and SSE

Its certificate (from a CA made at run time with the openssl CLI) names api.anthropic.com and
api.openai.com, so llmtap started with ``--resolve NAME:<port>:127.0.0.1 --upstream-ca <ca>`` reaches
it under the real names. Streams are gated: the mock sends the first events, then holds the rest
until the test calls ``release(probe)`` (the client has seen an event) or a bounded wait runs out,
which shows a stream arrives incrementally without any timing threshold.

JSON answers are gzip-compressed when the client accepts it, as the real APIs (behind Cloudflare)
compress them; SSE goes out uncompressed. A request is tied to its test by a probe (``probe_<hex>``) that the client puts in its prompt.

Made with ``expect_keys`` ({host: key}), the mock checks the credential as the real APIs do: an
Anthropic call must carry ``x-api-key: <key>`` or ``Authorization: Bearer <key>`` (the pinned
Anthropic SDKs send an api_key the second way), an OpenAI call ``Authorization: Bearer <key>``;
anything else gets the provider's 401 (which the SDKs raise as AuthenticationError). The request's
``auth`` says which it was, and ``auth_header`` in which header the key came.

``pad_stream(probe, nbytes)`` makes the Chat Completions stream of that probe carry ``nbytes``
more content (``filler_text(nbytes)``, in chunks after the usual ones): a stream long
enough for a byte-based usage estimate to matter.
"""

from __future__ import annotations

import gzip
import json
import re
import secrets
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ANTHROPIC_HOST = "api.anthropic.com"
OPENAI_HOST = "api.openai.com"
PROVIDER_HOSTS = (ANTHROPIC_HOST, OPENAI_HOST)
GATE_TIMEOUT_S = 15.0

# Token counts the mock reports; tests compare llmtap's record against these.
USAGE = {
    "anthropic_json": {"input_tokens": 21, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 1000, "output_tokens": 7},
    # message_start carries the input side and output 1; message_delta the cumulative totals.
    "anthropic_stream_start": {"input_tokens": 12, "cache_creation_input_tokens": 310, "cache_read_input_tokens": 2048, "output_tokens": 1},
    "anthropic_stream_delta": {"input_tokens": 12, "cache_creation_input_tokens": 310, "cache_read_input_tokens": 2048, "output_tokens": 87},
    "openai_chat": {"prompt_tokens": 19, "completion_tokens": 10, "cached_tokens": 4, "reasoning_tokens": 2},
    "openai_chat_stream": {"prompt_tokens": 23, "completion_tokens": 14, "cached_tokens": 0, "reasoning_tokens": 0},
    "openai_responses": {"input_tokens": 37, "cached_tokens": 5, "output_tokens": 11, "reasoning_tokens": 3},
    "openai_responses_stream": {"input_tokens": 41, "cached_tokens": 0, "output_tokens": 13, "reasoning_tokens": 0},
}

STREAM_CHUNKS = ["Hel", "lo", " from", " the", " mock"]
STREAM_TEXT = "".join(STREAM_CHUNKS)
JSON_TEXT = "pong"
PROBE_RE = re.compile(r"probe_[0-9a-f]{12}")


def new_probe() -> str:
    return f"probe_{secrets.token_hex(6)}"


def response_model(requested: str) -> str:
    """The model the mock answers with: the requested one plus a date, as the real APIs do."""
    return f"{requested}-2025-09-29"


# --------------------------------------------------------------------------------------------
# Certificates


def _openssl(args: list[str], cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=20)


def make_provider_certs(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a leaf for the provider names, localhost and 127.0.0.1 (ECDSA P-256)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
              "-subj", "/CN=llmtap-test-provider-mock-ca",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], directory)
    _openssl(["req", "-new", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", f"/CN={ANTHROPIC_HOST}"], directory)
    sans = ",".join(f"DNS:{h}" for h in PROVIDER_HOSTS)
    (directory / "leaf.ext").write_text(
        f"subjectAltName={sans},DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-days", "2",
              "-set_serial", f"0x{secrets.token_hex(8)}", "-extfile", "leaf.ext", "-out", "leaf.pem"], directory)
    return {"ca": directory / "ca.pem", "cert": directory / "leaf.pem", "key": directory / "leaf.key"}


# --------------------------------------------------------------------------------------------
# Provider shapes


def _sse(event: str | None, data: Any) -> bytes:
    body = json.dumps(data, separators=(",", ":"))
    return (f"event: {event}\ndata: {body}\n\n" if event else f"data: {body}\n\n").encode()


def _id(prefix: str, probe: str) -> str:
    return prefix + re.sub(r"[^0-9a-zA-Z]", "", probe or secrets.token_hex(6))


def _anthropic_usage(u: dict[str, int]) -> dict[str, Any]:
    return {
        **u,
        "cache_creation": {"ephemeral_5m_input_tokens": u["cache_creation_input_tokens"], "ephemeral_1h_input_tokens": 0},
        "service_tier": "standard",
    }


def anthropic_json(probe: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": _id("msg_01", probe), "type": "message", "role": "assistant", "model": response_model(body["model"]),
        "content": [{"type": "text", "text": JSON_TEXT}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": _anthropic_usage(USAGE["anthropic_json"]),
    }


def anthropic_stream(probe: str, body: dict[str, Any]) -> tuple[list[bytes], list[bytes]]:
    def delta(text: str) -> bytes:
        return _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})

    head = [
        _sse("message_start", {"type": "message_start", "message": {
            "id": _id("msg_01", probe), "type": "message", "role": "assistant", "model": response_model(body["model"]),
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": _anthropic_usage(USAGE["anthropic_stream_start"])}}),
        _sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        _sse("ping", {"type": "ping"}),
        delta(STREAM_CHUNKS[0]),
    ]
    tail = [
        *(delta(t) for t in STREAM_CHUNKS[1:]),
        _sse("ping", {"type": "ping"}),
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": dict(USAGE["anthropic_stream_delta"])}),
        _sse("message_stop", {"type": "message_stop"}),
    ]
    return head, tail


def _openai_usage(u: dict[str, int]) -> dict[str, Any]:
    return {
        "prompt_tokens": u["prompt_tokens"],
        "completion_tokens": u["completion_tokens"],
        "total_tokens": u["prompt_tokens"] + u["completion_tokens"],
        "prompt_tokens_details": {"cached_tokens": u["cached_tokens"], "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": u["reasoning_tokens"], "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def chat_json(probe: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": _id("chatcmpl-", probe), "object": "chat.completion", "created": int(time.time()),
        "model": response_model(body["model"]),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": JSON_TEXT, "refusal": None, "annotations": []},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": _openai_usage(USAGE["openai_chat"]), "service_tier": "default", "system_fingerprint": "fp_mock",
    }


FILLER_CHUNK = 500  # characters of padding per content chunk


def filler_text(nbytes: int) -> str:
    """The padding ``pad_stream`` adds: ``nbytes`` ASCII characters."""
    words = "lorem ipsum dolor sit amet "
    return (words * (nbytes // len(words) + 1))[:nbytes]


def chat_stream(probe: str, body: dict[str, Any], filler: str = "") -> tuple[list[bytes], list[bytes]]:
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base = {"id": _id("chatcmpl-", probe), "object": "chat.completion.chunk", "created": int(time.time()),
            "model": response_model(body["model"]), "service_tier": "default", "system_fingerprint": "fp_mock"}

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        data = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            data["usage"] = None
        return _sse(None, data)

    head = [chunk({"role": "assistant", "content": "", "refusal": None}, None), chunk({"content": STREAM_CHUNKS[0]}, None)]
    pads = [filler[i:i + FILLER_CHUNK] for i in range(0, len(filler), FILLER_CHUNK)]
    tail = [*(chunk({"content": t}, None) for t in [*STREAM_CHUNKS[1:], *pads]), chunk({}, "stop")]
    if include_usage:
        tail.append(_sse(None, {**base, "choices": [], "usage": _openai_usage(USAGE["openai_chat_stream"])}))
    tail.append(b"data: [DONE]\n\n")
    return head, tail


def _responses_object(probe: str, body: dict[str, Any], status: str, text: str | None, usage: dict[str, int] | None) -> dict[str, Any]:
    output = [] if text is None else [{
        "id": _id("msg_", probe), "type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }]
    return {
        "id": _id("resp_", probe), "object": "response", "created_at": int(time.time()), "status": status,
        "background": False, "error": None, "incomplete_details": None, "instructions": None,
        "max_output_tokens": body.get("max_output_tokens"), "model": response_model(body["model"]), "output": output,
        "parallel_tool_calls": True, "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
        "store": True, "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "truncation": "disabled",
        "usage": None if usage is None else {
            "input_tokens": usage["input_tokens"], "input_tokens_details": {"cached_tokens": usage["cached_tokens"]},
            "output_tokens": usage["output_tokens"], "output_tokens_details": {"reasoning_tokens": usage["reasoning_tokens"]},
            "total_tokens": usage["input_tokens"] + usage["output_tokens"],
        },
        "user": None, "metadata": {},
    }


def responses_json(probe: str, body: dict[str, Any]) -> dict[str, Any]:
    return _responses_object(probe, body, "completed", JSON_TEXT, USAGE["openai_responses"])


def responses_stream(probe: str, body: dict[str, Any]) -> tuple[list[bytes], list[bytes]]:
    item_id = _id("msg_", probe)
    seq = iter(range(1000))

    def ev(kind: str, **data: Any) -> bytes:
        return _sse(kind, {"type": kind, "sequence_number": next(seq), **data})

    def part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": []}

    def item(status: str, content: list[Any]) -> dict[str, Any]:
        return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}

    def delta(d: str) -> bytes:
        return ev("response.output_text.delta", item_id=item_id, output_index=0, content_index=0, delta=d, logprobs=[])

    in_progress = _responses_object(probe, body, "in_progress", None, None)
    head = [
        ev("response.created", response=in_progress),
        ev("response.in_progress", response=in_progress),
        ev("response.output_item.added", output_index=0, item=item("in_progress", [])),
        ev("response.content_part.added", item_id=item_id, output_index=0, content_index=0, part=part("")),
        delta(STREAM_CHUNKS[0]),
    ]
    tail = [
        *(delta(t) for t in STREAM_CHUNKS[1:]),
        ev("response.output_text.done", item_id=item_id, output_index=0, content_index=0, text=STREAM_TEXT, logprobs=[]),
        ev("response.content_part.done", item_id=item_id, output_index=0, content_index=0, part=part(STREAM_TEXT)),
        ev("response.output_item.done", output_index=0, item=item("completed", [part(STREAM_TEXT)])),
        ev("response.completed", response=_responses_object(probe, body, "completed", STREAM_TEXT, USAGE["openai_responses_stream"])),
    ]
    return head, tail


ROUTES = {
    "/v1/messages": (anthropic_json, anthropic_stream),
    "/v1/chat/completions": (chat_json, chat_stream),
    "/v1/responses": (responses_json, responses_stream),
}

# Which provider's key each route takes, and where: (host, ((header, how the key appears in it), ...)).
_ANTHROPIC_AUTH = (ANTHROPIC_HOST, (("x-api-key", "{key}"), ("authorization", "Bearer {key}")))
_OPENAI_AUTH = (OPENAI_HOST, (("authorization", "Bearer {key}"),))
AUTH = {"/v1/messages": _ANTHROPIC_AUTH, "/v1/chat/completions": _OPENAI_AUTH, "/v1/responses": _OPENAI_AUTH}


def auth_error(host: str) -> dict[str, Any]:
    """The 401 body the real API sends for a bad key (no key text in it)."""
    if host == ANTHROPIC_HOST:
        return {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
    return {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": None,
                      "code": "invalid_api_key"}}


# --------------------------------------------------------------------------------------------
# The server


@dataclass
class Seen:
    probe: str
    method: str
    path: str
    host: str
    servername: str
    headers: dict[str, str]
    body: dict[str, Any]
    stream: bool
    encoding: str = "identity"  # how a JSON answer went out
    state: str = "received"  # received | head-sent | tail-sent
    released_by: str | None = None  # ack | timeout
    auth: str = "unchecked"  # unchecked | accepted | rejected (with expect_keys)
    auth_header: str | None = None  # the header the expected key came in


@dataclass
class _Gate:
    event: threading.Event = field(default_factory=threading.Event)


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, addr: tuple[str, int], handler: type, ctx: ssl.SSLContext, mock: "ProviderMock") -> None:
        super().__init__(addr, handler)
        self.ctx = ctx
        self.mock = mock

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away mid-stream (a test that aborts on purpose) is not an error here.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, TimeoutError)):
            super().handle_error(request, client_address)

    def get_request(self):  # type: ignore[override]
        sock, addr = self.socket.accept()
        sock.settimeout(20)
        # The handshake runs in the handler's thread, not in the accept loop.
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _TLSServer

    def setup(self) -> None:
        self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        pass

    def _send_json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> str:
        out = json.dumps(obj).encode()
        accepted = [e.split(";")[0].strip().lower() for e in self.headers.get("accept-encoding", "").split(",")]
        encoding = "gzip" if "gzip" in accepted else "identity"
        if encoding == "gzip":
            out = gzip.compress(out)
        self.send_response(status)
        self.send_header("content-type", "application/json")
        if encoding != "identity":
            self.send_header("content-encoding", encoding)
        self.send_header("content-length", str(len(out)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(out)
        return encoding

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def do_POST(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's name
        mock = self.server.mock
        raw = self.rfile.read(int(self.headers.get("content-length") or 0)).decode("utf-8", "replace")
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        path = urlsplit(self.path).path
        m = PROBE_RE.search(raw)
        seen = Seen(
            probe=m.group(0) if m else "",
            method="POST",
            path=path,
            host=self.headers.get("host", ""),
            servername=mock.sni.get(id(self.request), ""),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body if isinstance(body, dict) else {},
            stream=isinstance(body, dict) and body.get("stream") is True,
        )
        with mock.lock:
            mock.seen.append(seen)
        route = ROUTES.get(path)
        if route is None or not seen.body.get("model"):
            self._send_json(404, {"type": "error", "error": {"type": "not_found_error", "message": f"mock has no POST {self.path}"}})
            return
        as_json, as_stream = route
        if mock.expect_keys is not None:
            host, places = AUTH[path]
            key = mock.expect_keys[host]
            seen.auth_header = next((h for h, shape in places if seen.headers.get(h) == shape.format(key=key)), None)
            seen.auth = "rejected" if seen.auth_header is None else "accepted"
            if seen.auth == "rejected":
                self._send_json(401, auth_error(host))
                return
        request_id = {"request-id": f"req_{seen.probe}"}
        if not seen.stream:
            seen.encoding = self._send_json(200, as_json(seen.probe, seen.body), request_id)
            seen.state = "tail-sent"
            return
        padding = mock.stream_padding.get(seen.probe, 0) if seen.probe else 0
        if padding and path == "/v1/chat/completions":
            head, tail = chat_stream(seen.probe, seen.body, filler_text(padding))
        else:
            head, tail = as_stream(seen.probe, seen.body)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", request_id["request-id"])
        self.end_headers()
        # Set before the head goes out: the client may see its first event before this thread
        # runs again; what matters is that the tail is held until it has.
        seen.state = "head-sent"
        for part in head:
            self._chunk(part)
        released = mock.gate(seen.probe).event.wait(GATE_TIMEOUT_S)
        seen.released_by = "ack" if released else "timeout"
        for part in tail:
            self._chunk(part)
        self.wfile.write(b"0\r\n\r\n")
        seen.state = "tail-sent"


class ProviderMock:
    """The mock on a loopback port from the OS; ``seen`` lists every request it answered."""

    def __init__(self, cert_dir: Path, expect_keys: dict[str, str] | None = None) -> None:
        self.expect_keys = expect_keys
        self.certs = make_provider_certs(cert_dir)
        self.ca_pem = self.certs["ca"]
        self.seen: list[Seen] = []
        self.sni: dict[int, str] = {}
        self.lock = threading.Lock()
        self._gates: dict[str, _Gate] = {}
        self.stream_padding: dict[str, int] = {}  # probe -> extra content bytes (pad_stream)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.certs["cert"], self.certs["key"])
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.sni_callback = self._on_sni
        self._server = _TLSServer(("127.0.0.1", 0), _Handler, ctx, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="provider-mock", daemon=True)
        self._thread.start()

    def _on_sni(self, sslsock: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.sni[id(sslsock)] = name or ""

    def gate(self, probe: str) -> _Gate:
        with self.lock:
            return self._gates.setdefault(probe, _Gate())

    def release(self, probe: str) -> None:
        """Lets the stream for ``probe`` send its tail (idempotent; may come before the request)."""
        self.gate(probe).event.set()

    def pad_stream(self, probe: str, nbytes: int) -> None:
        """The Chat Completions stream for ``probe`` carries ``filler_text(nbytes)`` after its usual text."""
        with self.lock:
            self.stream_padding[probe] = nbytes

    def requests_for(self, probe: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.probe == probe]

    def close(self) -> None:
        with self.lock:
            gates = list(self._gates.values())
        for g in gates:
            g.event.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
