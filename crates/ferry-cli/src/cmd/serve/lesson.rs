//! `/demo/tcp-chunks?n=N`: the TCP half of the page's lesson panel.
//!
//! The server makes N writes of random sizes on a loopback TCP connection with small socket
//! buffers and reports the sizes of the reads that received them: TCP keeps the bytes but not
//! the writes' boundaries, so the reads split and merge them arbitrarily. The page sets this
//! next to N WebSocket messages arriving as exactly N.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;

/// Writes when `n` is not given: the page's message count.
const DEFAULT_WRITES: usize = 20;
/// Most writes one request may ask for (at most `MAX_WRITES * MAX_WRITE` bytes move).
const MAX_WRITES: usize = 1000;
/// Largest write, in bytes; each write is 1 to this many.
const MAX_WRITE: usize = 5000;
/// The socket buffers asked for on both ends (the kernel may round up, Linux doubles them):
/// small, so a write does not fit whole and reads see the kernel's cuts.
const SOCKET_BUFFER: u32 = 4096;
/// Demos running at once; more get 503 so the endpoint cannot be used to tie up the server.
const MAX_RUNNING: usize = 4;
/// The whole demo's time limit.
const TIME_LIMIT: Duration = Duration::from_secs(5);

static RUNNING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(MAX_RUNNING));

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    reply
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    reply
}

fn refuse(status: StatusCode, body: &str) -> Reply {
    reply(status, "text/plain; charset=utf-8", format!("{body}\n"))
}

/// Handles `GET /demo/tcp-chunks[?n=N]`.
pub async fn tcp_chunks(method: &hyper::Method, query: Option<&str>) -> Reply {
    if method != hyper::Method::GET {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    let n = match parse_n(query) {
        Ok(n) => n,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, why),
    };
    let Ok(_permit) = RUNNING.try_acquire() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the TCP demo is busy; try again in a moment",
        );
    };
    match tokio::time::timeout(TIME_LIMIT, run(n)).await {
        Ok(Ok(report)) => reply(StatusCode::OK, "application/json", report),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "TCP demo failed");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the loopback TCP demo failed",
            )
        }
        Err(_) => refuse(
            StatusCode::GATEWAY_TIMEOUT,
            "the loopback TCP demo timed out",
        ),
    }
}

/// `n` from the query: 1 to MAX_WRITES, DEFAULT_WRITES when absent.
fn parse_n(query: Option<&str>) -> Result<usize, &'static str> {
    let mut n = DEFAULT_WRITES;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("n", value)) => {
                n = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_WRITES).contains(n))
                    .ok_or("n must be a whole number from 1 to 1000")?;
            }
            _ => return Err("the only parameter is n, the number of writes (1 to 1000)"),
        }
    }
    Ok(n)
}

/// Runs the writes and reads; returns the JSON report.
async fn run(n: usize) -> std::io::Result<String> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(SOCKET_BUFFER)?;
    socket.bind("127.0.0.1:0".parse().map_err(std::io::Error::other)?)?;
    let recv_buffer = socket.recv_buffer_size().ok();
    let listener: TcpListener = socket.listen(1)?;
    let addr = listener.local_addr()?;
    let client = TcpSocket::new_v4()?;
    client.set_send_buffer_size(SOCKET_BUFFER)?;
    let buffers = (client.send_buffer_size().ok(), recv_buffer);
    let (connected, accepted) = tokio::join!(client.connect(addr), listener.accept());
    let mut writer = connected?;
    let (mut reader, _) = accepted?;
    writer.set_nodelay(true)?;

    let mut random = SplitMix(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    let writes: Vec<usize> = (0..n)
        .map(|_| 1 + (random.next() % MAX_WRITE as u64) as usize)
        .collect();
    let total: usize = writes.iter().sum();
    let write_all = async {
        for (i, size) in writes.iter().enumerate() {
            // Each write's bytes say which write they belong to: the reads show them cut up.
            let byte = b'a' + (i % 26) as u8;
            writer.write_all(&vec![byte; *size]).await?;
        }
        writer.shutdown().await
    };
    let read_all = async {
        let mut reads = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = 0;
        while seen < total {
            let got = reader.read(&mut buf).await?;
            if got == 0 {
                break;
            }
            reads.push(got);
            seen += got;
        }
        Ok::<_, std::io::Error>(reads)
    };
    let (written, reads) = tokio::join!(write_all, read_all);
    written?;
    let reads = reads?;
    Ok(format!(
        "{{\"n\":{n},\"bytes\":{total},\"send_buffer\":{},\"recv_buffer\":{},\"writes\":{},\"reads\":{}}}",
        json_number(buffers.0),
        json_number(buffers.1),
        json_list(&writes),
        json_list(&reads)
    ))
}

fn json_number(value: Option<u32>) -> String {
    value.map_or_else(|| "null".to_owned(), |v| v.to_string())
}

fn json_list(values: &[usize]) -> String {
    let items: Vec<String> = values.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(","))
}

/// A small non-cryptographic generator: the sizes need only vary from run to run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_is_checked() {
        assert_eq!(parse_n(None), Ok(DEFAULT_WRITES));
        assert_eq!(parse_n(Some("n=7")), Ok(7));
        assert!(parse_n(Some("n=0")).is_err());
        assert!(parse_n(Some("n=1001")).is_err());
        assert!(parse_n(Some("n=x")).is_err());
        assert!(parse_n(Some("m=3")).is_err());
    }

    #[tokio::test]
    async fn every_byte_arrives_whatever_the_reads() {
        let report = run(50).await.unwrap();
        let value: serde_json::Value = serde_json::from_str(&report).unwrap();
        let sum = |key: &str| -> u64 {
            value[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .sum()
        };
        assert_eq!(value["writes"].as_array().unwrap().len(), 50);
        assert_eq!(sum("writes"), sum("reads"));
        assert_eq!(sum("writes"), value["bytes"].as_u64().unwrap());
    }
}
