//! `ferry autobahn-client` (hidden): the client driver for the Autobahn|Testsuite fuzzingserver.
//!
//! The protocol: read the case count from `/getCaseCount`, run each case on
//! `/runCase?case=N&agent=A` by echoing every message until the close, then ask for the reports
//! on `/updateReports?agent=A`.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use ferry::{Config, Incoming, Limits, Message};

/// Run the Autobahn|Testsuite fuzzingserver cases against ferry's client.
#[derive(Args, Debug)]
pub struct AutobahnArgs {
    /// The fuzzingserver's URL.
    #[arg(long, default_value = "ws://127.0.0.1:9001")]
    pub url: String,
    /// The agent name the results are filed under.
    #[arg(long, default_value = "ferry")]
    pub agent: String,
}

pub fn run(args: AutobahnArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_all(args))
}

fn config() -> Config {
    Config {
        limits: Limits {
            max_message_size: 16 << 20,
            max_frame_size: 16 << 20,
            max_fragments: 1 << 20,
            send_queue_bytes: 16 << 20,
            recv_queue_bytes: 16 << 20,
            // Writing the reports takes the fuzzingserver a few seconds.
            handshake_timeout: Duration::from_secs(60),
            ..Limits::default()
        },
        ..Config::default()
    }
}

async fn run_all(args: AutobahnArgs) -> Result<()> {
    let url = args.url.trim_end_matches('/');
    let config = config();
    let (_sender, mut receiver, _) = ferry::connect_with(&format!("{url}/getCaseCount"), &config)
        .await
        .with_context(|| format!("cannot reach the fuzzingserver at {url}"))?;
    let count: u32 = match receiver.recv_message().await {
        Some(Message::Text(text)) => text.trim().parse().context("case count is not a number")?,
        other => return Err(anyhow!("expected the case count, got {other:?}")),
    };
    eprintln!("running {count} cases");
    for case in 1..=count {
        let case_url = format!("{url}/runCase?case={case}&agent={}", args.agent);
        if let Err(err) = run_case(&case_url, &config).await {
            eprintln!("case {case}: {err:#}");
        }
    }
    let (_sender, mut receiver, _) = ferry::connect_with(
        &format!("{url}/updateReports?agent={}", args.agent),
        &config,
    )
    .await?;
    while receiver.recv().await.is_some() {}
    eprintln!("reports updated");
    Ok(())
}

async fn run_case(url: &str, config: &Config) -> Result<()> {
    let (sender, mut receiver, _) = ferry::connect_with(url, config).await?;
    while let Some(item) = receiver.recv().await {
        match item {
            Incoming::Message(message) => {
                if sender.send(message).await.is_err() {
                    break;
                }
            }
            Incoming::Closed(_) => break,
        }
    }
    // Wait until the transport is done, so cases never overlap.
    sender.closed().await;
    Ok(())
}
