//! Extensions (RFC 6455 §9): negotiated in the handshake, owning RSV bits, transforming message
//! payloads.
//!
//! The frame code knows extensions only through the [`Extension`] trait: which RSV bits one
//! owns, how it encodes an outgoing message, and how it decodes the frames of an incoming one.
//! permessage-deflate ([`deflate`]) is the first; another needs no change to the frame code.

pub mod deflate;

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::error::ProtocolError;

/// A negotiated extension that transforms message payloads.
///
/// RFC 6455 §5.2: RSV bits may be set only when a negotiated extension defines them. The
/// connection accepts a data message's first frame with RSV bits set only if they are all
/// [`rsv_bits`](Extension::rsv_bits) of the extension, and then passes that message's frames to
/// [`decode`](Extension::decode).
pub trait Extension: fmt::Debug + Send {
    /// The RSV bits this extension owns, as the three low bits (RSV1 = `0b100`).
    fn rsv_bits(&self) -> u8;

    /// Transforms an outgoing message payload. `None` sends it as it is, with RSV bits clear;
    /// `Some(bytes)` sends those bytes with [`rsv_bits`](Extension::rsv_bits) set on the first
    /// frame.
    fn encode(&mut self, payload: &[u8], is_text: bool) -> Option<Bytes>;

    /// Decodes one frame of an incoming message whose first frame carried this extension's RSV
    /// bits, appending the output to `out`. `fin` marks the message's last frame. Output past
    /// `limit` bytes in total must fail with [`ProtocolError::MessageTooLarge`] as soon as it is
    /// produced: this is what stops decompression bombs.
    fn decode(
        &mut self,
        payload: &[u8],
        fin: bool,
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<(), ProtocolError>;

    /// The encoding group of this end's output, if it depends on nothing but settings (no
    /// state carried between messages): connections in the same group share one encoding of a
    /// fanned-out message ([`crate::PreparedMessage`]). The default, `None`, means this
    /// extension's output must be produced per connection.
    fn frame_encoding(&self) -> Option<crate::encoding::FrameEncoding> {
        None
    }
}

/// One extension in a `Sec-WebSocket-Extensions` header: a name and its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// The extension token, e.g. `permessage-deflate`.
    pub name: String,
    /// Parameters in order: name, and value if it had one (quotes removed).
    pub params: Vec<(String, Option<String>)>,
}

/// Parses `Sec-WebSocket-Extensions` header values (RFC 6455 §9.1 grammar): a comma-separated
/// list of extensions, each `name *( ";" param [ "=" (token | quoted-string) ] )`.
///
/// Returns `None` if the syntax is broken.
///
/// ```
/// use ferry_proto::extension::parse_extensions;
/// let offers = parse_extensions(&["permessage-deflate; client_max_window_bits=\"10\", x-foo"]).unwrap();
/// assert_eq!(offers[0].name, "permessage-deflate");
/// assert_eq!(offers[0].params, [("client_max_window_bits".to_owned(), Some("10".to_owned()))]);
/// assert_eq!(offers[1].name, "x-foo");
/// ```
pub fn parse_extensions(values: &[&str]) -> Option<Vec<ExtensionOffer>> {
    let mut out = Vec::new();
    for value in values {
        for item in split_outside_quotes(value, ',')? {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let mut parts = split_outside_quotes(item, ';')?.into_iter();
            let name = parts.next()?.trim();
            if !is_token(name) {
                return None;
            }
            let mut params = Vec::new();
            for part in parts {
                let part = part.trim();
                let (key, value) = match part.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
                    None => (part, None),
                };
                if !is_token(key) {
                    return None;
                }
                params.push((key.to_ascii_lowercase(), value));
            }
            out.push(ExtensionOffer {
                name: name.to_ascii_lowercase(),
                params,
            });
        }
    }
    Some(out)
}

fn split_outside_quotes(text: &str, sep: char) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(text.get(start..i)?);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    parts.push(text.get(start..)?);
    Some(parts)
}

fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return is_token(value).then(|| value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    // RFC 6455 §9.1: a quoted value must still be a token once unquoted.
    is_token(&out).then_some(out)
}

fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_offers_and_quotes() {
        let offers = parse_extensions(&[
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10",
            "permessage-deflate",
        ])
        .unwrap();
        assert_eq!(offers.len(), 2);
        assert_eq!(offers[0].params.len(), 2);
        assert_eq!(
            offers[0].params[1],
            ("server_max_window_bits".into(), Some("10".into()))
        );
    }

    #[test]
    fn broken_syntax_is_none() {
        assert_eq!(
            parse_extensions(&["permessage-deflate; x=\"unterminated"]),
            None
        );
        assert_eq!(parse_extensions(&["bad name"]), None);
        assert_eq!(parse_extensions(&["a; b=\"two words\""]), None);
    }
}
