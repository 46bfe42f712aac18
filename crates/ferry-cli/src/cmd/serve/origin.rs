//! The Origin allow-list: the defence against cross-site WebSocket hijacking.
//!
//! A browser always sends Origin on a WebSocket handshake, and a page on another site could
//! otherwise open a WebSocket to this server with the visitor's cookies. So a browser request
//! is accepted only from the server's own origin (scheme-less comparison of the Origin's host
//! and port with the Host header) or from an origin on the list. A request without Origin comes
//! from a non-browser client, which no other site can drive: it is accepted.

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
            } else if let Some(rest) = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
            {
                if rest.is_empty() || rest.contains('/') {
                    return Err(format!(
                        "{origin}: an origin is scheme://host[:port] with no path"
                    ));
                }
                policy.allowed.push(origin.to_ascii_lowercase());
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
        let origin = origin.to_ascii_lowercase();
        if self.allowed.contains(&origin) {
            return true;
        }
        let origin_host = origin.split_once("://").map(|(_, h)| h);
        matches!((origin_host, host), (Some(o), Some(h)) if o == h.to_ascii_lowercase())
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
    }
}
