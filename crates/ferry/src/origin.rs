//! Which web pages may open WebSocket connections to a server: the defence against
//! cross-site WebSocket hijacking.
//!
//! A browser always sends `Origin` on a WebSocket handshake, and without a check a page on any
//! site could open a WebSocket to a server with its visitor's cookies. [`OriginPolicy`] admits a
//! browser only from the server's own origin (the `Origin` naming the `Host` the request was
//! sent to) or from an origin on its list. A request without `Origin` comes from a non-browser
//! client, which no other site can drive: it is admitted.
//!
//! Origins are compared in their serialized form (RFC 6454 §6.2): scheme and host lowercased,
//! the scheme's default port left out, as browsers send them; so `https://app.example:443` on
//! the list admits the page at `https://app.example`.

use ferry_proto::handshake::{Refusal, Request};

/// Which origins may open WebSocket connections.
///
/// ```
/// use ferry::OriginPolicy;
/// let policy = OriginPolicy::allow(["https://app.example:443"]).unwrap();
/// assert!(policy.allows(Some("https://app.example"), Some("api.example")));
/// assert!(!policy.allows(Some("https://evil.example"), Some("api.example")));
/// assert!(policy.allows(None, Some("api.example")), "not a browser");
/// assert!(OriginPolicy::default().allows(Some("http://site.example"), Some("site.example:80")));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    any: bool,
    allowed: Vec<String>,
}

/// An entry of an origin list that is not an origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidOrigin {
    /// The entry as given.
    pub origin: String,
    /// What is wrong, and the form that is right.
    pub reason: &'static str,
}

impl std::fmt::Display for InvalidOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.origin, self.reason)
    }
}

impl std::error::Error for InvalidOrigin {}

impl OriginPolicy {
    /// Only the server's own origin (and non-browser clients): the default.
    pub fn same_origin() -> OriginPolicy {
        OriginPolicy::default()
    }

    /// Every origin: for a server whose pages live anywhere and that uses no cookies.
    pub fn any() -> OriginPolicy {
        OriginPolicy {
            any: true,
            allowed: Vec::new(),
        }
    }

    /// The server's own origin and these: full origins like `https://app.example.com`, or `*`
    /// for any.
    pub fn allow<I, S>(origins: I) -> Result<OriginPolicy, InvalidOrigin>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut policy = OriginPolicy::default();
        for origin in origins {
            let origin = origin.as_ref();
            if origin == "*" {
                policy.any = true;
            } else if origin.contains("://") {
                let serialized = serialize(origin).ok_or_else(|| InvalidOrigin {
                    origin: origin.to_owned(),
                    reason: "an origin is http(s)://host[:port] with no path",
                })?;
                policy.allowed.push(serialized);
            } else {
                return Err(InvalidOrigin {
                    origin: origin.to_owned(),
                    reason: "use a full origin like https://app.example.com, or * for any",
                });
            }
        }
        Ok(policy)
    }

    /// Whether a handshake with this `Origin` (if any) sent to this `Host` may proceed.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        if self.any {
            return true;
        }
        let Some(origin) = serialize(origin) else {
            // `null` (sandboxed frames, file: pages) and anything unparsable: never same-origin.
            return false;
        };
        if self.allowed.contains(&origin) {
            return true;
        }
        // Same origin: the Host the browser sent, in the origin's scheme, serializes alike
        // (Host: app.example:443 is https://app.example).
        let Some((scheme, _)) = origin.split_once("://") else {
            return false;
        };
        host.and_then(|h| serialize(&format!("{scheme}://{h}")))
            .is_some_and(|own| own == origin)
    }

    /// The check for [`accept_with_request`](crate::accept_with_request): 403 for a browser
    /// page from an origin this policy does not admit.
    pub fn check(&self, request: &Request) -> Result<(), Refusal> {
        if self.allows(request.origin(), request.host()) {
            Ok(())
        } else {
            Err(Refusal::new(403, "origin not allowed"))
        }
    }
}

/// An origin in its serialized form; `None` for what is not `http(s)://host[:port]`.
fn serialize(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let authority = rest.to_ascii_lowercase();
    let authority = match split_port(&authority) {
        (host, Some(port)) if port == default => host.to_owned(),
        (host, Some(port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{host}:{port}")
        }
        (_, Some(_)) => return None,
        (host, None) => host.to_owned(),
    };
    Some(format!("{scheme}://{authority}"))
}

/// `host:port` into its parts; `[v6]:port` keeps the brackets on the host.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(end) = authority.rfind(']') {
        return match authority[end + 1..].strip_prefix(':') {
            Some(port) => (&authority[..=end], Some(port)),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_and_non_browsers_are_allowed_by_default() {
        let policy = OriginPolicy::default();
        assert!(policy.allows(None, Some("localhost:8080")));
        assert!(policy.allows(Some("http://localhost:8080"), Some("localhost:8080")));
        assert!(!policy.allows(Some("https://evil.example"), Some("localhost:8080")));
        assert!(!policy.allows(Some("null"), Some("localhost:8080")));
    }

    #[test]
    fn list_and_wildcard() {
        let policy = OriginPolicy::allow(["https://app.example.com"]).unwrap();
        assert!(policy.allows(Some("https://APP.example.com"), Some("api.example.com")));
        assert!(!policy.allows(Some("http://app.example.com"), Some("api.example.com")));
        assert!(
            OriginPolicy::allow(["*"])
                .unwrap()
                .allows(Some("https://x"), None)
        );
        assert!(OriginPolicy::any().allows(Some("https://x"), None));
        for bad in ["app.example.com", "https://a/b", "ftp://a", "https://a:x"] {
            assert!(OriginPolicy::allow([bad]).is_err(), "{bad}");
        }
    }

    /// Regression: `--allow-origin https://app.example:443` refused the page at
    /// `https://app.example`, whose Origin header has no port (browsers omit the default).
    #[test]
    fn origins_compare_in_their_serialized_form() {
        let policy = OriginPolicy::allow([
            "https://App.Example:443",
            "http://plain.example:80",
            "http://odd.example:8080",
        ])
        .unwrap();
        assert!(policy.allows(Some("https://app.example"), Some("api.example")));
        assert!(policy.allows(Some("HTTPS://APP.EXAMPLE:443"), Some("api.example")));
        assert!(policy.allows(Some("http://plain.example"), Some("api.example")));
        assert!(policy.allows(Some("http://odd.example:8080"), Some("api.example")));
        assert!(!policy.allows(Some("http://odd.example"), Some("api.example")));
        assert!(!policy.allows(Some("https://app.example:8443"), Some("api.example")));
        let same = OriginPolicy::default();
        assert!(same.allows(Some("https://site.example"), Some("site.example:443")));
        assert!(same.allows(Some("https://site.example:443"), Some("SITE.example")));
        assert!(same.allows(Some("http://[::1]:8080"), Some("[::1]:8080")));
        assert!(!same.allows(Some("http://site.example"), Some("site.example:8080")));
    }
}
