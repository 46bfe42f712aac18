//! The `ferry` command line as a library: [`main`] is the whole program (`src/main.rs` only
//! calls it), and [`fuzzing`] opens the parsers of untrusted input that live here (control
//! requests, the config file, signed tokens) to the fuzz targets in `fuzz/`. Nothing else is
//! public: the command's interface is `ferry --help`.

mod cmd;
#[doc(hidden)]
pub mod fuzzing;
mod size;
mod task_pool;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// WebSocket from the command line: servers, clients and tools.
#[derive(Parser, Debug)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr: text for people, json (one object per line) for log pipelines.
    /// RUST_LOG sets the level (default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    Serve(Box<cmd::serve::ServeArgs>),
    Connect(Box<cmd::connect::ConnectArgs>),
    Demo(cmd::demo::DemoArgs),
    Bridge(cmd::bridge::BridgeArgs),
    Echo(cmd::echo::EchoArgs),
    Forward(Box<cmd::forward::ForwardArgs>),
    Listen(cmd::listen::ListenArgs),
    Bench(cmd::bench::BenchArgs),
    Token(cmd::token::TokenArgs),
    #[command(hide = true)]
    AutobahnClient(cmd::autobahn::AutobahnArgs),
}

/// Runs the command with the process's arguments.
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    // The serving side's TLS names ring itself; ferry's wss:// clients and the Redis client's
    // rediss:// take the process's default provider, which rustls can only guess while exactly
    // one provider is compiled in. A build that also has ferry's `aws-lc-rs` feature (`cargo
    // test --workspace --all-features`) panicked in the Redis task, and the node stayed "not
    // connected yet". Installing ring makes every connection of the command use it.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        // Scripts branch on its exit status; it prints its own one-line error.
        Command::Connect(args) => return cmd::connect::run(*args),
        Command::Serve(args) => {
            let serve = matches.subcommand_matches("serve").unwrap_or(&matches);
            cmd::serve::run(*args, serve)
        }
        Command::Bridge(args) => cmd::bridge::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Echo(args) => cmd::echo::run(args),
        Command::Forward(args) => cmd::forward::run(*args),
        Command::Listen(args) => cmd::listen::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Token(args) => cmd::token::run(args),
        Command::AutobahnClient(args) => cmd::autobahn::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ferry: {err:#}");
            ExitCode::FAILURE
        }
    }
}
