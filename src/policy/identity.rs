//! Who is asking: proxy credentials, else source CIDR, else the `default` client.
// SKELETON: to be implemented (helper A).

use std::net::IpAddr;

use super::{ClientId, PolicySet};

/// Credentials missing, malformed or wrong for a client that requires them: answered 407.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    /// Safe to show: never contains the password.
    pub reason: String,
}

/// `proxy_authorization` is the raw `Proxy-Authorization` header value, if any.
pub fn identify(
    policy: &PolicySet,
    proxy_authorization: Option<&[u8]>,
    source: IpAddr,
) -> Result<ClientId, AuthFailure> {
    let _ = (proxy_authorization, source);
    Ok(policy.default_client())
}
