//! What every HTTP route of `ferry serve` answers with: a hyper response with a whole body, and
//! the short plain-text refusal whose body never echoes the request.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};

/// A response with its whole body.
pub type Reply = Response<Full<Bytes>>;

/// A short plain-text answer (refusals, probes), one line.
pub fn text(status: StatusCode, body: &str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}
