//! Who may connect, subscribe and publish: signed tokens (JWT, RFC 7519) checked before the
//! upgrade, and the permissions they carry (docs/auth.md).
//!
//! The application's backend signs a token per user, with an HMAC secret (HS256/384/512) or a
//! private key whose public half ferry holds (RS256/384/512, ES256/384, EdDSA). The token says
//! who (`sub`), until when (`exp`, required), and what: `"ferry": {"subscribe": [PATTERN],
//! "publish": [PATTERN], "bridges": [NAME]}`, where a pattern is a topic name or a prefix
//! ending in `*`. What a token does not grant is refused.
//!
//! A token is checked only against keys of its algorithm's family: an HMAC token never meets a
//! public key, so a token "signed" with the public key as an HMAC secret (key confusion) fails,
//! and `alg: none` is no algorithm at all here.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use super::names::valid_name;

/// The close code of a connection whose token expired (docs/auth.md), in the range RFC 6455
/// §7.4.2 leaves to applications.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;

/// `[auth]` in the config file; the `--jwt-*` flags.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Files holding HMAC secrets (the file's bytes, one trailing newline trimmed). Two during
    /// a rollover: tokens signed with either are accepted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hmac_secret_files: Vec<PathBuf>,
    /// PEM files of public keys (RSA, EC P-256/P-384, Ed25519); likewise several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<PathBuf>,
    /// When set, a token's `aud` must name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// When set, a token's `iss` must be it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: crate::size::Dur,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            hmac_secret_files: Vec::new(),
            public_keys: Vec::new(),
            audience: None,
            issuer: None,
            leeway: crate::size::Dur(Duration::ZERO),
        }
    }
}

impl AuthConfig {
    pub fn enabled(&self) -> bool {
        !self.hmac_secret_files.is_empty() || !self.public_keys.is_empty()
    }
}

/// A topic pattern: a name (`news`), or a prefix ending in `*` (`chat.*`; `*` alone: every
/// topic).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    prefix: String,
    wildcard: bool,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let (prefix, wildcard) = match text.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (text, false),
        };
        let prefix_ok = prefix.is_empty() && wildcard
            || prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && prefix.len() <= 64
                && !prefix.is_empty();
        if !prefix_ok {
            return Err(format!(
                "{text:?} is not a topic pattern; use a topic name (A-Z a-z 0-9 . _ -) or a prefix ending in * such as chat.*"
            ));
        }
        Ok(Pattern {
            prefix: prefix.to_owned(),
            wildcard,
        })
    }

    pub fn matches(&self, topic: &str) -> bool {
        if self.wildcard {
            topic.starts_with(&self.prefix)
        } else {
            topic == self.prefix
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.prefix, if self.wildcard { "*" } else { "" })
    }
}

/// What a verified token allows.
#[derive(Clone, Debug)]
pub struct Grant {
    /// The user, for logs (never the token).
    pub sub: Option<String>,
    /// When the token stops being valid (its `exp`, plus the leeway).
    pub expires: SystemTime,
    pub subscribe: Vec<Pattern>,
    pub publish: Vec<Pattern>,
    pub bridges: Vec<String>,
}

impl Grant {
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.subscribe.iter().any(|p| p.matches(topic))
    }

    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish.iter().any(|p| p.matches(topic))
    }

    pub fn may_bridge(&self, name: &str) -> bool {
        self.bridges.iter().any(|b| b == name)
    }

    /// How long from now until it expires (zero if it has).
    pub fn remaining(&self) -> Duration {
        self.expires
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }
}

/// Why a token was refused; `reason` is the metric label, `message` the response body (which
/// names no part of the token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// No token in `Authorization: Bearer` or `?token=`.
    Missing,
    /// Not three base64url parts of JSON.
    Malformed,
    /// An algorithm no configured key is for (`none` included).
    Algorithm,
    /// The signature does not verify with any key of the algorithm's family.
    Signature,
    Expired,
    /// `nbf` or `iat` in the future.
    NotYetValid,
    Audience,
    Issuer,
    /// The claims are not what ferry reads (no `exp`, a bad pattern, wrong types).
    Claims,
}

impl Rejected {
    pub fn reason(self) -> &'static str {
        match self {
            Rejected::Missing => "missing",
            Rejected::Malformed => "malformed",
            Rejected::Algorithm => "algorithm",
            Rejected::Signature => "signature",
            Rejected::Expired => "expired",
            Rejected::NotYetValid => "not_yet_valid",
            Rejected::Audience => "audience",
            Rejected::Issuer => "issuer",
            Rejected::Claims => "claims",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Rejected::Missing => {
                "a token is needed: Authorization: Bearer TOKEN, or ?token=TOKEN on the URL"
            }
            Rejected::Malformed => "the token is not a JWT",
            Rejected::Algorithm => "the token's algorithm is not accepted here",
            Rejected::Signature => "the token's signature does not verify",
            Rejected::Expired => "the token has expired",
            Rejected::NotYetValid => "the token is not valid yet",
            Rejected::Audience => "the token is for another audience",
            Rejected::Issuer => "the token is from another issuer",
            Rejected::Claims => "the token's claims are not valid (exp is required)",
        }
    }
}

/// The claims ferry reads.
#[derive(Deserialize)]
struct Claims {
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    ferry: FerryClaims,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct FerryClaims {
    subscribe: Vec<String>,
    publish: Vec<String>,
    bridges: Vec<String>,
}

const HMAC: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// Checks tokens against the configured keys.
pub struct Verifier {
    /// Every key with the algorithms it verifies.
    keys: Vec<(DecodingKey, Vec<Algorithm>)>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Reads the keys; `None` when none is configured (auth off). Errors name the flag.
    pub fn load(config: &AuthConfig) -> Result<Option<Verifier>, String> {
        if !config.enabled() {
            if config.audience.is_some() || config.issuer.is_some() {
                return Err("auth.audience / auth.issuer (--jwt-audience, --jwt-issuer) need a key: give --jwt-hmac-secret-file or --jwt-public-key".into());
            }
            return Ok(None);
        }
        let mut keys = Vec::new();
        for path in &config.hmac_secret_files {
            let flag = "auth.hmac_secret_files (--jwt-hmac-secret-file)";
            let mut secret = std::fs::read(path)
                .map_err(|e| format!("{flag} {}: cannot read it ({e})", path.display()))?;
            if secret.last() == Some(&b'\n') {
                secret.pop();
                if secret.last() == Some(&b'\r') {
                    secret.pop();
                }
            }
            if secret.len() < 32 {
                return Err(format!(
                    "{flag} {}: {} bytes is too short to be guessed by no one; use at least 32 (e.g. openssl rand -hex 32 > FILE)",
                    path.display(),
                    secret.len()
                ));
            }
            let key = DecodingKey::from_secret(&secret)
                .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
            keys.push((key, HMAC.to_vec()));
        }
        for path in &config.public_keys {
            let flag = "auth.public_keys (--jwt-public-key)";
            let pem = std::fs::read(path)
                .map_err(|e| format!("{flag} {}: cannot read it ({e})", path.display()))?;
            let key = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                (
                    key,
                    vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
                )
            } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                (key, vec![Algorithm::ES256, Algorithm::ES384])
            } else if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
                (key, vec![Algorithm::EdDSA])
            } else {
                return Err(format!(
                    "{flag} {}: not a PEM public key (RSA, EC P-256/P-384 or Ed25519); export it with openssl pkey -pubout",
                    path.display()
                ));
            };
            keys.push(key);
        }
        Ok(Some(Verifier {
            keys,
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
            leeway: config.leeway.0.as_secs(),
        }))
    }

    /// Verifies `token`: its algorithm, its signature with a key of that algorithm's family,
    /// its times, audience and issuer, and the permissions it carries.
    pub fn verify(&self, token: &str) -> Result<Grant, Rejected> {
        let alg = header_algorithm(token)?;
        let candidates: Vec<&DecodingKey> = self
            .keys
            .iter()
            .filter(|(_, algs)| algs.contains(&alg))
            .map(|(key, _)| key)
            .collect();
        if candidates.is_empty() {
            return Err(Rejected::Algorithm);
        }
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if let Some(audience) = &self.audience {
            validation.set_audience(&[audience]);
            validation.required_spec_claims.insert("aud".into());
        } else {
            validation.validate_aud = false;
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        let mut last = Rejected::Signature;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return self.grant(data.claims),
                Err(err) => {
                    last = match err.kind() {
                        ErrorKind::InvalidSignature => Rejected::Signature,
                        // The signature verified: no other key would change the verdict.
                        ErrorKind::ExpiredSignature => return Err(Rejected::Expired),
                        ErrorKind::ImmatureSignature => return Err(Rejected::NotYetValid),
                        ErrorKind::InvalidAudience => return Err(Rejected::Audience),
                        ErrorKind::InvalidIssuer => return Err(Rejected::Issuer),
                        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                            return Err(Rejected::Audience);
                        }
                        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => {
                            return Err(Rejected::Issuer);
                        }
                        ErrorKind::MissingRequiredClaim(_)
                        | ErrorKind::InvalidClaimFormat(_)
                        | ErrorKind::Json(_) => return Err(Rejected::Claims),
                        ErrorKind::InvalidAlgorithm => Rejected::Algorithm,
                        ErrorKind::Base64(_) | ErrorKind::InvalidToken | ErrorKind::Utf8(_) => {
                            return Err(Rejected::Malformed);
                        }
                        _ => Rejected::Signature,
                    };
                }
            }
        }
        Err(last)
    }

    fn grant(&self, claims: Claims) -> Result<Grant, Rejected> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // RFC 7519 §4.1.6: iat is when it was issued; one from the future is not valid yet.
        if claims
            .iat
            .is_some_and(|iat| iat > now.saturating_add(self.leeway))
        {
            return Err(Rejected::NotYetValid);
        }
        let patterns = |list: &[String]| -> Result<Vec<Pattern>, Rejected> {
            list.iter()
                .map(|p| Pattern::parse(p).map_err(|_| Rejected::Claims))
                .collect()
        };
        if !claims.ferry.bridges.iter().all(|b| valid_name(b)) {
            return Err(Rejected::Claims);
        }
        Ok(Grant {
            sub: claims.sub,
            expires: expiry(claims.exp.saturating_add(self.leeway)),
            subscribe: patterns(&claims.ferry.subscribe)?,
            publish: patterns(&claims.ferry.publish)?,
            bridges: claims.ferry.bridges,
        })
    }
}

/// The latest expiry ferry keeps: 9999-12-31T23:59:59Z. JSON allows an `exp` up to
/// `u64::MAX` seconds, which `SystemTime` cannot hold (adding it panics), so a later one is read
/// as this; it is still thousands of years away.
const LATEST_EXPIRY: u64 = 253_402_300_799;

/// The instant `exp` seconds after the epoch, capped at [`LATEST_EXPIRY`].
fn expiry(exp: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(exp.min(LATEST_EXPIRY))
}

/// The header's `alg`, read before any key is chosen: `none`, or a name jsonwebtoken does not
/// know, is [`Rejected::Algorithm`]; a header that is not base64url JSON is malformed.
fn header_algorithm(token: &str) -> Result<Algorithm, Rejected> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejected::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| Rejected::Malformed)?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| Rejected::Malformed)?;
    let alg = header
        .get("alg")
        .and_then(|a| a.as_str())
        .ok_or(Rejected::Malformed)?;
    alg.parse::<Algorithm>().map_err(|_| Rejected::Algorithm)
}

/// Removes `token=...` from a query string, for anything logged.
pub fn strip_token(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.starts_with("token="))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let chat = Pattern::parse("chat.*").unwrap();
        assert!(chat.matches("chat.lobby") && chat.matches("chat."));
        assert!(!chat.matches("chatroom") && !chat.matches("news"));
        let exact = Pattern::parse("news").unwrap();
        assert!(exact.matches("news") && !exact.matches("news.x"));
        assert!(Pattern::parse("*").unwrap().matches("anything"));
        for bad in ["", "a b", "ch*at", "**", "a/b*"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(chat.to_string(), "chat.*");
    }

    #[test]
    fn tokens_are_stripped_from_logged_queries() {
        assert_eq!(strip_token("a=1&token=secret&b=2"), "a=1&b=2");
        assert_eq!(strip_token("token=secret"), "");
    }

    #[test]
    fn the_header_algorithm_is_read_first() {
        let header = |json: &str| URL_SAFE_NO_PAD.encode(json);
        let token = |h: &str| format!("{}.e30.sig", header(h));
        assert_eq!(
            header_algorithm(&token(r#"{"alg":"none"}"#)),
            Err(Rejected::Algorithm)
        );
        assert_eq!(
            header_algorithm(&token(r#"{"alg":"HS256"}"#)),
            Ok(Algorithm::HS256)
        );
        assert_eq!(header_algorithm("a.b"), Err(Rejected::Malformed));
        assert_eq!(header_algorithm("!!.e30.x"), Err(Rejected::Malformed));
    }

    /// Found by the token_check fuzz target: an `exp` near `u64::MAX` (signed with the key) made
    /// the expiry overflow `SystemTime` and panic.
    #[test]
    fn an_expiry_beyond_what_time_holds_is_capped() {
        let secret = b"an-hmac-secret-of-thirty-two-bytes-at-least";
        let verifier = Verifier {
            keys: vec![(DecodingKey::from_secret(secret).unwrap(), HMAC.to_vec())],
            audience: None,
            issuer: None,
            leeway: 86_400, // the most the configuration allows
        };
        for exp in [u64::MAX, u64::MAX - 1, LATEST_EXPIRY + 1] {
            let claims = serde_json::json!({"exp": exp, "iat": 0, "ferry": {"subscribe": ["*"]}});
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret).unwrap(),
            )
            .unwrap();
            let grant = verifier.verify(&token).expect("a far expiry is valid");
            assert_eq!(grant.expires, expiry(LATEST_EXPIRY));
            assert!(grant.remaining() > Duration::from_secs(1 << 30));
            assert!(grant.may_subscribe("news"));
        }
    }
}
