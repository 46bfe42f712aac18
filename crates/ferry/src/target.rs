//! What a client connects to: a URL string, an `http::Uri`, or an `http::Request<()>` whose
//! headers (Authorization, cookies, Origin, subprotocols) go into the handshake.

use crate::config::Config;
use crate::error::Error;

/// A URL, URI or request that [`connect`](crate::connect) and its relatives accept.
///
/// - `&str` and `String`: `ws://`, `wss://` or `ws+unix://PATH:/REQUEST-PATH`.
/// - `http::Uri`: a `ws://` or `wss://` URI.
/// - `http::Request<()>`: a GET to such a URI. Its headers are sent with the handshake, after
///   `Config::headers`; its `Sec-WebSocket-Protocol` adds to `Config::protocols` and its
///   `Origin` replaces `Config::origin`. Headers the handshake writes itself are refused
///   ([`Error::InvalidRequest`]).
///
/// ```no_run
/// # async fn f() -> Result<(), ferry::Error> {
/// let request = http::Request::get("wss://example.com/feed")
///     .header("Authorization", "Bearer abc")
///     .header("Sec-WebSocket-Protocol", "feed.v2")
///     .body(())
///     .unwrap();
/// let (sender, receiver, response) = ferry::connect(request).await?;
/// assert_eq!(response.protocol.as_deref(), Some("feed.v2"));
/// # Ok(()) }
/// ```
pub trait IntoClientRequest {
    /// The URL and what the request adds to a [`Config`].
    #[doc(hidden)]
    fn into_target(self) -> Result<sealed::Target, Error>;
}

pub(crate) mod sealed {
    /// A URL, and the handshake headers a request brought with it.
    #[derive(Debug, Default)]
    pub struct Target {
        pub(crate) url: String,
        pub(crate) headers: Vec<(String, String)>,
        pub(crate) protocols: Vec<String>,
        pub(crate) origin: Option<String>,
    }
}
use sealed::Target;

impl Target {
    /// `config` with what the request adds; borrowed as is when it adds nothing.
    pub(crate) fn apply<'a>(&self, config: &'a Config) -> std::borrow::Cow<'a, Config> {
        if self.headers.is_empty() && self.protocols.is_empty() && self.origin.is_none() {
            return std::borrow::Cow::Borrowed(config);
        }
        let mut config = config.clone();
        config.headers.extend(self.headers.iter().cloned());
        config.protocols.extend(self.protocols.iter().cloned());
        if let Some(origin) = &self.origin {
            config.origin = Some(origin.clone());
        }
        std::borrow::Cow::Owned(config)
    }
}

impl IntoClientRequest for &str {
    fn into_target(self) -> Result<Target, Error> {
        Ok(Target {
            url: self.to_owned(),
            ..Target::default()
        })
    }
}

impl IntoClientRequest for String {
    fn into_target(self) -> Result<Target, Error> {
        Ok(Target {
            url: self,
            ..Target::default()
        })
    }
}

impl IntoClientRequest for &String {
    fn into_target(self) -> Result<Target, Error> {
        self.as_str().into_target()
    }
}

impl IntoClientRequest for http::Uri {
    fn into_target(self) -> Result<Target, Error> {
        self.to_string().into_target()
    }
}

impl IntoClientRequest for &http::Uri {
    fn into_target(self) -> Result<Target, Error> {
        self.to_string().into_target()
    }
}

/// Headers the handshake writes from the URL and the [`Config`]; a second copy from the
/// request would make an ambiguous handshake (RFC 6455 §4.1).
const WRITTEN_BY_THE_HANDSHAKE: [http::HeaderName; 6] = [
    http::header::HOST,
    http::header::UPGRADE,
    http::header::CONNECTION,
    http::header::SEC_WEBSOCKET_KEY,
    http::header::SEC_WEBSOCKET_VERSION,
    http::header::SEC_WEBSOCKET_EXTENSIONS,
];

impl IntoClientRequest for http::Request<()> {
    fn into_target(self) -> Result<Target, Error> {
        if self.method() != http::Method::GET {
            return Err(Error::InvalidRequest(format!(
                "a WebSocket opens with GET, not {}",
                self.method()
            )));
        }
        let mut target = self.uri().to_string().into_target()?;
        for (name, value) in self.headers() {
            if WRITTEN_BY_THE_HANDSHAKE.contains(name) {
                return Err(Error::InvalidRequest(format!(
                    "{name} is written by the handshake; set it through the URL or ferry::Config"
                )));
            }
            let Ok(value) = value.to_str() else {
                return Err(Error::InvalidRequest(format!(
                    "the {name} header is not visible ASCII"
                )));
            };
            if name == http::header::SEC_WEBSOCKET_PROTOCOL {
                let offered = value.split(',').map(str::trim).filter(|p| !p.is_empty());
                target.protocols.extend(offered.map(str::to_owned));
            } else if name == http::header::ORIGIN {
                target.origin = Some(value.to_owned());
            } else {
                target
                    .headers
                    .push((name.as_str().to_owned(), value.to_owned()));
            }
        }
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_brings_its_headers_protocols_and_origin() {
        let request = http::Request::get("wss://example.com:8443/feed?x=1")
            .header("Authorization", "Bearer abc")
            .header("Sec-WebSocket-Protocol", "a, b")
            .header("Origin", "https://example.com")
            .body(())
            .unwrap();
        let target = request.into_target().unwrap();
        assert_eq!(target.url, "wss://example.com:8443/feed?x=1");
        assert_eq!(
            target.headers,
            [("authorization".to_owned(), "Bearer abc".to_owned())]
        );
        assert_eq!(target.protocols, ["a", "b"]);
        let config = Config {
            protocols: vec!["z".into()],
            origin: Some("https://other.example".into()),
            ..Config::default()
        };
        let applied = target.apply(&config);
        assert_eq!(applied.protocols, ["z", "a", "b"]);
        assert_eq!(applied.origin.as_deref(), Some("https://example.com"));
    }

    #[test]
    fn a_request_that_would_confuse_the_handshake_is_refused() {
        let post = http::Request::post("ws://a/").body(()).unwrap();
        let err = post.into_target().unwrap_err().to_string();
        assert!(err.contains("not POST"), "{err}");
        let key = http::Request::get("ws://a/")
            .header("Sec-WebSocket-Key", "x")
            .body(())
            .unwrap();
        let err = key.into_target().unwrap_err().to_string();
        assert!(
            err.contains("sec-websocket-key is written by the handshake"),
            "{err}"
        );
    }

    #[test]
    fn a_plain_url_borrows_the_config() {
        let target = "ws://a/".into_target().unwrap();
        assert!(matches!(
            target.apply(&Config::default()),
            std::borrow::Cow::Borrowed(_)
        ));
        let uri: http::Uri = "ws://a:9/x".parse().unwrap();
        assert_eq!(uri.into_target().unwrap().url, "ws://a:9/x");
    }
}
