//! The Origin allow-list: the defence against cross-site WebSocket hijacking.
//!
//! A browser always sends Origin on a WebSocket handshake, and a page on another site could
//! otherwise open a WebSocket to this server with the visitor's cookies. So a browser request
//! is accepted only from the server's own origin (scheme-less comparison of the Origin's host
//! and port with the Host header) or from an origin on the list. A request without Origin comes
//! from a non-browser client, which no other site can drive: it is accepted.

/// An origin in its serialized form (RFC 6454 §6.2): scheme and host lowercased, and the
/// scheme's default port left out, as browsers send it (`https://app.example`, never
/// `https://app.example:443`). `None` for what is not `http(s)://host[:port]`.
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

/// Which origins may open WebSocket connections.
#[derive(Debug, Default)]
pub struct Policy {
    any: bool,
    allowed: Vec<String>,
}

impl Policy {
    /// `origins` as given on the command line: `*`, or full origins like `https://app.example.com`.
    pub fn new(origins: &[String]) -> Result<Policy, String> {
        let mut policy = Policy::default();
        for origin in origins {
            if origin == "*" {
                policy.any = true;
            } else if origin.contains("://") {
                let serialized = serialize(origin).ok_or_else(|| {
                    format!("{origin}: an origin is http(s)://host[:port] with no path")
                })?;
                policy.allowed.push(serialized);
            } else {
                return Err(format!(
                    "{origin}: use a full origin like https://app.example.com, or * for any"
                ));
            }
        }
        Ok(policy)
    }

    /// Whether a handshake with this Origin (if any) and Host may proceed.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_and_non_browsers_are_allowed_by_default() {
        let policy = Policy::default();
        assert!(policy.allows(None, Some("localhost:8080")));
        assert!(policy.allows(Some("http://localhost:8080"), Some("localhost:8080")));
        assert!(!policy.allows(Some("https://evil.example"), Some("localhost:8080")));
        assert!(!policy.allows(Some("null"), Some("localhost:8080")));
    }

    #[test]
    fn list_and_wildcard() {
        let policy = Policy::new(&["https://app.example.com".into()]).unwrap();
        assert!(policy.allows(Some("https://APP.example.com"), Some("api.example.com")));
        assert!(!policy.allows(Some("http://app.example.com"), Some("api.example.com")));
        assert!(
            Policy::new(&["*".into()])
                .unwrap()
                .allows(Some("https://x"), None)
        );
        assert!(Policy::new(&["app.example.com".into()]).is_err());
        assert!(Policy::new(&["https://a/b".into()]).is_err());
        assert!(Policy::new(&["ftp://a".into()]).is_err());
        assert!(Policy::new(&["https://a:x".into()]).is_err());
    }

    /// Regression: `--allow-origin https://app.example:443` refused the page at
    /// `https://app.example`, whose Origin header has no port (browsers omit the default).
    #[test]
    fn origins_compare_in_their_serialized_form() {
        let policy = Policy::new(&[
            "https://App.Example:443".into(),
            "http://plain.example:80".into(),
            "http://odd.example:8080".into(),
        ])
        .unwrap();
        assert!(policy.allows(Some("https://app.example"), Some("api.example")));
        assert!(policy.allows(Some("HTTPS://APP.EXAMPLE:443"), Some("api.example")));
        assert!(policy.allows(Some("http://plain.example"), Some("api.example")));
        assert!(policy.allows(Some("http://odd.example:8080"), Some("api.example")));
        assert!(!policy.allows(Some("http://odd.example"), Some("api.example")));
        assert!(!policy.allows(Some("https://app.example:8443"), Some("api.example")));
        // Same origin, with the default port written on one side only.
        let same = Policy::default();
        assert!(same.allows(Some("https://site.example"), Some("site.example:443")));
        assert!(same.allows(Some("https://site.example:443"), Some("SITE.example")));
        assert!(same.allows(Some("http://[::1]:8080"), Some("[::1]:8080")));
        assert!(!same.allows(Some("http://site.example"), Some("site.example:8080")));
    }
}
