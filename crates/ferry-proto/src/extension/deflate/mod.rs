//! permessage-deflate (RFC 7692): negotiation for both roles, and the codec.
//!
//! Built on zlib-rs (the engine behind flate2's `zlib-rs` backend) through its safe API, used
//! directly because flate2 does not expose zlib's `memLevel`, which decides most of a
//! compressor's memory (see `docs/compression.md`).
//!
//! **Window bits 8.** zlib, and zlib-rs after it, cannot produce a raw deflate stream with a
//! 256-byte window: asked for 8 it silently uses 9, and a peer with an 8-bit window could then
//! fail on distances it cannot reach. So when the peer limits this end's compressor to 8 bits
//! (`server_max_window_bits=8` in a client's offer, `client_max_window_bits=8` in a server's
//! response), ferry accepts the extension but sends every message uncompressed, which RFC 7692
//! always allows; it still decompresses what the peer sends.
//!
//! The negotiation is in `negotiation.rs`, the codec in `codec.rs`.
//!
//! **Feature `deflate`** (on by default) compiles the codec and zlib-rs. Without it the
//! settings types stay (so code that names them builds either way) but a handshake never offers
//! or accepts the extension: a server declines every offer, which RFC 7692 §5 allows, and a
//! client sends none.

#[cfg(feature = "deflate")]
mod codec;
mod negotiation;

#[cfg(feature = "deflate")]
pub use codec::{PerMessageDeflate, looks_compressed};
pub use negotiation::{DeflateConfig, DeflateParams};

/// The settings a handshake may use: `config`, or none when this build has no codec.
pub(crate) fn usable(config: Option<&DeflateConfig>) -> Option<&DeflateConfig> {
    config.filter(|_| cfg!(feature = "deflate"))
}

/// The extension token.
pub const NAME: &str = "permessage-deflate";

/// RSV1: the "Per-Message Compressed" bit (RFC 7692 §6).
pub const RSV1: u8 = 0b100;

#[cfg(all(test, feature = "deflate"))]
mod tests {
    use bytes::BytesMut;

    use super::codec::TAIL;
    use super::*;
    use crate::error::ProtocolError;
    use crate::extension::parse_extensions;
    use crate::extension::{Extension, ExtensionOffer};
    use crate::role::Role;

    /// Deterministic incompressible bytes (xorshift).
    fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    /// The RFC's defaults: context takeover, full windows, no threshold.
    fn classic() -> DeflateConfig {
        DeflateConfig {
            level: 6,
            peer_window_bits: 15,
            own_no_context_takeover: false,
            threshold: 0,
            ..DeflateConfig::default()
        }
    }

    #[test]
    fn default_answers_a_browser_with_shared_compressor_and_small_window() {
        let config = DeflateConfig::default();
        let (params, header) = config
            .accept_offer(&offer("permessage-deflate; client_max_window_bits"))
            .unwrap();
        assert_eq!(
            header,
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=12"
        );
        assert!(params.server_no_context_takeover);
        assert_eq!(
            config.client_offer(),
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits"
        );
    }

    fn offer(text: &str) -> Vec<ExtensionOffer> {
        parse_extensions(&[text]).unwrap()
    }

    #[test]
    fn server_accepts_browser_offer() {
        let config = classic();
        let (params, header) = config
            .accept_offer(&offer("permessage-deflate; client_max_window_bits"))
            .unwrap();
        assert_eq!(header, "permessage-deflate");
        assert_eq!(params, DeflateParams::default());
        let config = DeflateConfig {
            peer_window_bits: 12,
            ..classic()
        };
        let (_, header) = config
            .accept_offer(&offer("permessage-deflate; client_max_window_bits"))
            .unwrap();
        assert_eq!(header, "permessage-deflate; client_max_window_bits=12");
    }

    #[test]
    fn server_takes_first_acceptable_offer() {
        let config = classic();
        let offers = offer(
            "permessage-deflate; bogus, permessage-deflate; server_max_window_bits=9; server_no_context_takeover",
        );
        let (params, header) = config.accept_offer(&offers).unwrap();
        assert_eq!(
            header,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9"
        );
        assert_eq!(params.server_max_window_bits, Some(9));
    }

    #[test]
    fn server_declines_malformed_offers() {
        let config = classic();
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; x=1",
            "x-other",
        ] {
            assert_eq!(config.accept_offer(&offer(bad)), None, "{bad}");
        }
    }

    #[test]
    fn server_window_8_is_accepted_but_never_compressed() {
        let config = classic();
        let (params, header) = config
            .accept_offer(&offer("permessage-deflate; server_max_window_bits=8"))
            .unwrap();
        assert_eq!(header, "permessage-deflate; server_max_window_bits=8");
        let mut codec = PerMessageDeflate::new(Role::Server, params, &config);
        assert_eq!(codec.encode(&[b'a'; 1000], true), None);
        assert_eq!(codec.allocated(), (false, false));
    }

    #[test]
    fn client_validates_responses() {
        let config = classic();
        let ok = |text: &str| config.accept_response(&offer(text)[0]);
        assert!(ok("permessage-deflate").is_ok());
        assert_eq!(
            ok("permessage-deflate; client_max_window_bits=10")
                .unwrap()
                .client_max_window_bits,
            Some(10)
        );
        assert!(ok("permessage-deflate; client_max_window_bits").is_err());
        assert!(ok("permessage-deflate; server_max_window_bits=7").is_err());
        assert!(
            ok("permessage-deflate; server_no_context_takeover; server_no_context_takeover")
                .is_err()
        );
        assert!(ok("permessage-deflate; foo").is_err());
        assert!(ok("x-other").is_err());
        let asking = DeflateConfig {
            peer_window_bits: 10,
            ..classic()
        };
        assert!(
            asking
                .accept_response(&offer("permessage-deflate; server_max_window_bits=11")[0])
                .is_err()
        );
        assert_eq!(
            asking.client_offer(),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits"
        );
    }

    fn roundtrip(params: DeflateParams, messages: &[&[u8]]) {
        let config = DeflateConfig {
            threshold: 0,
            ..classic()
        };
        let mut server = PerMessageDeflate::new(Role::Server, params, &config);
        let mut client = PerMessageDeflate::new(Role::Client, params, &config);
        for message in messages {
            let compressed = server.compress(message);
            let Some(compressed) = compressed else {
                continue;
            };
            assert!(!compressed.ends_with(&TAIL));
            let mut out = BytesMut::new();
            // Split into three frames to exercise streaming inflation.
            let (a, rest) = compressed.split_at(compressed.len() / 3);
            let (b, c) = rest.split_at(rest.len() / 2);
            client.decompress(a, false, &mut out, 1 << 20).unwrap();
            client.decompress(b, false, &mut out, 1 << 20).unwrap();
            client.decompress(c, true, &mut out, 1 << 20).unwrap();
            assert_eq!(&out[..], *message);
        }
    }

    #[test]
    fn roundtrips_with_and_without_takeover() {
        let json: &[u8] = br#"{"type":"chat","room":"general","user":"alice","text":"hello there, how is everyone doing today?"}"#;
        let messages = [json, json, &[0u8; 5000][..], b"short but over zero", json];
        roundtrip(DeflateParams::default(), &messages);
        roundtrip(
            DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                ..Default::default()
            },
            &messages,
        );
        roundtrip(
            DeflateParams {
                server_max_window_bits: Some(9),
                ..Default::default()
            },
            &messages,
        );
    }

    #[test]
    fn context_takeover_shrinks_repeated_messages() {
        let config = DeflateConfig {
            threshold: 0,
            ..classic()
        };
        let json = br#"{"type":"chat","room":"general","user":"alice","text":"hello there, how is everyone doing today?"}"#;
        let mut takeover = PerMessageDeflate::new(Role::Server, DeflateParams::default(), &config);
        let first = takeover.compress(json).unwrap().len();
        let second = takeover.compress(json).unwrap().len();
        assert!(second < first / 3, "{first} then {second}");
        let params = DeflateParams {
            server_no_context_takeover: true,
            ..Default::default()
        };
        let mut fresh = PerMessageDeflate::new(Role::Server, params, &config);
        assert_eq!(fresh.compress(json).unwrap().len(), first);
        assert_eq!(fresh.compress(json).unwrap().len(), first);
    }

    #[test]
    fn incompressible_payload_goes_out_raw() {
        let config = DeflateConfig {
            threshold: 0,
            ..classic()
        };
        let mut codec = PerMessageDeflate::new(Role::Server, DeflateParams::default(), &config);
        let noise = noise(4096);
        assert_eq!(codec.compress(&noise), None);
        assert!(
            codec
                .encode(
                    b"\x1f\x8b\x08\x00 lots of gzip bytes here, more than the threshold....",
                    false
                )
                .is_none()
        );
    }

    #[test]
    fn bomb_stops_at_the_limit() {
        // 1 MiB of zeros compresses to about 1 KiB; inflating it with a 64 KiB limit must stop
        // after at most one more step.
        let config = DeflateConfig {
            threshold: 0,
            ..classic()
        };
        let mut server = PerMessageDeflate::new(Role::Server, DeflateParams::default(), &config);
        let bomb = server.compress(&vec![0u8; 1 << 20]).unwrap();
        assert!(bomb.len() < 2048, "{}", bomb.len());
        let mut client = PerMessageDeflate::new(Role::Client, DeflateParams::default(), &config);
        let mut out = BytesMut::new();
        let err = client
            .decompress(&bomb, true, &mut out, 64 * 1024)
            .unwrap_err();
        assert!(matches!(err, ProtocolError::MessageTooLarge { .. }));
        assert!(out.len() <= 2 * 64 * 1024 + 1);
    }

    #[test]
    fn garbage_is_invalid_compressed_data() {
        let mut client = PerMessageDeflate::new(Role::Client, DeflateParams::default(), &classic());
        let mut out = BytesMut::new();
        let mut garbage = BytesMut::from(&b"\xff\xff\xff\xff\xff"[..]);
        garbage.extend_from_slice(&TAIL);
        assert_eq!(
            client.decompress(&garbage, true, &mut out, 1 << 20),
            Err(ProtocolError::InvalidCompressedData)
        );
    }

    /// Regression: zlib-rs 0.6.8 at level 1 with memLevel 5 (the defaults) panicked inside
    /// `deflate_quick` when its output buffer ran short (Autobahn 12.2.* as client). Every size
    /// and kind of payload must now compress and inflate back, with and without takeover.
    #[test]
    fn level_1_small_mem_level_never_panics_on_any_payload() {
        let noise = noise(1 << 20);
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog; "
            .iter()
            .copied()
            .cycle()
            .take(1 << 20)
            .collect();
        for takeover in [true, false] {
            let config = DeflateConfig {
                own_no_context_takeover: !takeover,
                threshold: 0,
                ..DeflateConfig::default()
            };
            let mut server =
                PerMessageDeflate::new(Role::Server, DeflateParams::default(), &config);
            let mut client =
                PerMessageDeflate::new(Role::Client, DeflateParams::default(), &config);
            for size in [100usize, 1000, 10_000, 65_536, 100_000, 300_000, 1 << 20] {
                for data in [&noise[..size], &text[..size]] {
                    if let Some(compressed) = server.encode(data, false) {
                        let mut out = BytesMut::new();
                        client.decode(&compressed, true, &mut out, 2 << 20).unwrap();
                        assert_eq!(&out[..], data);
                    }
                }
            }
        }
    }

    #[test]
    fn state_is_allocated_lazily() {
        let config = DeflateConfig {
            threshold: 64,
            ..classic()
        };
        let mut codec = PerMessageDeflate::new(Role::Server, DeflateParams::default(), &config);
        assert_eq!(codec.allocated(), (false, false));
        assert_eq!(codec.encode(b"tiny", true), None); // under the threshold
        assert_eq!(codec.allocated(), (false, false));
        codec.encode(&[b'x'; 1000], true).unwrap();
        assert_eq!(codec.allocated(), (true, false));
    }

    #[test]
    fn without_takeover_nothing_stays_allocated_per_connection() {
        let params = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..Default::default()
        };
        let mut server = PerMessageDeflate::new(Role::Server, params, &DeflateConfig::default());
        let mut client = PerMessageDeflate::new(Role::Client, params, &DeflateConfig::default());
        let message = vec![b'x'; 5000];
        let compressed = server.encode(&message, true).unwrap();
        let mut out = BytesMut::new();
        client.decode(&compressed, true, &mut out, 1 << 20).unwrap();
        assert_eq!(&out[..], &message[..]);
        // Fragmented: the connection's own decompressor, dropped again at the end.
        let mut out = BytesMut::new();
        let (a, b) = compressed.split_at(compressed.len() / 2);
        client.decode(a, false, &mut out, 1 << 20).unwrap();
        assert_eq!(client.allocated(), (false, true));
        client.decode(b, true, &mut out, 1 << 20).unwrap();
        assert_eq!(&out[..], &message[..]);
        assert_eq!(server.allocated(), (false, false));
        assert_eq!(client.allocated(), (false, false));
    }
}
