//! Forwarding failures: which side failed and why, as an `error.type` class and a message.

use std::error::Error as StdError;

use super::upstream::ConnectError;

/// A classified upstream failure.
#[derive(Debug, Clone)]
pub struct UpstreamFailure {
    /// `dns`, `connect`, `connect_timeout`, `tls`, `upstream`.
    pub kind: &'static str,
    pub message: String,
}

/// Walks the error chain (looking inside `io::Error`s too) for the cause that explains it.
pub fn classify(err: &(dyn StdError + 'static)) -> UpstreamFailure {
    let chain = crate::capture::body::error_chain(err);
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            return UpstreamFailure {
                kind: c.kind(),
                message: c.to_string(),
            };
        }
        if let Some(t) = tls_error(e) {
            return UpstreamFailure {
                kind: "tls",
                message: format!("upstream TLS failed: {t}"),
            };
        }
        current = e.source().or_else(|| io_inner(e));
    }
    UpstreamFailure {
        kind: "upstream",
        message: format!("upstream request failed: {chain}"),
    }
}

fn tls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    e.downcast_ref::<rustls::Error>()
        .or_else(|| io_inner(e).and_then(|i| i.downcast_ref::<rustls::Error>()))
}

/// `io::Error::source` skips the wrapped error; `get_ref` does not.
fn io_inner<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    e.downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .map(|inner| inner as &(dyn StdError + 'static))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rustls_errors_wrapped_in_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let f = classify(&io);
        assert_eq!(f.kind, "tls");
        assert!(
            f.message.contains("UnknownIssuer") || f.message.contains("unknown issuer"),
            "{}",
            f.message
        );
    }

    #[test]
    fn connect_errors_keep_their_class() {
        let e = ConnectError::Resolve {
            host: "nope.invalid".into(),
            reason: "not found".into(),
        };
        let f = classify(&e);
        assert_eq!(f.kind, "dns");
        assert!(f.message.contains("nope.invalid"));
    }
}
