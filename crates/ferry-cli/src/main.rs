//! `ferry`: the WebSocket command line.

mod cmd;
mod size;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// WebSocket from the command line: servers, clients and tools.
#[derive(Parser, Debug)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Serve(cmd::serve::ServeArgs),
    Connect(Box<cmd::connect::ConnectArgs>),
    Demo(cmd::demo::DemoArgs),
    Echo(cmd::echo::EchoArgs),
    Forward(Box<cmd::forward::ForwardArgs>),
    Listen(cmd::listen::ListenArgs),
    Bench(cmd::bench::BenchArgs),
    #[command(hide = true)]
    AutobahnClient(cmd::autobahn::AutobahnArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let result = match cli.command {
        // Scripts branch on its exit status; it prints its own one-line error.
        Command::Connect(args) => return cmd::connect::run(*args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Echo(args) => cmd::echo::run(args),
        Command::Forward(args) => cmd::forward::run(*args),
        Command::Listen(args) => cmd::listen::run(args),
        Command::Bench(args) => cmd::bench::run(args),
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
