//! Runs the real `ferry` binary as a separate process, so its file descriptors and memory can
//! be read from /proc.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Server {
    pub child: Child,
    pub addr: String,
    /// Everything the server wrote to stderr so far (its logs).
    logs: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts `ferry echo` on a free loopback port with extra flags, and waits until it listens.
    pub fn echo(flags: &[&str]) -> Server {
        Server::start("echo", "ws://", flags)
    }

    /// Starts `ferry echo` on a given address (to bring a killed server back on its port).
    pub fn echo_at(listen: &str, flags: &[&str]) -> Server {
        Server::start_at("echo", listen, "ws://", flags)
    }

    /// Starts `ferry serve` on a free loopback port with extra flags, and waits until it listens.
    pub fn serve(flags: &[&str]) -> Server {
        Server::start("serve", "http://", flags)
    }

    /// Starts `ferry bridge` on a free loopback port with extra flags.
    pub fn bridge(flags: &[&str]) -> Server {
        Server::start("bridge", "http://", flags)
    }

    /// Starts `ferry COMMAND --listen 127.0.0.1:0 FLAGS` and waits for the log line that says
    /// `SCHEME` followed by the address it listens on.
    pub fn start(command: &str, scheme: &str, flags: &[&str]) -> Server {
        Server::start_at(command, "127.0.0.1:0", scheme, flags)
    }

    /// Like [`start`](Self::start) on a given address (to bring a killed server back on its
    /// port).
    pub fn start_at(command: &str, listen: &str, scheme: &str, flags: &[&str]) -> Server {
        Server::start_with_env(command, listen, scheme, flags, &[])
    }

    /// Like [`start_at`](Self::start_at) with extra environment variables.
    pub fn start_with_env(
        command: &str,
        listen: &str,
        scheme: &str,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([command, "--listen", listen])
            .args(flags)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start ferry");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("ferry exited before listening")
                .expect("read stderr");
            if let Some(at) = line.find(scheme) {
                break line[at + scheme.len()..].trim().to_owned();
            }
        };
        // Keep draining stderr so the child never blocks on a full pipe, and keep the lines.
        let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        Server { child, addr, logs }
    }

    /// The server's logs so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Open file descriptors of the server process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits until the server's descriptor count drops to at most `limit`.
    pub async fn wait_fds_at_most(&self, limit: usize) -> usize {
        for _ in 0..200 {
            let n = self.fds();
            if n <= limit {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.fds()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal valid client handshake request.
pub const REQUEST: &[u8] =
    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A masked client frame.
pub fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

pub mod control;
pub mod fault_relay;
pub mod redis;
