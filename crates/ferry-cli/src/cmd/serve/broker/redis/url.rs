//! Where a shard is: its URL, and that URL as logs may show it.

use std::fmt;

/// One Redis of the broker: `redis://[user:password@]host:port[/db]` or `rediss://` for TLS.
#[derive(Clone, Debug)]
pub struct ShardUrl {
    pub(super) url: String,
    /// The URL with its password replaced, for logs and errors.
    shown: String,
}

impl ShardUrl {
    pub fn parse(url: &str) -> Result<ShardUrl, String> {
        let shown = redact(url);
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(format!(
                "broker.urls (--broker) {shown:?}: not a broker; use memory, or redis://[user:password@]host:port[/db] (rediss:// for TLS)"
            ));
        }
        redis::Client::open(url).map_err(|e| {
            format!(
                "broker.urls (--broker) {shown}: {e}; use redis://[user:password@]host:port[/db]"
            )
        })?;
        Ok(ShardUrl {
            url: url.to_owned(),
            shown,
        })
    }
}

impl fmt::Display for ShardUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// `redis://user:secret@host` shown as `redis://user:***@host`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_passwords_never_shown() {
        let url = ShardUrl::parse("redis://app:s3cret@127.0.0.1:6379/2").unwrap();
        assert_eq!(url.to_string(), "redis://app:***@127.0.0.1:6379/2");
        assert_eq!(redact("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        let err = ShardUrl::parse("http://u:pw@h:1").unwrap_err();
        assert!(err.contains("--broker") && !err.contains("pw"), "{err}");
    }
}
