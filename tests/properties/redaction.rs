//! `Redactor`: real-shaped secrets embedded in random text never survive, redaction is
//! idempotent and grows text by a bounded factor, headers go by the allowlist.

use std::sync::OnceLock;

use proptest::collection::vec;
use proptest::prelude::*;

use llmtap::redact::{
    ALWAYS_REDACTED_HEADERS, REDACTED, RedactionConfig, Redactor, percent_decode,
};

use crate::{cases, shared};

fn redactor() -> &'static Redactor {
    static R: OnceLock<Redactor> = OnceLock::new();
    R.get_or_init(|| Redactor::new(&RedactionConfig::default()).unwrap())
}

/// A secret as it appears in text (`text`) and the part that must not survive (`secret`).
#[derive(Debug, Clone)]
struct Secret {
    kind: &'static str,
    text: String,
    secret: String,
}

fn whole(kind: &'static str, s: impl Strategy<Value = String> + 'static) -> BoxedStrategy<Secret> {
    s.prop_map(move |text| Secret {
        kind,
        secret: text.clone(),
        text,
    })
    .boxed()
}

fn concat(parts: Vec<String>) -> String {
    parts.concat()
}

/// Kinds the shipped rules cover today: each must always be redacted.
fn known_secret() -> impl Strategy<Value = Secret> {
    let json_names = &[
        "api_key",
        "API_KEY",
        "api-key",
        "apiKey",
        "apikey",
        "x-api-key",
        "access_token",
        "refresh_token",
        "id_token",
        "client_secret",
        "secret_key",
        "secret",
        "password",
        "Password",
        "authorization",
    ][..];
    prop_oneof![
        whole("anthropic_key", "sk-ant-api03-[A-Za-z0-9_-]{80,95}AA"),
        whole("openai_project_key", "sk-proj-[A-Za-z0-9_-]{40,120}"),
        whole("sk_key", "sk-[A-Za-z0-9]{32,48}"),
        whole("sk_key", "sk-or-v1-[0-9a-f]{64}"),
        whole("sk_key", "sk-svcacct-[A-Za-z0-9_-]{40,80}"),
        whole("google_api_key", "AIza[0-9A-Za-z_-]{35}"),
        whole("aws_access_key_id", "(AKIA|ASIA)[0-9A-Z]{16}"),
        whole("xai_key", "xai-[A-Za-z0-9]{80}"),
        whole("groq_key", "gsk_[A-Za-z0-9]{52}"),
        whole("huggingface_token", "hf_[A-Za-z0-9]{34}"),
        whole(
            "jwt",
            (
                "eyJ[A-Za-z0-9_-]{10,40}",
                "eyJ[A-Za-z0-9_-]{10,80}",
                "[A-Za-z0-9_-]{20,43}"
            )
                .prop_map(|(a, b, c)| format!("{a}.{b}.{c}"))
        ),
        (
            "(Bearer|bearer|BEARER)",
            "[ \t]{1,2}",
            "[A-Za-z0-9._~+/-]{16,64}",
            "={0,2}"
        )
            .prop_map(|(word, space, token, pad)| Secret {
                kind: "bearer_token",
                text: format!("{word}{space}{token}{pad}"),
                secret: token,
            }),
        ("(Basic|basic)", "[A-Za-z0-9+/]{12,40}", "={0,2}").prop_map(|(word, b64, pad)| Secret {
            kind: "basic_auth",
            text: format!("{word} {b64}{pad}"),
            secret: b64,
        }),
        (
            proptest::sample::select(json_names),
            "[ ]{0,2}",
            "[ ]{0,2}",
            vec(
                prop_oneof![
                    6 => "[A-Za-z0-9!#$%&*+,./:;<=>?@^_|~ -]",
                    1 => Just("\\\"".to_string()),
                    1 => Just("\\\\".to_string()),
                    1 => Just("\\u00e9".to_string()),
                    1 => Just("é".to_string()),
                ],
                12..40
            )
            .prop_map(concat),
        )
            .prop_map(|(name, s1, s2, value)| Secret {
                kind: "json_secret_field",
                text: format!("\"{name}\"{s1}:{s2}\"{value}\""),
                secret: value,
            }),
    ]
}

/// Kinds issue 9 item 6 adds (GitHub, GitLab, Slack, Stripe, AWS secret keys, Google OAuth,
/// PEM blocks, `…api_key`/`…token`/`…secret`/`…password` fields). Checked once the rules
/// redact the kind's sample alone: from then on anywhere in any text too.
fn new_secret() -> impl Strategy<Value = Secret> {
    prop_oneof![
        whole("github", "gh[pousr]_[A-Za-z0-9]{36}"),
        whole("github", "github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}"),
        whole("gitlab", "glpat-[A-Za-z0-9_-]{20}"),
        whole(
            "slack",
            "xox[bpa]-[0-9]{10,13}-[0-9]{10,13}-[A-Za-z0-9]{24}"
        ),
        whole("stripe", "(sk|rk)_(live|test)_[A-Za-z0-9]{24,99}"),
        whole("google_oauth", "ya29\\.[A-Za-z0-9_-]{50,150}"),
        whole("google_oauth", "GOCSPX-[A-Za-z0-9_-]{28}"),
        (
            "[A-Za-z0-9/+]{40}",
            proptest::sample::select(
                &[
                    "aws_secret_access_key=",
                    "AWS_SECRET_ACCESS_KEY: ",
                    "\"aws_secret_access_key\": \""
                ][..]
            )
        )
            .prop_map(|(key, head)| Secret {
                kind: "aws_secret_key",
                text: format!("{head}{key}"),
                secret: key,
            }),
        (
            proptest::sample::select(
                &[
                    "PRIVATE KEY",
                    "RSA PRIVATE KEY",
                    "EC PRIVATE KEY",
                    "OPENSSH PRIVATE KEY"
                ][..]
            ),
            vec("[A-Za-z0-9+/]{64}", 2..6),
            "\n|\r\n|\\\\n"
        )
            .prop_map(|(label, lines, nl)| Secret {
                kind: "pem",
                text: format!(
                    "-----BEGIN {label}-----{nl}{}{nl}-----END {label}-----",
                    lines.join(&nl)
                ),
                secret: lines[0].clone(),
            }),
        (
            "[a-z]{2,10}",
            proptest::sample::select(
                &[
                    "_api_key",
                    "ApiKey",
                    "_apikey",
                    "_token",
                    "Token",
                    "_secret",
                    "Secret",
                    "_password",
                    "Password"
                ][..]
            ),
            "[A-Za-z0-9+/=._-]{16,40}"
        )
            .prop_map(|(prefix, suffix, value)| Secret {
                kind: "json_named_field",
                text: format!("\"{prefix}{suffix}\": \"{value}\""),
                secret: value,
            }),
    ]
}

/// Whether the rules redact this kind at all (a fixed sample, alone).
fn kind_is_known(kind: &str) -> bool {
    let sample = match kind {
        "github" => "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "gitlab" => "glpat-aBcDeFgHiJ_kLmNoPqRs",
        "slack" => "xoxb-1234567890123-1234567890123-aBcDeFgHiJkLmNoPqRsTuVwX",
        "stripe" => "sk_live_aBcDeFgHiJkLmNoPqRsTuVwX0123",
        "google_oauth" => "ya29.a0AfH6SMBaBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789_-aBcDeFgHiJ",
        "aws_secret_key" => "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "pem" => {
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----"
        }
        "json_named_field" => r#""anthropic_api_key": "aBcDeFgHiJkLmNoP""#,
        _ => return true,
    };
    redactor().redact_text(sample) != sample
}

/// Text around secrets: words, JSON punctuation, non-ASCII, control characters.
fn filler() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 ,.;:!?'(){}\\[\\]\n\t\u{e9}\u{4e2d}\u{1F600}-]{0,40}",
        any::<String>().prop_map(|s| s.chars().take(40).collect()),
        Just(r#"{"model":"claude","messages":[{"role":"user","content":"#.to_string()),
    ]
}

/// What stands between a secret and the text around it (never a word character).
fn separator() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(
        &[
            " ", "\n", "\t", "\r\n", "\"", "'", ",", ";", "(", ")", "<", ">", "&", "|", "`", ": ",
            "=", " = ", "\\n", "\u{a0}",
        ][..],
    )
}

/// Redaction's bounds: idempotent, at most `2 × input + 10` bytes.
fn check_redaction(input: &str) -> Result<String, TestCaseError> {
    let r = redactor();
    let once = r.redact_text(input).into_owned();
    let twice = r.redact_text(&once).into_owned();
    prop_assert_eq!(&twice, &once, "not idempotent on {:?}", input);
    prop_assert!(
        once.len() <= 2 * input.len() + REDACTED.len(),
        "{} bytes grew to {}",
        input.len(),
        once.len()
    );
    Ok(once)
}

/// Pieces of key shapes, to find texts where one redaction makes or breaks another's match.
fn keyish() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            proptest::sample::select(
                &[
                    "sk-",
                    "sk-ant-",
                    "sk-proj-",
                    "AIza",
                    "AKIA",
                    "xai-",
                    "gsk_",
                    "hf_",
                    "eyJ",
                    "Bearer ",
                    "bearer\t",
                    "Basic ",
                    "\"api_key\"",
                    "\"password\"",
                    "\"secret\"",
                    ":",
                    " ",
                    "\"",
                    "\\",
                    "=",
                    ".",
                    "-",
                    "_",
                    "/",
                    "+",
                    "[REDACTED]",
                    "é",
                    "\n",
                ][..]
            )
            .prop_map(str::to_string),
            "[A-Za-z0-9]{1,40}",
        ],
        0..24,
    )
    .prop_map(concat)
}

/// Secrets of every known kind, anywhere in random text, never survive; redaction is
/// idempotent and bounded.
#[test]
fn embedded_secrets_never_survive() {
    let _g = shared();
    proptest!(cases(192), |(
        parts in vec((filler(), separator(), prop_oneof![3 => known_secret(), 1 => new_secret()], separator()), 1..5),
        tail in filler(),
    )| {
        let mut text = String::new();
        let mut secrets = Vec::new();
        for (before, sep1, secret, sep2) in &parts {
            text.push_str(before);
            text.push_str(sep1);
            text.push_str(&secret.text);
            text.push_str(sep2);
            if kind_is_known(secret.kind) {
                secrets.push(secret);
            }
        }
        text.push_str(&tail);
        let out = check_redaction(&text)?;
        for s in secrets {
            prop_assert!(!out.contains(&s.secret), "{} secret {:?} survives in {:?}", s.kind, s.secret, out);
        }
    });
}

/// Texts built from pieces of key shapes and arbitrary strings: no panic, idempotent, bounded.
#[test]
fn redaction_idempotent_and_bounded() {
    let _g = shared();
    proptest!(cases(192), |(
        text in prop_oneof![keyish(), any::<String>()],
    )| {
        check_redaction(&text)?;
    });
}

/// URLs: userinfo and the values of sensitive query parameters (any case, percent-encoded
/// names) never survive, other parameters do; idempotent.
#[test]
fn urls_lose_credentials_and_keep_the_rest() {
    let _g = shared();
    proptest!(cases(192), |(
        user in proptest::option::of(("[a-z]{1,8}", "[A-Za-z0-9]{12,20}")),
        host in "[a-z]{1,10}\\.(com|dev)(:[0-9]{1,5})?",
        path in "(/[a-zA-Z0-9._:-]{0,12}){0,3}",
        params in vec(( prop_oneof![ proptest::sample::select(&["key", "KEY", "api_key", "api%5Fkey", "Api-Key", "apikey", "access_token", "token", "sig", "signature", "X-Amz-Signature", "code", "client_secret"][..]).prop_map(|n| (n.to_string(), true)), "(alt|model|q|keyword|x)[a-z]{0,4}".prop_map(|n| (n, false)), ], "v[a-z0-9]{12,24}", ), 0..5),
        fragment in proptest::option::of("[a-z0-9=&]{0,10}"),
    )| {
        let r = redactor();
        let mut url = "https://".to_string();
        if let Some((name, password)) = &user {
            url.push_str(&format!("{name}:{password}@"));
        }
        url.push_str(&host);
        url.push_str(&path);
        let query: Vec<String> = params.iter().map(|((n, _), v)| format!("{n}={v}")).collect();
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        if let Some(f) = &fragment {
            url.push('#');
            url.push_str(f);
        }
        let once = r.redact_url(&url).into_owned();
        prop_assert_eq!(r.redact_url(&once).into_owned(), once.clone(), "not idempotent on {:?}", url);
        if let Some((_, password)) = &user {
            prop_assert!(!once.contains(password.as_str()), "{:?} keeps its password", once);
        }
        for ((name, sensitive), value) in &params {
            let pair = format!("{name}={value}");
            if *sensitive {
                prop_assert!(!once.contains(&pair), "{:?} keeps {}", once, pair);
            } else if !params.iter().any(|((_, s), v)| *s && v == value) {
                prop_assert!(once.contains(&pair), "{:?} lost {}", once, pair);
            }
        }
    });
}

/// Arbitrary URL-ish strings: no panic, idempotent.
#[test]
fn url_redaction_idempotent() {
    let _g = shared();
    proptest!(cases(192), |(
        url in prop_oneof![ "[a-z:/@?#&=%._A-Z0-9\"-]{0,60}", (keyish(), keyish()).prop_map(|(a, b)| format!("https://u:p@h/{a}?key={b}#x")), ],
    )| {
        let r = redactor();
        let once = r.redact_url(&url).into_owned();
        prop_assert_eq!(r.redact_url(&once).into_owned(), once, "not idempotent on {:?}", url);
    });
}

/// Headers: a name that is always redacted (any case, spaces around) or not on the
/// allowlist is `[REDACTED]`; an allowed one is scrubbed like text.
#[test]
fn headers_go_by_the_allowlist() {
    let _g = shared();
    proptest!(cases(192), |(
        headers in vec(( prop_oneof![ proptest::sample::select(ALWAYS_REDACTED_HEADERS).prop_map(str::to_string), proptest::sample::select(&["content-type", "user-agent", "x-ratelimit-remaining", "anthropic-version", "x-stainless-os"][..]).prop_map(str::to_string), "[A-Za-z0-9-]{1,20}", ], any::<bool>(), prop_oneof![filler(), known_secret().prop_map(|s| s.text)], ), 0..6),
    )| {
        let r = redactor();
        let input: Vec<(String, String)> = headers
            .iter()
            .map(|(n, upper, v)| (if *upper { format!(" {} ", n.to_ascii_uppercase()) } else { n.clone() }, v.clone()))
            .collect();
        let out = r.redact_headers(&input);
        prop_assert_eq!(out.len(), input.len());
        for ((name, value), (out_name, out_value)) in input.iter().zip(&out) {
            prop_assert_eq!(name, out_name);
            let always = ALWAYS_REDACTED_HEADERS.contains(&name.trim().to_ascii_lowercase().as_str());
            if always || !r.is_safe_header(name) {
                prop_assert!(!(always && r.is_safe_header(name)), "{} is safe", name);
                prop_assert_eq!(out_value, REDACTED);
            } else {
                prop_assert_eq!(out_value, &r.redact_text(value).into_owned());
            }
        }
    });
}

/// `percent_decode` never grows its input and undoes percent-encoding.
#[test]
fn percent_decoding() {
    let _g = shared();
    proptest!(cases(192), |(
        raw in "[%0-9a-fA-FgzZ\u{e9}]{0,24}",
        plain in any::<String>(),
    )| {
        prop_assert!(percent_decode(&raw).len() <= raw.len(), "{:?}", raw);
        let encoded: String = plain.bytes().map(|b| format!("%{b:02X}")).collect();
        prop_assert_eq!(percent_decode(&encoded).into_owned(), plain);
    });
}

/// Letters flipped in case here and there, and the Unicode case variants of `k` and `s`
/// (`(?i)` patterns match the Kelvin sign and the long s): what the prefilter's ASCII
/// case-insensitive literals must still find.
fn recased(text: String, flips: Vec<u8>) -> String {
    text.chars()
        .zip(flips.into_iter().cycle())
        .map(|(c, flip)| match (c, flip % 7) {
            ('k' | 'K', 0) => '\u{212A}',
            ('s' | 'S', 0) => '\u{17F}',
            (c, 1) => c.to_ascii_uppercase(),
            (c, 2) => c.to_ascii_lowercase(),
            (c, _) => c,
        })
        .collect()
}

/// The prefilter only skips patterns that cannot match: redacting with it gives exactly what
/// running every pattern gives, on random text with embedded keys in any case.
#[test]
fn prefiltered_redaction_is_unfiltered_redaction() {
    let _g = shared();
    proptest!(cases(256), |(
        parts in vec(prop_oneof![
            filler(),
            keyish(),
            known_secret().prop_map(|s| s.text),
            new_secret().prop_map(|s| s.text),
            separator().prop_map(str::to_string),
        ], 0..8),
        flips in vec(any::<u8>(), 1..32),
    )| {
        let r = redactor();
        let plain = parts.concat();
        for text in [plain.clone(), recased(plain, flips)] {
            let filtered = r.redact_text(&text);
            let unfiltered = r.redact_text_unfiltered(&text);
            prop_assert_eq!(&filtered, &unfiltered, "on {:?}", text);
            prop_assert_eq!(matches!(filtered, std::borrow::Cow::Borrowed(_)), matches!(unfiltered, std::borrow::Cow::Borrowed(_)));
            if unfiltered != text {
                prop_assert!(r.looks_secret(&text), "{:?} changed but does not look secret", text);
            }
        }
    });
}
