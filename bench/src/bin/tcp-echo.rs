//! The floor: a plain tokio TCP echo of length-prefixed messages (4-byte big-endian length, then
//! the payload), with no WebSocket in it. It does what a WebSocket echo server does minus the
//! protocol: read into a reused buffer, find whole messages, write them back (all the whole
//! messages one read completed, in one write), on a current_thread runtime. A message too large
//! for the buffer is read straight into a second, reused buffer of its size, so no payload is
//! ever copied in user space.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Room for two 64 KiB messages. Allocated but not touched: an idle connection keeps resident
/// only the pages its reads wrote.
const BUF: usize = 128 * 1024;

fn main() {
    let listen = ferry_bench_peers::listen_arg(
        "tcp-echo",
        "echo length-prefixed messages over plain TCP (the floor for ferry bench --protocol tcp)",
    );
    ferry_bench_peers::runtime().block_on(async move {
        let listener = ferry_bench_peers::bind("tcp-echo", &listen).await;
        ferry_bench_peers::serve(listener, |stream| async move {
            let _ = echo(stream).await;
        })
        .await
    })
}

fn message_len(prefix: &[u8]) -> usize {
    4 + u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize
}

async fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(BUF);
    let mut large: Vec<u8> = Vec::new();
    let mut start = 0;
    loop {
        if buf.len() == buf.capacity() {
            // A partial message sits at `start`: move it to the front.
            buf.drain(..start);
            start = 0;
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let end = buf.len();
        let mut whole = start;
        while let Some(prefix) = buf[..end].get(whole..whole + 4) {
            let len = message_len(prefix);
            if len > BUF || end - whole < len {
                break;
            }
            whole += len;
        }
        if whole > start {
            stream.write_all(&buf[start..whole]).await?;
            start = whole;
        }
        if start == end {
            buf.clear();
            start = 0;
            continue;
        }
        let Some(len) = buf[..end].get(start..start + 4).map(message_len) else {
            continue;
        };
        if len <= BUF {
            continue;
        }
        // Larger than the buffer, so only its beginning is here: read the rest into `large`.
        large.clear();
        large.extend_from_slice(&buf[start..end]);
        buf.clear();
        start = 0;
        let rest = len - large.len();
        large.reserve(rest);
        (&mut stream)
            .take(rest as u64)
            .read_to_end(&mut large)
            .await?;
        if large.len() < len {
            return Ok(());
        }
        stream.write_all(&large).await?;
    }
}
