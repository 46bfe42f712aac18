//! `ferry token`: signs a token for `ferry serve --jwt-hmac-secret-file`, so a person can try a
//! protected server in a minute. Backends mint their own (docs/auth.md).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::size::parse_duration;

/// Print a signed token (JWT) for a server started with --jwt-hmac-secret-file.
///
/// Patterns are topic names or prefixes ending in *: --subscribe 'chat.*'.
///
/// Examples:
///   openssl rand -hex 32 > secret
///   ferry serve --jwt-hmac-secret-file secret
///   ferry token --secret-file secret --sub alice --subscribe 'chat.*' --publish 'chat.*' --ttl 1h
///   ferry connect "ws://127.0.0.1:8080/ws/topics/chat.lobby" --token "$(ferry token --secret-file secret --sub bob --subscribe 'chat.*')"
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct TokenArgs {
    /// The HMAC secret: the file's bytes, a trailing newline trimmed (as ferry serve reads it).
    #[arg(long, value_name = "FILE")]
    pub secret_file: PathBuf,
    /// The user (sub claim), shown in the server's logs.
    #[arg(long, value_name = "ID")]
    pub sub: String,
    /// Topics the token may subscribe to (repeatable).
    #[arg(long = "subscribe", value_name = "PATTERN")]
    pub subscribe: Vec<String>,
    /// Topics the token may publish to (repeatable).
    #[arg(long = "publish", value_name = "PATTERN")]
    pub publish: Vec<String>,
    /// Bridges the token may open (repeatable).
    #[arg(long = "bridge", value_name = "NAME")]
    pub bridges: Vec<String>,
    /// How long the token is valid.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1h")]
    pub ttl: Duration,
    /// The aud claim, for a server started with --jwt-audience.
    #[arg(long, value_name = "AUDIENCE")]
    pub audience: Option<String>,
    /// The iss claim, for a server started with --jwt-issuer.
    #[arg(long, value_name = "ISSUER")]
    pub issuer: Option<String>,
    /// The signing algorithm.
    #[arg(long, value_enum, default_value = "hs256")]
    pub alg: HmacAlg,
}

/// The HMAC algorithms.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum HmacAlg {
    Hs256,
    Hs384,
    Hs512,
}

pub fn run(args: TokenArgs) -> Result<()> {
    println!("{}", sign(&args)?);
    Ok(())
}

fn sign(args: &TokenArgs) -> Result<String> {
    let mut secret = std::fs::read(&args.secret_file).with_context(|| {
        format!(
            "--secret-file {}: cannot read it; give the file ferry serve reads with --jwt-hmac-secret-file",
            args.secret_file.display()
        )
    })?;
    if secret.last() == Some(&b'\n') {
        secret.pop();
        if secret.last() == Some(&b'\r') {
            secret.pop();
        }
    }
    if secret.len() < 32 {
        bail!(
            "--secret-file {}: {} bytes is too short; ferry serve wants 32 at least (openssl rand -hex 32 > FILE)",
            args.secret_file.display(),
            secret.len()
        );
    }
    for pattern in args.subscribe.iter().chain(&args.publish) {
        crate::cmd::serve::check_pattern(pattern)
            .map_err(|e| anyhow!("--subscribe/--publish {e}"))?;
    }
    if args.ttl.is_zero() {
        bail!("--ttl 0s: the token would be expired already; try --ttl 1h");
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut claims = json!({
        "sub": args.sub,
        "iat": now,
        "exp": now + args.ttl.as_secs().max(1),
        "ferry": {"subscribe": args.subscribe, "publish": args.publish, "bridges": args.bridges},
    });
    if let Some(audience) = &args.audience {
        claims["aud"] = json!(audience);
    }
    if let Some(issuer) = &args.issuer {
        claims["iss"] = json!(issuer);
    }
    let alg = match args.alg {
        HmacAlg::Hs256 => Algorithm::HS256,
        HmacAlg::Hs384 => Algorithm::HS384,
        HmacAlg::Hs512 => Algorithm::HS512,
    };
    let key = EncodingKey::from_secret(&secret).context("the secret")?;
    jsonwebtoken::encode(&Header::new(alg), &claims, &key).context("signing the token")
}
