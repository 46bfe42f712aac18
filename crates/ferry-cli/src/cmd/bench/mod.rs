//! `ferry bench`: a load generator for echo and pub/sub servers, fit to measure the fastest ones.
//!
//! The client is raw on purpose. It does its own handshake (ferry-proto's `ClientHandshake`), then
//! writes frames that were built and masked once per run, reads into one reused buffer per
//! connection, decodes the server's frames with `FrameHeader::parse` and compares every echoed
//! byte with what it sent, without copying or assembling messages. Many connections share one
//! task (a `FuturesUnordered` per thread), each driven by a hand-written poll loop so a message
//! costs one `write`, one `read` and a share of one `epoll_wait`.
//!
//! Timing is per batch: one clock read per `write` and one per `read` that completes messages.
//! The measured window is the one between two snapshots taken by the main thread, which also
//! reads the server's CPU time (`utime + stime` in `/proc/PID/stat`) at the same two instants.
//!
//! With `--deflate` the payload is compressed once at start-up and what the server compresses is
//! inflated as it arrives ([`deflate`]). Fan-out (one publisher, many subscribers) is in
//! [`fanout`].
//!
//! The files, in the order a run meets them: `args.rs` (the command line), `settings.rs` (the
//! arguments checked, the servers resolved), `plan.rs` (the frames built once), `shared.rs`
//! (the phase and counters the threads share), `load.rs` (the load threads), `conn.rs` (one
//! connection: the poll loop and the streaming verifier), `sequence.rs` and `hub.rs` (fan-out's
//! numbering and completion counts), `snapshot.rs`, `proc.rs` and `progress.rs` (what the main
//! thread reads while the run goes), `histogram.rs` (latency) and `report.rs` (the figures, as
//! text or JSON). This file runs the phases.

mod args;
mod conn;
mod deflate;
mod fanout;
mod histogram;
mod hub;
mod load;
mod plan;
mod proc;
mod progress;
mod report;
mod sequence;
mod settings;
mod shared;
mod snapshot;

use std::io::{self, Write as _};
use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use self::args::Mode;
use self::hub::Hub;
use self::load::load_thread;
use self::plan::Plan;
use self::proc::{read_proc_stat, read_rss_kib};
use self::progress::Progress;
use self::report::{Outcome, Report, group};
use self::sequence::SEQ_LEN;
use self::settings::Settings;
use self::shared::{ABORT, CONNECTING, Counters, Event, MEASURE, STOP, Shared, WARMUP};
use self::snapshot::snapshot;
pub use args::BenchArgs;

/// How often the main thread looks at the counters (phase changes, stall check, progress).
const TICK: Duration = Duration::from_millis(100);
pub fn run(args: BenchArgs) -> Result<()> {
    let settings = Settings::resolve(args)?;
    let plan = Arc::new(Plan::new(&settings));
    let threads = settings.threads;
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(CONNECTING),
        counters: (0..threads).map(|_| Counters::default()).collect(),
        hub: (settings.mode == Mode::Fanout)
            .then(|| Hub::new(settings.pipeline, settings.connections, threads)),
    });
    let pid = settings.server_pid;
    let rss_before = pid.and_then(|p| read_rss_kib(p).ok());
    let server_start_ticks = pid.and_then(|p| read_proc_stat(p).ok());

    let (events_tx, events) = mpsc::channel();
    let mut go = Vec::new();
    let mut handles = Vec::new();
    for index in 0..threads {
        let ids = share(settings.connections, threads, index);
        let budget = settings.messages.map(|n| match settings.mode {
            // One publisher, on thread 0, sends them all.
            Mode::Fanout => n * u64::from(index == 0),
            _ => {
                let r = share(n as usize, threads, index);
                (r.end - r.start) as u64
            }
        });
        let (go_tx, go_rx) = mpsc::channel();
        go.push(go_tx);
        let (plan, shared, events_tx) = (plan.clone(), shared.clone(), events_tx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("bench-{index}"))
            .spawn(move || load_thread(plan, shared, index, ids, budget, go_rx, events_tx))
            .context("cannot start a load thread")?;
        handles.push(handle);
    }
    drop(events_tx);

    let mut progress = Progress::new(settings.quiet);
    let started = Instant::now();
    let outcome = drive(
        &settings,
        &shared,
        pid,
        &events,
        &go,
        &mut progress,
        started,
    );
    progress.finish();
    if outcome.is_err() {
        shared.set_phase(ABORT);
    }
    for tx in &go {
        let _ = tx.send(());
    }
    for handle in handles {
        let _ = handle.join();
    }
    let mut outcome = outcome?;
    outcome.rss_before = rss_before;
    outcome.server_start_ticks = server_start_ticks;
    let report = Report::new(&settings, &plan, outcome);
    let mut out = io::stdout().lock();
    if settings.json {
        writeln!(out, "{}", report.json())?;
    } else {
        write!(out, "{}", report.table())?;
    }
    Ok(())
}

/// Subscribers on the `k`th of `urls` URLs when subscriber i goes to URL i mod `urls`.
fn subscribers_on(subscribers: usize, urls: usize, k: usize) -> usize {
    subscribers / urls + usize::from(k < subscribers % urls)
}

/// The `index`th of `parts` near-equal shares of `0..total`.
fn share(total: usize, parts: usize, index: usize) -> Range<usize> {
    let base = total / parts;
    let extra = total % parts;
    let start = index * base + index.min(extra);
    let len = base + usize::from(index < extra);
    start..start + len
}

fn drive(
    s: &Settings,
    shared: &Shared,
    pid: Option<u32>,
    events: &mpsc::Receiver<Event>,
    go: &[mpsc::Sender<()>],
    progress: &mut Progress,
    started: Instant,
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let threads = s.threads;
    let mode = s.mode.name();
    // Connecting.
    let mut ready = 0;
    while ready < threads {
        match events.recv_timeout(TICK) {
            Ok(Event::Ready(Ok(()))) => ready += 1,
            Ok(Event::Ready(Err(e))) => return Err(e),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("a load thread died while connecting")
            }
        }
        check_server(pid)?;
        let (_, _, connected) = shared.totals();
        progress.show(
            |rate| {
                format!(
                    "{mode}: connecting {connected}/{} ({rate:.0}/s)",
                    s.connections
                )
            },
            connected,
        );
    }
    outcome.connect_secs = started.elapsed().as_secs_f64();
    outcome.connected = shared.totals().2;

    if s.mode == Mode::Idle {
        let hold_end = Instant::now() + s.hold;
        while Instant::now() < hold_end {
            std::thread::sleep(TICK.min(hold_end.saturating_duration_since(Instant::now())));
            check_server(pid)?;
            let left = hold_end
                .saturating_duration_since(Instant::now())
                .as_secs_f64();
            progress.show(
                |_| {
                    format!(
                        "idle: {} connections open; reading the server's RSS in {left:.1}s",
                        s.connections
                    )
                },
                0,
            );
        }
        outcome.rss_after = pid.and_then(|p| read_rss_kib(p).ok());
        outcome.end = Some(snapshot(shared, pid));
        shared.set_phase(STOP);
        for tx in go {
            let _ = tx.send(());
        }
        wait_done(events, threads, None, &mut outcome, s.timeout)?;
        return Ok(outcome);
    }

    if s.mode == Mode::Fanout {
        // The threads start receiving; the publisher sends sync messages until every
        // connection is subscribed, and publishes when the phase below says so.
        for tx in go {
            let _ = tx.send(());
        }
        wait_synced(s, shared, pid, events, progress)?;
    }

    // Warmup and measurement.
    let go_at = Instant::now();
    if s.warmup.is_zero() {
        outcome.start = Some(snapshot(shared, pid));
        shared.set_phase(MEASURE);
    } else {
        shared.set_phase(WARMUP);
    }
    if s.mode != Mode::Fanout {
        for tx in go {
            let _ = tx.send(());
        }
    }
    let warm_end = go_at + s.warmup;
    let mut measure_end = s.duration.map(|d| warm_end + d);
    let mut drained = 0;
    let mut done = 0;
    let mut last_messages = 0;
    let mut last_change = Instant::now();
    while done < threads {
        let now = Instant::now();
        let mut wait = TICK;
        if shared.phase() == WARMUP {
            wait = wait.min(warm_end.saturating_duration_since(now));
        }
        if let (MEASURE, Some(end)) = (shared.phase(), measure_end) {
            wait = wait.min(end.saturating_duration_since(now));
        }
        match events.recv_timeout(wait) {
            Ok(Event::Drained) => drained += 1,
            Ok(Event::Done(Ok((hist, warnings)))) => {
                done += 1;
                outcome.hist.merge(&hist);
                outcome.warnings.extend(warnings);
            }
            Ok(Event::Done(Err(e))) => return Err(e),
            Ok(Event::Ready(_) | Event::Synced) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("a load thread died"),
        }
        let now = Instant::now();
        let phase = shared.phase();
        if phase == WARMUP && now >= warm_end {
            outcome.start = Some(snapshot(shared, pid));
            shared.set_phase(MEASURE);
        }
        if shared.phase() == MEASURE {
            let finished = match measure_end {
                Some(end) => now >= end,
                None => drained == threads,
            };
            if finished {
                outcome.end = Some(snapshot(shared, pid));
                shared.set_phase(STOP);
                measure_end = None;
            }
        }
        let (messages, _, _) = shared.totals();
        if messages != last_messages {
            last_messages = messages;
            last_change = now;
        } else if shared.phase() < STOP && now.duration_since(last_change) > s.timeout {
            bail!(
                "no {} completed for --timeout {:?}: the server stalled (or is too slow for \
                 this --timeout)",
                if s.mode == Mode::Handshakes {
                    "handshake"
                } else {
                    "echo"
                },
                s.timeout
            );
        }
        if shared.phase() < STOP {
            check_server(pid)?;
        }
        let phase_name = match shared.phase() {
            WARMUP => "warmup",
            MEASURE => "measuring",
            _ => "closing",
        };
        let elapsed = go_at.elapsed().as_secs_f64();
        let unit = match s.mode {
            Mode::Handshakes => "handshakes",
            Mode::Fanout => "deliveries",
            _ => "msgs",
        };
        progress.show(
            |rate| {
                format!(
                    "{mode}: {phase_name} {elapsed:.1}s  {} {unit}  {}/s",
                    group(messages),
                    group(rate as u64)
                )
            },
            messages,
        );
    }
    if outcome.end.is_none() {
        outcome.end = Some(snapshot(shared, pid));
    }
    Ok(outcome)
}

/// fanout: waits until every subscriber and the publisher have seen a sync message.
fn wait_synced(
    s: &Settings,
    shared: &Shared,
    pid: Option<u32>,
    events: &mpsc::Receiver<Event>,
    progress: &mut Progress,
) -> Result<()> {
    let Some(hub) = &shared.hub else {
        bail!("internal: fanout without a hub")
    };
    let deadline = Instant::now() + s.timeout;
    loop {
        match events.recv_timeout(TICK) {
            Ok(Event::Synced) => return Ok(()),
            Ok(Event::Done(Err(e))) => return Err(e),
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("a load thread died"),
        }
        let synced = hub.synced.load(Ordering::Relaxed);
        if Instant::now() > deadline {
            bail!(
                "only {synced} of {} connections (the subscribers and the publisher) got the \
                 publisher's first message within --timeout {:?}: is --url a pub/sub topic that \
                 sends every message to every subscriber, the publisher too (ferry serve: \
                 ws://HOST:PORT/ws/topics/NAME)?",
                hub.receivers,
                s.timeout
            );
        }
        check_server(pid)?;
        progress.show(
            |_| {
                format!(
                    "fanout: subscribing: {synced}/{} connections have the first message",
                    hub.receivers
                )
            },
            0,
        );
    }
}

fn wait_done(
    events: &mpsc::Receiver<Event>,
    threads: usize,
    _pid: Option<u32>,
    outcome: &mut Outcome,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut done = 0;
    while done < threads {
        match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Event::Done(Ok((hist, warnings)))) => {
                done += 1;
                outcome.hist.merge(&hist);
                outcome.warnings.extend(warnings);
            }
            Ok(Event::Done(Err(e))) => return Err(e),
            Ok(_) => {}
            Err(_) => bail!("the load threads did not finish within --timeout {timeout:?}"),
        }
    }
    Ok(())
}

fn check_server(pid: Option<u32>) -> Result<()> {
    match pid {
        Some(pid) if std::fs::metadata(format!("/proc/{pid}")).is_err() => {
            bail!("--server-pid {pid}: the server exited during the run")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::args::{Kind, Protocol};
    use super::conn::Rx;
    use super::sequence::{SeqState, seq_prefix};
    use super::settings::{parse_source_ips, parse_url, parse_urls};
    use super::*;
    use ferry::proto::extension::deflate::RSV1;
    use ferry::proto::frame::FrameHeader;
    use ferry::proto::frame::MAX_HEADER_LEN;
    use ferry::proto::frame::OpCode;
    use ferry::proto::mask::apply_mask;

    #[test]
    fn shares_cover_everything_once() {
        let parts: Vec<_> = (0..3).map(|i| share(10, 3, i)).collect();
        assert_eq!(parts, [0..4, 4..7, 7..10]);
    }

    #[test]
    fn urls_and_source_ips() {
        let (addr, host, path) = parse_url("ws://127.0.0.1:9001/chat", Protocol::Ws).unwrap();
        assert_eq!(
            (addr.port(), host.as_str(), path.as_str()),
            (9001, "127.0.0.1:9001", "/chat")
        );
        assert!(
            parse_url("wss://x:1/", Protocol::Ws)
                .unwrap_err()
                .to_string()
                .contains("TLS")
        );
        assert!(parse_url("tcp://127.0.0.1:1", Protocol::Ws).is_err());
        // The scheme is case-insensitive and the port defaults to 80, as for every ferry client.
        let (addr, host, _) = parse_url("WS://127.0.0.1/", Protocol::Ws).unwrap();
        assert_eq!((addr.port(), host.as_str()), (80, "127.0.0.1"));
        assert_eq!(parse_url("127.0.0.1:7", Protocol::Tcp).unwrap().0.port(), 7);
        let ips = parse_source_ips("127.0.0.2-127.0.0.4,127.0.0.9", addr).unwrap();
        assert_eq!(ips.len(), 4);
        assert!(parse_source_ips("127.0.0.9-127.0.0.2", addr).is_err());
    }

    #[test]
    fn fanout_spreads_subscribers_over_urls_of_one_path() {
        let urls = |list: &[&str]| list.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        let two = urls(&[
            "ws://127.0.0.1:1/ws/topics/t",
            "ws://127.0.0.1:2/ws/topics/t",
        ]);
        let (targets, path) = parse_urls(&two, Mode::Fanout, Protocol::Ws).unwrap();
        assert_eq!(path, "/ws/topics/t");
        assert_eq!(
            targets.iter().map(|t| t.addr.port()).collect::<Vec<_>>(),
            [1, 2]
        );
        let err = |list: &[&str], mode| {
            parse_urls(&urls(list), mode, Protocol::Ws)
                .unwrap_err()
                .to_string()
        };
        for (list, mode, says) in [
            (
                &["ws://127.0.0.1:1/", "ws://127.0.0.1:2/"],
                Mode::Echo,
                "fanout",
            ),
            (
                &["ws://127.0.0.1:1/a", "ws://127.0.0.1:2/b"],
                Mode::Fanout,
                "path",
            ),
            (
                &["ws://127.0.0.1:1/a", "127.0.0.1:2/a"],
                Mode::Fanout,
                "scheme",
            ),
        ] {
            let e = err(list, mode);
            assert!(e.starts_with("--url") && e.contains(says), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }

        let mut a = args(Protocol::Ws, Kind::Binary, 20);
        a.mode = Mode::Fanout;
        a.pipeline = None;
        a.connections = Some(5);
        a.url = two.clone();
        let plan = Plan::new(&Settings::resolve(a).unwrap());
        let ports: Vec<u16> = (0..=5).map(|id| plan.target(id).addr.port()).collect();
        // Subscribers 0..5 alternate; the publisher (id 5) is on the first.
        assert_eq!(ports, [1, 2, 1, 2, 1, 1]);
        assert_eq!(
            (0..2).map(|k| subscribers_on(5, 2, k)).collect::<Vec<_>>(),
            [3, 2]
        );
        let mut few = args(Protocol::Ws, Kind::Binary, 20);
        few.mode = Mode::Fanout;
        few.pipeline = None;
        few.url = two;
        let e = Settings::resolve(few).err().unwrap().to_string();
        assert!(e.contains("--connections 2"), "{e}");
    }

    fn plan(protocol: Protocol, kind: Kind, size: usize) -> Plan {
        Plan::new(&Settings::resolve(args(protocol, kind, size)).unwrap())
    }

    fn args(protocol: Protocol, kind: Kind, size: usize) -> BenchArgs {
        BenchArgs {
            mode: Mode::Echo,
            url: vec![match protocol {
                Protocol::Ws => "ws://127.0.0.1:1/".into(),
                Protocol::Tcp => "tcp://127.0.0.1:1".into(),
            }],
            protocol,
            connections: Some(1),
            size: Some(size),
            pipeline: Some(3),
            kind,
            duration: None,
            messages: None,
            warmup: None,
            hold: None,
            path_per_connection: false,
            silent: false,
            threads: 1,
            server_pid: None,
            source_ips: None,
            timeout: Duration::from_secs(1),
            label: None,
            json: false,
            quiet: true,
            rate: None,
            deflate: false,
            http2: false,
            http2_streams: 100,
            payload: None,
        }
    }

    /// The server's side of the echo: unmasked frames, split as given.
    fn server_frames(payload: &[u8], opcode: OpCode, splits: &[usize]) -> Vec<u8> {
        frames(payload, opcode, splits, 0)
    }

    /// The server's side compressed: RSV1 on the first frame, the compressed bytes split.
    fn compressed_frames(payload: &[u8], opcode: OpCode, splits: &[usize]) -> Vec<u8> {
        let wire = deflate::compress(payload).expect("compressible payload");
        frames(&wire, opcode, splits, RSV1)
    }

    fn frames(payload: &[u8], opcode: OpCode, splits: &[usize], rsv: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let mut pieces = Vec::new();
        let mut at = 0;
        for &s in splits {
            pieces.push(&payload[at..s]);
            at = s;
        }
        pieces.push(&payload[at..]);
        let last = pieces.len() - 1;
        for (i, piece) in pieces.iter().enumerate() {
            let header = FrameHeader {
                fin: i == last,
                rsv: if i == 0 { rsv } else { 0 },
                opcode: if i == 0 { opcode } else { OpCode::Continuation },
                mask: None,
                payload_len: piece.len() as u64,
            };
            let mut bytes = [0; MAX_HEADER_LEN];
            let n = header.encode(&mut bytes);
            out.extend_from_slice(&bytes[..n]);
            out.extend_from_slice(piece);
        }
        out
    }

    fn feed(plan: &Plan, wire: &[u8], chunk: usize) -> Result<u64> {
        feed_rx(plan, &mut receiver(plan), wire, chunk)
    }

    /// A receiver as `open` leaves it: with an inflater when deflate is on (as if the server
    /// takes context over: the harder case), and sequence state in fanout.
    fn receiver(plan: &Plan) -> Rx {
        let mut rx = Rx::new(plan.read_buf);
        if plan.deflate.is_some() {
            rx.inflater = Some(deflate::Inflater::new(15, false));
        }
        if plan.mode == Mode::Fanout {
            rx.seq = Some(SeqState::new());
        }
        rx
    }

    fn feed_rx(plan: &Plan, rx: &mut Rx, wire: &[u8], chunk: usize) -> Result<u64> {
        let mut control = Vec::new();
        let mut done = 0;
        for piece in wire.chunks(chunk) {
            rx.buf[rx.end..rx.end + piece.len()].copy_from_slice(piece);
            rx.end += piece.len();
            done += rx.process(plan, &mut control)?;
        }
        Ok(done)
    }

    #[test]
    fn verifier_accepts_echoes_however_split() {
        for (kind, opcode) in [(Kind::Binary, OpCode::Binary), (Kind::Text, OpCode::Text)] {
            let plan = plan(Protocol::Ws, kind, 300);
            let mut wire = server_frames(&plan.payload, opcode, &[]);
            wire.extend(server_frames(&plan.payload, opcode, &[1, 200]));
            wire.extend(server_frames(&plan.payload, opcode, &[0, 0, 300]));
            for chunk in [1, 2, 3, 7, 100, 4096] {
                assert_eq!(feed(&plan, &wire, chunk).unwrap(), 3, "chunk {chunk}");
            }
        }
        let plan = plan(Protocol::Tcp, Kind::Binary, 5);
        let mut wire = 5u32.to_be_bytes().to_vec();
        wire.extend_from_slice(&plan.payload);
        wire.extend_from_slice(&wire.clone());
        assert_eq!(feed(&plan, &wire, 1).unwrap(), 2);
    }

    #[test]
    fn verifier_rejects_wrong_echoes() {
        let plan = plan(Protocol::Ws, Kind::Binary, 10);
        let mut wrong = plan.payload.clone();
        wrong[7] ^= 1;
        let err = feed(&plan, &server_frames(&wrong, OpCode::Binary, &[]), 3).unwrap_err();
        assert!(err.to_string().contains("byte 7"), "{err}");
        assert!(feed(&plan, &server_frames(&plan.payload, OpCode::Text, &[]), 64).is_err());
        assert!(
            feed(
                &plan,
                &server_frames(&plan.payload[..9], OpCode::Binary, &[]),
                64
            )
            .is_err()
        );
        let mut long = plan.payload.clone();
        long.push(0);
        assert!(feed(&plan, &server_frames(&long, OpCode::Binary, &[]), 64).is_err());
        assert!(
            feed(&plan, &[0x88, 0x02, 0x03, 0xe8], 64)
                .unwrap_err()
                .to_string()
                .contains("1000")
        );
        let tcp = super::tests::plan(Protocol::Tcp, Kind::Binary, 10);
        assert!(feed(&tcp, &[0, 0, 0, 9], 64).is_err());
    }

    #[test]
    fn frames_are_masked_and_batched() {
        let plan = plan(Protocol::Ws, Kind::Text, 20);
        assert_eq!(plan.frame_len, 2 + 4 + 20);
        assert_eq!(plan.batch_frames, 3);
        let (header, n) = FrameHeader::parse(&plan.batch).unwrap().unwrap();
        assert_eq!(header.opcode, OpCode::Text);
        let mut body = plan.batch[n..plan.frame_len].to_vec();
        apply_mask(&mut body, header.mask.unwrap(), 0);
        assert_eq!(body, plan.payload);
    }

    fn deflate_plan(mode: Mode, kind: Kind, size: usize) -> Plan {
        let mut a = args(Protocol::Ws, kind, size);
        a.mode = mode;
        a.deflate = true;
        a.pipeline = None;
        Plan::new(&Settings::resolve(a).unwrap())
    }

    fn fanout_plan(size: usize, deflate: bool) -> Plan {
        let mut a = args(Protocol::Ws, Kind::Binary, size);
        a.mode = Mode::Fanout;
        a.deflate = deflate;
        a.pipeline = None;
        Plan::new(&Settings::resolve(a).unwrap())
    }

    /// Message `seq` as the publisher means it: the payload with the number in front.
    fn numbered(plan: &Plan, seq: u64) -> Vec<u8> {
        let mut message = plan.payload.clone();
        message[..SEQ_LEN].copy_from_slice(&seq_prefix(seq));
        message
    }

    #[test]
    fn verifier_inflates_compressed_echoes_however_split() {
        for kind in [Kind::Binary, Kind::Text] {
            let plan = deflate_plan(Mode::Echo, kind, 3000);
            let opcode = plan.opcode;
            // Compressed whole, compressed across three frames, then one the server sent
            // uncompressed (below its threshold, say), all on one inflater.
            let mut wire = compressed_frames(&plan.payload, opcode, &[]);
            wire.extend(compressed_frames(&plan.payload, opcode, &[1, 50]));
            wire.extend(server_frames(&plan.payload, opcode, &[]));
            wire.extend(compressed_frames(&plan.payload, opcode, &[]));
            for chunk in [1, 7, 100, 4096] {
                assert_eq!(feed(&plan, &wire, chunk).unwrap(), 4, "chunk {chunk}");
            }
        }
    }

    #[test]
    fn verifier_rejects_wrong_compressed_echoes_and_misplaced_rsv1() {
        let plan = deflate_plan(Mode::Echo, Kind::Binary, 3000);
        let mut wrong = plan.payload.clone();
        wrong[2000] = b'#';
        let err = feed(&plan, &compressed_frames(&wrong, OpCode::Binary, &[]), 64).unwrap_err();
        assert!(err.to_string().contains("byte 2000"), "{err}");
        let long = [&plan.payload[..], b"x"].concat();
        let err = feed(&plan, &compressed_frames(&long, OpCode::Binary, &[]), 64).unwrap_err();
        assert!(err.to_string().contains("longer"), "{err}");
        // RSV1 on a continuation frame (RFC 7692 §6.1: first frame only).
        let mut bad = compressed_frames(&plan.payload, OpCode::Binary, &[10]);
        let second = 2 + 10;
        bad[second] |= 0x40;
        let err = feed(&plan, &bad, 64).unwrap_err();
        assert!(err.to_string().contains("RSV"), "{err}");
        // RSV1 without the extension negotiated.
        let plain = super::tests::plan(Protocol::Ws, Kind::Binary, 3000);
        let err = feed(
            &plain,
            &compressed_frames(&plain.payload, OpCode::Binary, &[]),
            64,
        )
        .unwrap_err();
        assert!(err.to_string().contains("without an extension"), "{err}");
    }

    #[test]
    fn deflate_frames_carry_rsv1_and_the_payload_compressed_once() {
        let plan = deflate_plan(Mode::Echo, Kind::Text, 2000);
        let (header, n) = FrameHeader::parse(&plan.batch).unwrap().unwrap();
        assert_eq!(header.rsv, RSV1);
        let mut body = plan.batch[n..plan.frame_len].to_vec();
        apply_mask(&mut body, header.mask.unwrap(), 0);
        let mut out = Vec::new();
        deflate::Inflater::new(15, true)
            .feed(&body, true, &mut |p| {
                out.extend_from_slice(p);
                Ok(())
            })
            .unwrap();
        assert_eq!(out, plan.payload);
        assert!(std::str::from_utf8(&plan.payload).is_ok());
        // Too small to shrink: the frame goes without RSV1.
        let small = deflate_plan(Mode::Echo, Kind::Binary, 20);
        assert_eq!(FrameHeader::parse(&small.batch).unwrap().unwrap().0.rsv, 0);
        assert!(small.deflate.as_ref().unwrap().compressed_len.is_none());
    }

    #[test]
    fn fanout_verifier_takes_syncs_then_every_number_in_order() {
        for deflate in [false, true] {
            let plan = fanout_plan(600, deflate);
            let op = plan.opcode;
            let frame = |seq| {
                if deflate {
                    compressed_frames(&numbered(&plan, seq), op, &[3])
                } else {
                    server_frames(&numbered(&plan, seq), op, &[5])
                }
            };
            let mut wire = server_frames(&[], op, &[]);
            wire.extend(server_frames(&[], op, &[]));
            wire.extend(frame(0));
            wire.extend(frame(1));
            for chunk in [1, 9, 4096] {
                let mut rx = receiver(&plan);
                assert_eq!(feed_rx(&plan, &mut rx, &wire, chunk).unwrap(), 2);
                let seq = rx.seq.as_ref().unwrap();
                assert_eq!((seq.syncs, seq.next), (2, 2));
                // A lost message is caught by the next one's number.
                let err = feed_rx(&plan, &mut rx, &frame(3), chunk).unwrap_err();
                assert!(err.to_string().contains("expected message #2"), "{err}");
            }
            // An empty message after numbered ones is not a sync.
            let mut rx = receiver(&plan);
            let mut late = frame(0);
            late.extend(server_frames(&[], op, &[]));
            let err = feed_rx(&plan, &mut rx, &late, 64).unwrap_err();
            assert!(err.to_string().contains("empty message"), "{err}");
        }
    }

    #[test]
    fn publisher_patches_the_number_into_the_masked_template() {
        for deflate in [false, true] {
            let plan = fanout_plan(1000, deflate);
            let seq = 0x0123_4567_89ab;
            // What Publisher::refill_messages does to each copy.
            let mut frame = plan.batch[..plan.frame_len].to_vec();
            let at = plan.seq_at;
            frame[at..at + SEQ_LEN].copy_from_slice(&seq_prefix(seq));
            apply_mask(
                &mut frame[at..at + SEQ_LEN],
                plan.mask,
                plan.seq_mask_offset,
            );
            let (header, n) = FrameHeader::parse(&frame).unwrap().unwrap();
            let mut body = frame[n..].to_vec();
            apply_mask(&mut body, header.mask.unwrap(), 0);
            let message = if deflate {
                assert_eq!(header.rsv, RSV1);
                let mut out = Vec::new();
                deflate::Inflater::new(15, true)
                    .feed(&body, true, &mut |p| {
                        out.extend_from_slice(p);
                        Ok(())
                    })
                    .unwrap();
                out
            } else {
                body
            };
            assert_eq!(message, numbered(&plan, seq), "deflate {deflate}");
        }
    }

    #[test]
    fn fanout_settings_are_checked_and_the_window_fits_the_send_queue() {
        let resolve = |f: &dyn Fn(&mut BenchArgs)| {
            let mut a = args(Protocol::Ws, Kind::Binary, 20);
            a.mode = Mode::Fanout;
            a.pipeline = None;
            f(&mut a);
            Settings::resolve(a).map_err(|e| e.to_string())
        };
        let error = |f: &dyn Fn(&mut BenchArgs)| resolve(f).err().unwrap_or_default();
        assert!(error(&|a| a.size = Some(15)).contains("--size 16"));
        assert!(error(&|a| a.rate = Some(0.0)).contains("--rate"));
        let window = |size| resolve(&|a| a.size = Some(size)).unwrap().pipeline;
        assert_eq!(window(20), 64);
        assert_eq!(window(16 << 10), 15);
        assert_eq!(window(1 << 20), 1);
        // At most a quarter of serve's default 1 MiB send queue per subscriber.
        for size in [20, 1 << 10, 16 << 10, 64 << 10] {
            assert!(
                window(size) * (size + MAX_HEADER_LEN) <= 256 << 10,
                "{size}"
            );
        }
        let mut echo = args(Protocol::Ws, Kind::Binary, 20);
        echo.rate = Some(10.0);
        assert!(Settings::resolve(echo).is_err());
        let mut tcp = args(Protocol::Tcp, Kind::Binary, 20);
        tcp.deflate = true;
        assert!(Settings::resolve(tcp).is_err());
    }
}
