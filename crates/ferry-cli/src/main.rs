//! `ferry`: the WebSocket command line (the program is in the library, `src/lib.rs`).

fn main() -> std::process::ExitCode {
    ferry_cli::main()
}
