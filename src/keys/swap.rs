//! The sentinel swap on one request: find the credentials where provider SDKs put them,
//! replace the granted sentinel with the real key in the same place and scheme, refuse what
//! must not leave, and flag credentials that look like real keys a sandbox should not hold.

use http::HeaderValue;
use http::header::{AUTHORIZATION, HeaderName};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use super::{KeyEntry, KeySet};

/// Header names whose whole value is the credential.
const KEY_HEADERS: [&str; 3] = ["x-api-key", "api-key", "x-goog-api-key"];
/// The query parameter Gemini takes a key in.
const KEY_QUERY_PARAM: &str = "key";
/// Unreserved characters (RFC 3986) stay as they are in a swapped query value.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How the request leaves llmtap: only verified TLS ever carries a real key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tls,
    Cleartext,
}

/// What the keys did to a request that went on: `llmtap.key.injected`, `llmtap.key.foreign`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyUse {
    pub injected: bool,
    pub foreign: bool,
}

/// Why a request was answered `403` before it left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// A credential other than the sentinel to a host with `require_sentinel`.
    ForeignKey,
    /// A sentinel of this host whose key is not granted to this client.
    KeyNotGranted,
    /// A sentinel for a keyed host over plain HTTP: the key never goes in cleartext.
    Cleartext,
}

impl RefusalKind {
    /// `x-llmtap-error` and `error.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::ForeignKey => "foreign_key",
            RefusalKind::KeyNotGranted => "key_not_granted",
            RefusalKind::Cleartext => "key_cleartext",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRefusal {
    pub kind: RefusalKind,
    pub reason: String,
    /// The request carried a credential that looks like a real provider key.
    pub foreign: bool,
}

/// Where a credential was found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// The `index`-th value of header `name`; `bearer`: after `Bearer ` in `authorization`.
    Header {
        name: HeaderName,
        index: usize,
        bearer: bool,
    },
    /// The `index`-th `&`-separated segment of the query.
    Query { index: usize },
}

impl Place {
    fn describe(&self) -> String {
        match self {
            Place::Header { name, .. } => format!("header {name}"),
            Place::Query { .. } => format!("query parameter {KEY_QUERY_PARAM}"),
        }
    }
}

struct Credential {
    place: Place,
    value: String,
}

/// Swaps the granted sentinel for the real key, or refuses. `looks_real` tells whether a
/// value has the shape of a real key (the redaction patterns). With no keys configured
/// nothing is looked at: every request goes on unchanged.
pub fn apply(
    keys: &KeySet,
    host: &str,
    client: &str,
    transport: Transport,
    parts: &mut http::request::Parts,
    looks_real: &dyn Fn(&str) -> bool,
) -> Result<KeyUse, KeyRefusal> {
    if keys.is_empty() {
        return Ok(KeyUse::default());
    }
    let credentials = find_credentials(parts);
    if credentials.is_empty() {
        return Ok(KeyUse::default());
    }
    let granted = keys.granted(host, client);
    let required = keys.for_host(host).any(|e| e.require_sentinel);
    let mut used = KeyUse::default();
    let mut refusal: Option<(RefusalKind, String)> = None;
    let mut swaps = Vec::new();
    for credential in credentials {
        let place = credential.place.describe();
        let value = credential.value.as_str();
        if granted.is_some_and(|g| g.sentinel == value) {
            swaps.push(credential.place);
        } else if keys.for_host(host).any(|e| e.sentinel == value) {
            refusal.get_or_insert((
                RefusalKind::KeyNotGranted,
                format!("client {client} holds a sentinel for {host} ({place}), but no key for {host} is granted to it"),
            ));
        } else {
            let real = !keys.is_any_sentinel(value) && looks_real(value);
            used.foreign |= real;
            if required {
                let what = if real {
                    "what looks like a real provider key"
                } else {
                    "a credential that is not its sentinel"
                };
                refusal.get_or_insert((
                    RefusalKind::ForeignKey,
                    format!("{host} takes only llmtap's sentinel, and the request carries {what} ({place})"),
                ));
            }
        }
    }
    if refusal.is_none() && transport == Transport::Cleartext && !swaps.is_empty() {
        refusal = Some((
            RefusalKind::Cleartext,
            format!("the key for {host} is sent only over TLS; this request is plain HTTP"),
        ));
    }
    if let Some((kind, reason)) = refusal {
        return Err(KeyRefusal {
            kind,
            reason,
            foreign: used.foreign,
        });
    }
    if let Some(entry) = granted
        && !swaps.is_empty()
    {
        swap(parts, entry, &swaps);
        used.injected = true;
    }
    Ok(used)
}

fn find_credentials(parts: &http::request::Parts) -> Vec<Credential> {
    let mut found = Vec::new();
    for (index, value) in parts.headers.get_all(AUTHORIZATION).iter().enumerate() {
        let text = String::from_utf8_lossy(value.as_bytes());
        let text = text.trim();
        let (token, bearer) = match strip_bearer(text) {
            Some(token) => (token, true),
            None => (text, false),
        };
        if !token.is_empty() {
            found.push(Credential {
                place: Place::Header {
                    name: AUTHORIZATION,
                    index,
                    bearer,
                },
                value: token.to_string(),
            });
        }
    }
    for name in KEY_HEADERS {
        for (index, value) in parts.headers.get_all(name).iter().enumerate() {
            let text = String::from_utf8_lossy(value.as_bytes());
            let text = text.trim();
            if !text.is_empty() {
                found.push(Credential {
                    place: Place::Header {
                        name: HeaderName::from_static(name),
                        index,
                        bearer: false,
                    },
                    value: text.to_string(),
                });
            }
        }
    }
    if let Some(query) = parts.uri.query() {
        for (index, segment) in query.split('&').enumerate() {
            let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
            if percent_decode_str(name).decode_utf8_lossy() == KEY_QUERY_PARAM && !value.is_empty()
            {
                found.push(Credential {
                    place: Place::Query { index },
                    value: percent_decode_str(value).decode_utf8_lossy().into_owned(),
                });
            }
        }
    }
    found
}

/// The token of `Bearer <token>` (the scheme is case-insensitive).
fn strip_bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start())
}

/// Replaces the sentinel at each place, keeping every other header value and query segment
/// byte for byte.
fn swap(parts: &mut http::request::Parts, entry: &KeyEntry, places: &[Place]) {
    let real = entry.secret.expose();
    let mut names: Vec<&HeaderName> = places
        .iter()
        .filter_map(|p| match p {
            Place::Header { name, .. } => Some(name),
            Place::Query { .. } => None,
        })
        .collect();
    names.dedup();
    for name in names {
        let values: Vec<HeaderValue> = parts.headers.get_all(name).iter().cloned().collect();
        parts.headers.remove(name);
        for (index, value) in values.into_iter().enumerate() {
            let place = places.iter().find_map(|p| match p {
                Place::Header {
                    name: n,
                    index: i,
                    bearer,
                } if n == name && *i == index => Some(*bearer),
                _ => None,
            });
            let value = match place {
                Some(bearer) => secret_header(real, bearer).unwrap_or(value),
                None => value,
            };
            parts.headers.append(name.clone(), value);
        }
    }
    let query_places: Vec<usize> = places
        .iter()
        .filter_map(|p| match p {
            Place::Query { index } => Some(*index),
            Place::Header { .. } => None,
        })
        .collect();
    if !query_places.is_empty() {
        swap_query(parts, real, &query_places);
    }
}

fn secret_header(real: &str, bearer: bool) -> Option<HeaderValue> {
    let text = if bearer {
        format!("Bearer {real}")
    } else {
        real.to_string()
    };
    // The value was checked at load (visible ASCII), so this cannot fail; if it did, the
    // sentinel would go on rather than a broken header.
    let mut value = HeaderValue::from_str(&text).ok()?;
    // Never indexed by HPACK: the key stays out of the connection's shared header table.
    value.set_sensitive(true);
    Some(value)
}

fn swap_query(parts: &mut http::request::Parts, real: &str, indexes: &[usize]) {
    let Some(pq) = parts.uri.path_and_query() else {
        return;
    };
    let Some(query) = pq.query() else {
        return;
    };
    let encoded = utf8_percent_encode(real, QUERY_VALUE).to_string();
    let segments: Vec<String> = query
        .split('&')
        .enumerate()
        .map(|(index, segment)| {
            if indexes.contains(&index) {
                let name = segment.split_once('=').map_or(segment, |(n, _)| n);
                format!("{name}={encoded}")
            } else {
                segment.to_string()
            }
        })
        .collect();
    let new_pq = format!("{}?{}", pq.path(), segments.join("&"));
    let mut uri_parts = parts.uri.clone().into_parts();
    let Ok(new_pq) = new_pq.parse() else {
        return;
    };
    uri_parts.path_and_query = Some(new_pq);
    if let Ok(uri) = http::Uri::from_parts(uri_parts) {
        parts.uri = uri;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL_A: &str = "sk-ant-api03-REALREALREALREAL";
    const REAL_O: &str = "sk-proj-REALREALREALREAL";

    fn keys(require: bool) -> KeySet {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let o = dir.path().join("o");
        let g = dir.path().join("g");
        std::fs::write(&a, REAL_A).unwrap();
        std::fs::write(&o, REAL_O).unwrap();
        std::fs::write(&g, "AIzaREAL+/key").unwrap();
        let text = format!(
            r#"
            [[key]]
            host = "api.anthropic.com"
            from_file = "{}"
            require_sentinel = {require}
            clients = ["code"]
            [[key]]
            host = "api.openai.com"
            from_file = "{}"
            sentinel = "openai-sentinel"
            [[key]]
            host = "generativelanguage.googleapis.com"
            from_file = "{}"
            "#,
            a.display(),
            o.display(),
            g.display()
        );
        KeySet::from_toml(&text, "k", &|_| None).unwrap()
    }

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut req = http::Request::builder().uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).unwrap().into_parts().0
    }

    fn looks_real(v: &str) -> bool {
        v.starts_with("sk-ant-") || v.starts_with("sk-proj-") || v.starts_with("AIza")
    }

    #[test]
    fn the_granted_sentinel_is_swapped_in_its_own_place_and_nothing_else_changes() {
        let keys = keys(false);
        let mut p = parts(
            "https://api.anthropic.com/v1/messages?beta=true",
            &[
                ("x-api-key", "llmtap-managed"),
                ("anthropic-version", "2023-06-01"),
                ("x-other", "llmtap-managed"),
            ],
        );
        let before = p.headers.clone();
        let used = apply(
            &keys,
            "api.anthropic.com",
            "code",
            Transport::Tls,
            &mut p,
            &looks_real,
        )
        .unwrap();
        assert_eq!(
            used,
            KeyUse {
                injected: true,
                foreign: false
            }
        );
        assert_eq!(p.headers["x-api-key"], REAL_A);
        assert!(p.headers["x-api-key"].is_sensitive());
        assert_eq!(p.headers["x-other"], "llmtap-managed");
        assert_eq!(p.headers["anthropic-version"], before["anthropic-version"]);
        assert_eq!(p.uri, "https://api.anthropic.com/v1/messages?beta=true");
    }

    #[test]
    fn bearer_and_query_places_keep_their_scheme_and_their_neighbours() {
        let keys = keys(false);
        let mut p = parts(
            "https://api.openai.com/v1/chat/completions",
            &[("authorization", "bearer openai-sentinel")],
        );
        apply(
            &keys,
            "api.openai.com",
            "x",
            Transport::Tls,
            &mut p,
            &looks_real,
        )
        .unwrap();
        assert_eq!(
            p.headers["authorization"],
            format!("Bearer {REAL_O}").as_str()
        );

        let mut p = parts(
            "https://generativelanguage.googleapis.com/v1beta/models/m:streamGenerateContent?alt=sse&key=llmtap-managed&x=%20y",
            &[],
        );
        let used = apply(
            &keys,
            "generativelanguage.googleapis.com",
            "x",
            Transport::Tls,
            &mut p,
            &looks_real,
        )
        .unwrap();
        assert!(used.injected);
        assert_eq!(p.uri.query(), Some("alt=sse&key=AIzaREAL%2B%2Fkey&x=%20y"));
        assert_eq!(p.uri.path(), "/v1beta/models/m:streamGenerateContent");
    }

    #[test]
    fn a_sentinel_to_another_host_goes_out_unchanged() {
        let keys = keys(true);
        let mut p = parts(
            "https://telemetry.example.com/x?key=llmtap-managed",
            &[
                ("x-api-key", "llmtap-managed"),
                ("authorization", "Bearer openai-sentinel"),
            ],
        );
        let before = (p.headers.clone(), p.uri.clone());
        let used = apply(
            &keys,
            "telemetry.example.com",
            "code",
            Transport::Tls,
            &mut p,
            &looks_real,
        )
        .unwrap();
        assert_eq!(used, KeyUse::default());
        assert_eq!((p.headers, p.uri), before);
        // Nor to a subdomain or a look-alike of a keyed host.
        let mut p = parts("https://x", &[("x-api-key", "llmtap-managed")]);
        for host in [
            "eu.api.anthropic.com",
            "api.anthropic.com.evil.com",
            "api.anthropic.co",
        ] {
            apply(&keys, host, "code", Transport::Tls, &mut p, &looks_real).unwrap();
            assert_eq!(p.headers["x-api-key"], "llmtap-managed", "{host}");
        }
    }

    #[test]
    fn cleartext_not_granted_and_foreign_credentials_are_refused() {
        let keys = keys(true);
        let mut p = parts(
            "http://api.anthropic.com/v1/messages",
            &[("x-api-key", "llmtap-managed")],
        );
        let err = apply(
            &keys,
            "api.anthropic.com",
            "code",
            Transport::Cleartext,
            &mut p,
            &looks_real,
        )
        .unwrap_err();
        assert_eq!(err.kind, RefusalKind::Cleartext);
        assert_eq!(p.headers["x-api-key"], "llmtap-managed");

        let err = apply(
            &keys,
            "api.anthropic.com",
            "browser",
            Transport::Tls,
            &mut p,
            &looks_real,
        )
        .unwrap_err();
        assert_eq!(err.kind, RefusalKind::KeyNotGranted);

        let mut p = parts(
            "https://api.anthropic.com/v1/messages",
            &[("x-api-key", "sk-ant-api03-stolen-from-elsewhere")],
        );
        let err = apply(
            &keys,
            "api.anthropic.com",
            "code",
            Transport::Tls,
            &mut p,
            &looks_real,
        )
        .unwrap_err();
        assert_eq!(err.kind, RefusalKind::ForeignKey);
        assert!(err.foreign);
        assert!(!err.reason.contains("stolen"), "{}", err.reason);

        // A sentinel plus a second, real credential in another place is still refused.
        let mut p = parts(
            "https://api.anthropic.com/v1/messages",
            &[
                ("x-api-key", "llmtap-managed"),
                ("authorization", "Bearer whatever"),
            ],
        );
        let err = apply(
            &keys,
            "api.anthropic.com",
            "code",
            Transport::Tls,
            &mut p,
            &looks_real,
        )
        .unwrap_err();
        assert_eq!(err.kind, RefusalKind::ForeignKey);
        assert!(!err.foreign);
        assert_eq!(
            p.headers["x-api-key"], "llmtap-managed",
            "nothing swapped on a refusal"
        );
    }

    #[test]
    fn a_real_looking_key_without_require_sentinel_is_flagged_and_passes() {
        let keys = keys(false);
        let mut p = parts(
            "https://api.openai.com/v1/x",
            &[("authorization", "Bearer sk-proj-mine-own-key-xxxxxxx")],
        );
        let used = apply(
            &keys,
            "api.openai.com",
            "x",
            Transport::Tls,
            &mut p,
            &looks_real,
        )
        .unwrap();
        assert_eq!(
            used,
            KeyUse {
                injected: false,
                foreign: true
            }
        );
        assert_eq!(
            p.headers["authorization"],
            "Bearer sk-proj-mine-own-key-xxxxxxx"
        );
        // On an intercepted host with no key entry too.
        let mut p = parts(
            "https://api.mistral.ai/v1/x",
            &[("x-api-key", "sk-ant-api03-abcdefgh")],
        );
        let used = apply(
            &keys,
            "api.mistral.ai",
            "x",
            Transport::Tls,
            &mut p,
            &looks_real,
        )
        .unwrap();
        assert!(used.foreign);
        // With no keys configured nothing is looked at.
        let used = apply(
            &KeySet::default(),
            "api.mistral.ai",
            "x",
            Transport::Tls,
            &mut p,
            &looks_real,
        )
        .unwrap();
        assert_eq!(used, KeyUse::default());
    }

    #[test]
    fn repeated_headers_keep_their_order() {
        let keys = keys(false);
        let mut p = parts(
            "https://api.openai.com/v1/x",
            &[
                ("api-key", "first"),
                ("api-key", "openai-sentinel"),
                ("api-key", "third"),
            ],
        );
        apply(
            &keys,
            "api.openai.com",
            "x",
            Transport::Tls,
            &mut p,
            &looks_real,
        )
        .unwrap();
        let got: Vec<_> = p
            .headers
            .get_all("api-key")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(got, ["first", REAL_O, "third"]);
    }
}
