"""A stand-in for a code sandbox: it tries a few URLs through llmtap and prints what came back.

Its profile ("code" in ../llmtap/policy.toml) allows the LLM APIs and the package registries only:
the package index and the LLM calls go through, the rest is refused by llmtap (403), each with an
audit record. The LLM calls are also recorded as calls, with this sandbox's llmtap.client.name.

It knows nothing about llmtap: HTTPS_PROXY (with this sandbox's proxy credentials) and SSL_CERT_FILE
(the system roots plus llmtap's CA, built by the compose command), set in compose.yaml, do it all;
`pip install` inside the container works the same way. Its network is internal: without llmtap it
reaches nothing. It holds no API key: ANTHROPIC_API_KEY and OPENAI_API_KEY are the sentinel
"llmtap-managed", sent the way the SDKs send a key, and llmtap swaps it for the real key (which only
llmtap holds, ../llmtap/keys.toml) on the way to that provider alone.

Env: SANDBOX_INTERVAL_SECONDS (0 = try once, then idle), ANTHROPIC_API_KEY, OPENAI_API_KEY.
"""

import os
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

URLS = [
    "https://pypi.org/simple/pip/",  # allowed: a package registry (tunnelled)
    "https://api.anthropic.com/v1/models",  # allowed: an LLM API (intercepted, recorded, key swapped in)
    "https://api.openai.com/v1/models",  # allowed: likewise, the key as Authorization: Bearer
    "https://example.com/",  # denied: no rule allows it
    "http://169.254.169.254/latest/meta-data/",  # denied: not allowed, and a private address
]


def headers_for(url: str) -> dict:
    """What an SDK would send: the (sentinel) key of that provider, if one is set."""
    host = urllib.parse.urlsplit(url).hostname
    if host == "api.anthropic.com":
        key = os.environ.get("ANTHROPIC_API_KEY")
        return {"anthropic-version": "2023-06-01", **({"x-api-key": key} if key else {})}
    if host == "api.openai.com":
        key = os.environ.get("OPENAI_API_KEY")
        return {"authorization": f"Bearer {key}"} if key else {}
    return {}


def try_url(url: str) -> str:
    req = urllib.request.Request(url, headers=headers_for(url))
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return f"{url}: HTTP {res.status}"
    except urllib.error.HTTPError as err:
        why = err.headers.get("x-llmtap-error")
        return f"{url}: HTTP {err.code}" + (f" (refused by llmtap: {why})" if why else "")
    except (urllib.error.URLError, OSError) as err:
        # A refused CONNECT surfaces as "Tunnel connection failed: 403 Forbidden".
        return f"{url}: failed: {getattr(err, 'reason', err)}"


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    interval = float(os.environ.get("SANDBOX_INTERVAL_SECONDS") or 0)
    while True:
        for url in URLS:
            print(try_url(url), flush=True)
        if interval <= 0:
            break
        time.sleep(interval)
    print("done; idling (set SANDBOX_INTERVAL_SECONDS to repeat, or `docker compose restart code-sandbox`).", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
