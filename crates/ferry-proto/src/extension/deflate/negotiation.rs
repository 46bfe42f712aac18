//! Negotiating permessage-deflate (RFC 7692 §5, §7.1): this end's settings, a client's offer,
//! a server's choice among offers, a client's check of the response, and what was agreed.

use super::NAME;
use crate::extension::ExtensionOffer;
use crate::role::Role;

/// How this end negotiates and runs permessage-deflate. The same struct serves both roles;
/// "own" is the compressor of this end, "peer" the compressor at the other end.
///
/// ```
/// use ferry_proto::extension::deflate::DeflateConfig;
/// let config = DeflateConfig { level: 1, own_window_bits: 10, ..DeflateConfig::default() };
/// assert!(config.validate().is_ok());
/// assert!(DeflateConfig { own_window_bits: 16, ..config }.validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Compression level, 0 (store) to 9 (best). Default 1: on 64 KiB of JSON it compresses to
    /// 25% against level 6's 17%, at about three times the speed.
    pub level: u8,
    /// zlib `memLevel`, 1 to 9: the compressor's hash table and buffers take about
    /// `2^(mem_level + 9)` bytes. Default 5 (16 KiB), against zlib's 8 (128 KiB).
    pub mem_level: u8,
    /// The largest LZ77 window this end compresses with, 9 to 15 (a window of `2^bits` bytes;
    /// the compressor holds about four times that). Default 12 (4 KiB). The peer may ask for a
    /// smaller one.
    pub own_window_bits: u8,
    /// The window to ask of the peer's compressor, 8 to 15; this end's decompressor keeps a
    /// window of that size. A server asks with `client_max_window_bits` when the client's offer
    /// allows it; a client offers `server_max_window_bits` when this is below 15. Default 15
    /// Default 12 (a 4 KiB window; browsers offer `client_max_window_bits`, so they comply).
    pub peer_window_bits: u8,
    /// Reset this end's compressor after every message instead of keeping its window ("no
    /// context takeover"). Default true: the compressor is then shared by every connection on a
    /// thread, instead of costing each connection about 150 KiB (zlib-rs' 128 KiB hash table
    /// plus the window). Turn it off for streams of small similar messages (chat), where the
    /// shared history shrinks messages four times as much.
    pub own_no_context_takeover: bool,
    /// Ask the peer to reset its compressor after every message. Default false.
    pub request_peer_no_context_takeover: bool,
    /// Messages shorter than this are sent uncompressed: without context takeover, deflate
    /// saves little on them. Default 256 bytes; lower it with context takeover.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    /// Defaults for a public server, measured with `cargo bench -p ferry-proto --bench
    /// compression` (see `docs/compression.md`): level 1, this end without context takeover so
    /// one compressor per thread serves every connection and an idle connection holds no
    /// compressor, and a 4 KiB window asked of the peer, so its decompressor stays small.
    fn default() -> Self {
        DeflateConfig {
            level: 1,
            mem_level: 5,
            own_window_bits: 12,
            peer_window_bits: 12,
            own_no_context_takeover: true,
            request_peer_no_context_takeover: false,
            threshold: 256,
        }
    }
}

impl DeflateConfig {
    /// Checks every field's range; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            ("level", self.level, 0, 9),
            ("mem_level", self.mem_level, 1, 9),
            ("own_window_bits", self.own_window_bits, 9, 15),
            ("peer_window_bits", self.peer_window_bits, 8, 15),
        ];
        for (name, value, low, high) in fields {
            if !(low..=high).contains(&value) {
                return Err(format!(
                    "deflate {name} {value} out of range: use {low} to {high}"
                ));
            }
        }
        Ok(())
    }

    /// The offer a client sends: `permessage-deflate; client_max_window_bits`, plus what this
    /// config asks of the server. Offering `client_max_window_bits` lets the server limit this
    /// end's window, as browsers do.
    pub fn client_offer(&self) -> String {
        let mut offer = String::from(NAME);
        if self.own_no_context_takeover {
            offer.push_str("; client_no_context_takeover");
        }
        if self.request_peer_no_context_takeover {
            offer.push_str("; server_no_context_takeover");
        }
        if self.peer_window_bits < 15 {
            offer.push_str(&format!(
                "; server_max_window_bits={}",
                self.peer_window_bits
            ));
        }
        offer.push_str("; client_max_window_bits");
        offer
    }

    /// Server side: picks the first acceptable permessage-deflate offer, in the client's order
    /// (RFC 7692 §5). Returns the agreed parameters and the response header value, or `None`
    /// to decline, so the connection opens uncompressed. Malformed offers (unknown or
    /// duplicate parameters, bad values) are declined one by one, as §5 says.
    pub fn accept_offer(&self, offers: &[ExtensionOffer]) -> Option<(DeflateParams, String)> {
        offers
            .iter()
            .filter(|o| o.name == NAME)
            .find_map(|offer| self.accept_one(offer))
    }

    fn accept_one(&self, offer: &ExtensionOffer) -> Option<(DeflateParams, String)> {
        let offered = OfferParams::parse(&offer.params, Role::Client)?;
        // Our compressor: at most what we like, at most what the client allows.
        let server_bits = offered
            .server_max_window_bits
            .map_or(self.own_window_bits, |max| max.min(self.own_window_bits));
        let server_no_context_takeover =
            offered.server_no_context_takeover || self.own_no_context_takeover;
        // The client's compressor: we may limit it only if it offered client_max_window_bits.
        let client_bits = match offered.client_max_window_bits {
            None => None,
            Some(limit) => {
                let wanted = self.peer_window_bits.min(limit.unwrap_or(15));
                (wanted < 15 || limit.is_some()).then_some(wanted)
            }
        };
        let client_no_context_takeover =
            offered.client_no_context_takeover || self.request_peer_no_context_takeover;
        let params = DeflateParams {
            server_no_context_takeover,
            client_no_context_takeover,
            // §7.1.2.1: accepting an offer that has server_max_window_bits means answering with
            // it; without one, a smaller window needs no announcement.
            server_max_window_bits: offered.server_max_window_bits.map(|_| server_bits),
            client_max_window_bits: client_bits,
        };
        Some((params, params.to_header()))
    }

    /// Client side: validates the server's response to [`client_offer`](Self::client_offer).
    /// RFC 7692 §5: the client fails the connection on anything it did not offer or cannot
    /// honour; the error text says which.
    pub fn accept_response(&self, response: &ExtensionOffer) -> Result<DeflateParams, String> {
        if response.name != NAME {
            return Err(format!("extension {} was not offered", response.name));
        }
        let mut params = DeflateParams::default();
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in &response.params {
            if seen.contains(&name.as_str()) {
                return Err(format!("duplicate parameter {name}"));
            }
            seen.push(name);
            match (name.as_str(), value) {
                ("server_no_context_takeover", None) => params.server_no_context_takeover = true,
                ("client_no_context_takeover", None) => params.client_no_context_takeover = true,
                ("server_max_window_bits", Some(v)) => {
                    let bits = window_bits(v)
                        .ok_or_else(|| format!("invalid server_max_window_bits={v}"))?;
                    if self.peer_window_bits < 15 && bits > self.peer_window_bits {
                        return Err(format!(
                            "server_max_window_bits={bits} is over the {} offered",
                            self.peer_window_bits
                        ));
                    }
                    params.server_max_window_bits = Some(bits);
                }
                ("client_max_window_bits", Some(v)) => {
                    params.client_max_window_bits = Some(
                        window_bits(v)
                            .ok_or_else(|| format!("invalid client_max_window_bits={v}"))?,
                    );
                }
                (name, _) => return Err(format!("unexpected parameter {name}")),
            }
        }
        if self.request_peer_no_context_takeover && !params.server_no_context_takeover {
            // §7.1.1.1: the server must honour it by including the parameter, or decline.
            return Err("server_no_context_takeover was requested but not granted".into());
        }
        Ok(params)
    }
}

/// Parses a window-bits value: a decimal 8 to 15, no leading zeros (§7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') {
        return None;
    }
    value.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

/// The parameters of one offer, validated (§7.1).
struct OfferParams {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: the parameter without a value.
    client_max_window_bits: Option<Option<u8>>,
}

impl OfferParams {
    fn parse(params: &[(String, Option<String>)], _from: Role) -> Option<OfferParams> {
        let mut out = OfferParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: None,
        };
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in params {
            if seen.contains(&name.as_str()) {
                return None;
            }
            seen.push(name);
            match (name.as_str(), value) {
                ("server_no_context_takeover", None) => out.server_no_context_takeover = true,
                ("client_no_context_takeover", None) => out.client_no_context_takeover = true,
                ("server_max_window_bits", Some(v)) => {
                    out.server_max_window_bits = Some(window_bits(v)?)
                }
                ("client_max_window_bits", None) => out.client_max_window_bits = Some(None),
                ("client_max_window_bits", Some(v)) => {
                    out.client_max_window_bits = Some(Some(window_bits(v)?))
                }
                _ => return None,
            }
        }
        Some(out)
    }
}

/// The agreed permessage-deflate parameters, as in the server's response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DeflateParams {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub client_no_context_takeover: bool,
    /// The server's compressor window is at most this (bits).
    pub server_max_window_bits: Option<u8>,
    /// The client's compressor window is at most this (bits).
    pub client_max_window_bits: Option<u8>,
}

impl DeflateParams {
    /// The `Sec-WebSocket-Extensions` value for these parameters.
    pub fn to_header(&self) -> String {
        let mut out = String::from(NAME);
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            out.push_str(&format!("; server_max_window_bits={bits}"));
        }
        if let Some(bits) = self.client_max_window_bits {
            out.push_str(&format!("; client_max_window_bits={bits}"));
        }
        out
    }
}
