//! A TCP relay that does to a stream what a bad network does: delays it (latency with jitter,
//! order kept, as TCP keeps it) or resets it in the middle of what is flowing. It stands in
//! for `tc netem`'s delay where the kernel has no netem (packet loss is made by nftables in
//! the test itself, which is real loss that TCP must repair).

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What the relay does to the bytes it carries, from the moment it is set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// Bytes pass as they come.
    Pass,
    /// Each read is held `base` plus or minus up to `jitter`, never overtaking the one before.
    Delay { base: Duration, jitter: Duration },
    /// After this many more bytes from the client, both connections are reset (RST, no FIN):
    /// once, then the relay passes again.
    ResetAfter(usize),
}

pub struct FaultRelay {
    /// Where clients connect.
    pub addr: String,
    fault: Arc<Mutex<Fault>>,
    resets: Arc<AtomicUsize>,
}

impl FaultRelay {
    /// Listens on a free loopback port and carries every connection to `target`.
    pub async fn start(target: &str) -> FaultRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let fault = Arc::new(Mutex::new(Fault::Pass));
        let resets = Arc::new(AtomicUsize::new(0));
        let target = target.to_owned();
        let (f, r) = (fault.clone(), resets.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (target, f, r) = (target.clone(), f.clone(), r.clone());
                // Connecting waits as long as the network says (a link that is down drops
                // the SYNs), so each connection gets its own task.
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return; // the client sees its connection closed, as with a dead target
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    carry(client, server, f, r).await;
                });
            }
        });
        FaultRelay {
            addr,
            fault,
            resets,
        }
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// Connections reset so far.
    pub fn resets(&self) -> usize {
        self.resets.load(Ordering::SeqCst)
    }
}

async fn carry(
    client: TcpStream,
    server: TcpStream,
    fault: Arc<Mutex<Fault>>,
    resets: Arc<AtomicUsize>,
) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let cut = Arc::new(AtomicU8::new(WHOLE));
    let mut up = tokio::spawn(direction(
        client_read,
        server_write,
        fault.clone(),
        cut.clone(),
        true,
    ));
    let mut down = tokio::spawn(direction(
        server_read,
        client_write,
        fault,
        cut.clone(),
        false,
    ));
    // Whichever direction ends first; the other is awaited (after a FIN) or dropped (after a
    // cut).
    let mut rest = tokio::select! {
        _ = &mut up => down,
        _ = &mut down => up,
    };
    match cut.load(Ordering::SeqCst) {
        WHOLE => {
            let _ = (&mut rest).await;
        }
        state => {
            if state == INJECTED {
                resets.fetch_add(1, Ordering::SeqCst);
            }
            // Dropping the reader ends its writer, which sees the cut and resets.
            rest.abort();
        }
    }
}

/// `cut` states: nothing cut; reset by a [`Fault::ResetAfter`]; reset by one of the ends (and
/// passed on to the other, as a path without the relay would).
const WHOLE: u8 = 0;
const INJECTED: u8 = 1;
const PASSED_ON: u8 = 2;

/// Carries one direction until EOF, passing the FIN on. In the client's direction
/// (`upstream`) a [`Fault::ResetAfter`] cuts the connection, and so does a reset from either
/// end; then both writers close their sockets with a zero linger (an RST, no FIN) instead of
/// shutting them down.
async fn direction(
    mut from: OwnedReadHalf,
    to: OwnedWriteHalf,
    fault: Arc<Mutex<Fault>>,
    cut: Arc<AtomicU8>,
    upstream: bool,
) {
    let (queue, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer_cut = cut.clone();
    let writer = tokio::spawn(async move {
        let mut to = to;
        let mut broken = false;
        while let Some((at, bytes)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if !broken && to.write_all(&bytes).await.is_err() {
                broken = true;
            }
        }
        if writer_cut.load(Ordering::SeqCst) != WHOLE {
            let _ = to.as_ref().set_zero_linger();
            to.forget();
        } else {
            let _ = to.shutdown().await;
        }
    });
    let mut random = Random::new(upstream);
    let mut last = Instant::now();
    let mut budget: Option<usize> = None;
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => break,
            // A reset passes through as a reset, as on a path without the relay: the other
            // side's queued bytes are dropped, not delivered late.
            Err(_) => {
                cut.store(PASSED_ON, Ordering::SeqCst);
                let _ = from.as_ref().set_zero_linger();
                break;
            }
            Ok(n) => n,
        };
        let now = Instant::now();
        let mut at = now;
        let current = *fault.lock().unwrap();
        match current {
            Fault::Pass => budget = None,
            Fault::Delay { base, jitter } => {
                budget = None;
                let spread = jitter.as_micros() as u64;
                let offset = if spread == 0 {
                    0
                } else {
                    random.next() % (2 * spread + 1)
                };
                at = (now + base + Duration::from_micros(offset))
                    .checked_sub(jitter)
                    .unwrap_or(now)
                    .max(last);
            }
            Fault::ResetAfter(limit) if upstream => {
                let left = budget.get_or_insert(limit);
                if n >= *left {
                    // What came before the cut goes out, then both sockets are reset.
                    let _ = queue.send((at, buf[..*left].to_vec()));
                    *fault.lock().unwrap() = Fault::Pass;
                    cut.store(INJECTED, Ordering::SeqCst);
                    let _ = from.as_ref().set_zero_linger();
                    break;
                }
                *left -= n;
            }
            Fault::ResetAfter(_) => {}
        }
        last = at;
        if queue.send((at, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(queue);
    let _ = writer.await;
}

/// xorshift64: jitter that needs no crate.
struct Random(u64);

impl Random {
    fn new(upstream: bool) -> Random {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.as_nanos() as u64);
        Random(seed | 1 | u64::from(upstream) << 63)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
