//! Bodies of the fuzz targets for what `ferry serve` parses from the network and from its
//! operator (`fuzz/fuzz_targets/{control_request,config_file,token_check}.rs`).
//!
//! Each asserts what must hold for any input, not only "does not panic": a failed assertion is
//! a crash, so the fuzzer reports it with the input.

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};

use crate::cmd::serve::auth::{AuthConfig, Verifier};
use crate::cmd::serve::config::ServeConfig;
use crate::cmd::serve::control::{Parsed, Request, parse};
use crate::cmd::serve::names::valid_name;

/// Longest refusal sentence: a refusal names a place in the request (a field, an index, a
/// valid topic name), never its text, so it stays short whatever was sent.
const MAX_REFUSAL_LEN: usize = 240;

/// A control request (one text message on `PREFIX/control`), checked against the default
/// topic rule.
///
/// Holds: a refusal is short; an accepted subscribe names at least one topic, every name valid
/// and distinct, and every `since` topic among them; a publish names a valid topic; an `id`
/// that comes back is a number or a string of at most 128 bytes.
pub fn control_request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Parsed { id, request } = parse(text, valid_name);
    if let Some(id) = &id {
        assert!(
            id.is_number() || id.as_str().is_some_and(|s| s.len() <= 128),
            "an id came back that is neither a number nor a short string: {id}"
        );
    }
    match request {
        Err(refused) => assert!(
            refused.message.len() <= MAX_REFUSAL_LEN,
            "a {} refusal of {} bytes: {}",
            refused.code,
            refused.message.len(),
            refused.message
        ),
        Ok(Request::Subscribe { topics, since }) => {
            assert!(!topics.is_empty());
            for (i, name) in topics.iter().enumerate() {
                assert!(valid_name(name), "accepted topic {name:?}");
                assert!(!topics[..i].contains(name), "topic {name:?} twice");
            }
            assert!(since.keys().all(|t| topics.contains(t)));
        }
        Ok(Request::Unsubscribe { topics }) => {
            assert!(!topics.is_empty() && topics.iter().all(|t| valid_name(t)));
        }
        Ok(Request::Publish { topic, .. }) => assert!(valid_name(&topic)),
        Ok(Request::Refresh { .. }) => {}
    }
}

/// A `--config` file.
///
/// Holds: a file that parses and validates prints (`--print-config`) as TOML that parses
/// again and prints the same, so what an operator is shown is what would run (secrets
/// redacted the same way twice).
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = toml::from_str::<ServeConfig>(text) else {
        return;
    };
    if config.validate().is_err() {
        return;
    }
    let shown = config.to_toml();
    let again: ServeConfig = toml::from_str(&shown)
        .unwrap_or_else(|e| panic!("the printed configuration does not parse: {e}\n{shown}"));
    assert_eq!(again.to_toml(), shown, "printing is not stable");
}

/// The HMAC secret of [`token_check`]'s verifier.
const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-0123456789";

/// A verifier that wants `aud = "ferry"` and `iss = "issuer"`, keyed with [`SECRET`].
static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    // The verifier reads its key from a file, once.
    let path = std::env::temp_dir().join(format!("ferry-fuzz-secret-{}", std::process::id()));
    std::fs::write(&path, SECRET).expect("write the fuzzing secret");
    let config = AuthConfig {
        hmac_secret_files: vec![path.clone()],
        audience: Some("ferry".into()),
        issuer: Some("issuer".into()),
        ..AuthConfig::default()
    };
    let verifier = Verifier::load(&config)
        .expect("the fuzzing verifier loads")
        .expect("a key is configured");
    let _ = std::fs::remove_file(&path);
    verifier
});

/// A token presented in a query string or a `refresh` request.
///
/// Input: `[mode] bytes...`. Mode bit 0 clear: `bytes` is the token as sent. Set: `bytes` is
/// a claims set, signed with the verifier's own key (HS256, or HS512 when bit 1 is set) so the
/// fuzzer reaches the claim checks behind the signature.
///
/// Holds: a token signed with another key, or with `alg: none`, is never accepted; an accepted
/// token carries an expiry in the future and only valid bridge names.
pub fn token_check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let verifier = &*VERIFIER;
    if mode & 1 == 0 {
        let Ok(token) = std::str::from_utf8(rest) else {
            return;
        };
        let signed_here = token.rsplit_once('.').is_some_and(|(signed, signature)| {
            [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
                .iter()
                .any(|&alg| sign(signed.as_bytes(), alg) == signature)
        });
        if let Ok(grant) = verifier.verify(token) {
            assert!(signed_here, "accepted a token not signed with the key");
            assert!(grant.bridges.iter().all(|b| valid_name(b)));
        }
        return;
    }
    let alg = if mode & 2 == 0 {
        Algorithm::HS256
    } else {
        Algorithm::HS512
    };
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg:?}","typ":"JWT"}}"#));
    let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(rest));
    let token = format!("{signed}.{}", sign(signed.as_bytes(), alg));
    if let Ok(grant) = verifier.verify(&token) {
        assert!(!grant.remaining().is_zero(), "accepted an expired token");
        assert!(grant.bridges.iter().all(|b| valid_name(b)));
    }
}

/// The base64url HMAC of `signed` with [`SECRET`].
fn sign(signed: &[u8], alg: Algorithm) -> String {
    let key = EncodingKey::from_secret(SECRET).expect("an HMAC key is any bytes");
    jsonwebtoken::crypto::sign(signed, &key, alg).expect("HMAC signs anything")
}
