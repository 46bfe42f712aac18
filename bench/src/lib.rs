//! What the peer servers share: the `--listen ADDR` flag, a tokio current_thread runtime, and a
//! listener. Every server sets TCP_NODELAY on each connection, as `ferry echo` does.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Parses `--listen ADDR` (the only flag); `--help` prints `about`.
pub fn listen_arg(name: &str, about: &str) -> String {
    let mut listen = String::from("127.0.0.1:9001");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => match args.next() {
                Some(addr) => listen = addr,
                None => usage(
                    name,
                    about,
                    "--listen needs an address such as 127.0.0.1:9001",
                ),
            },
            "-h" | "--help" => {
                println!("{name}: {about}\n\nUsage: {name} [--listen HOST:PORT]  (default 127.0.0.1:9001)");
                std::process::exit(0);
            }
            other => usage(name, about, &format!("unknown argument {other:?}")),
        }
    }
    listen
}

fn usage(name: &str, about: &str, problem: &str) -> ! {
    eprintln!("{name}: {problem}\n{name}: {about}\nUsage: {name} [--listen HOST:PORT]");
    std::process::exit(2);
}

/// A current_thread runtime: every connection on one thread, like `ferry echo --threads 1`.
pub fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start a tokio runtime: {err}");
            std::process::exit(1);
        }
    }
}

/// Binds `addr` or exits with the reason.
pub async fn bind(name: &str, addr: &str) -> TcpListener {
    match TcpListener::bind(addr).await {
        Ok(listener) => {
            eprintln!("{name} listening on {addr}");
            listener
        }
        Err(err) => {
            eprintln!("{name}: --listen {addr}: {err}; use a free HOST:PORT");
            std::process::exit(1);
        }
    }
}

/// Accepts connections forever, TCP_NODELAY on, each handled by `handle` on its own task.
pub async fn serve<F, Fut>(listener: TcpListener, handle: F) -> !
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(handle(stream));
            }
            Err(err) => {
                // Typically out of file descriptors: back off rather than spin.
                eprintln!("accept: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
