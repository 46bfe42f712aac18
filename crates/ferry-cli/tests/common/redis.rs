//! A real `redis-server` for the cluster tests, on a free loopback port, with nothing saved to
//! disk (a restart comes back empty, as a Redis without persistence does).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    /// With [`Redis::start_tls`]: the TLS port, beside the plain one.
    pub tls_port: Option<u16>,
}

/// A loopback port nobody listens on (free when this returns).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Whether `redis-server` is here; where not, says so, and under CI (`CI` set) fails the test
/// instead: CI installs it.
pub fn installed() -> bool {
    let here = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !here {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed; .ci/run installs it (apt-get install redis-server)"
        );
        eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
    }
    here
}

impl Redis {
    /// Starts `redis-server`, or returns `None` (saying so) where it is not installed. Under
    /// CI (`CI` set) a missing `redis-server` fails the test instead: CI installs it.
    pub fn start() -> Option<Redis> {
        installed().then(|| Redis::start_on(free_port()))
    }

    /// Starts `redis-server` on `port` and waits until it answers.
    pub fn start_on(port: u16) -> Redis {
        Redis::spawn(port, &[], None)
    }

    /// Also serves TLS (`rediss://`) with this certificate and key (PEM files), on a port of
    /// its own; `None` where redis-server is not installed (see [`Redis::start`]).
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Option<Redis> {
        Redis::start()?;
        let tls_port = free_port();
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let tls = [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            cert,
            "--tls-key-file",
            key,
            "--tls-ca-cert-file",
            cert,
            "--tls-auth-clients",
            "no",
        ]
        .map(str::to_owned);
        Some(Redis::spawn(free_port(), &tls, Some(tls_port)))
    }

    fn spawn(port: u16, extra: &[String], tls_port: Option<u16>) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let redis = Redis {
            child: Some(child),
            port,
            tls_port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.try_command(&["PING"]).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: everything it held is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A fresh, empty Redis on the same port.
    pub fn restart_empty(&mut self) {
        self.kill();
        *self = Redis::start_on(self.port);
    }

    pub fn try_command(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut connection = client.get_connection_with_timeout(Duration::from_secs(2))?;
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command.query(&mut connection)
    }

    /// Runs a command; its answer as text (bulk strings), or one string a line (arrays).
    pub fn command(&self, args: &[&str]) -> String {
        fn text(value: redis::Value) -> String {
            match value {
                redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                redis::Value::SimpleString(s) => s,
                redis::Value::Int(n) => n.to_string(),
                redis::Value::Array(items) => {
                    items.into_iter().map(text).collect::<Vec<_>>().join("\n")
                }
                redis::Value::Okay => "OK".into(),
                other => format!("{other:?}"),
            }
        }
        text(self.try_command(args).expect("redis command"))
    }

    /// Calls of a command since the start, from INFO commandstats (`evalsha`, `publish`, ...).
    pub fn calls(&self, command: &str) -> u64 {
        let info = self.command(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
