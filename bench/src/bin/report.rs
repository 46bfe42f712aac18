//! Turns the JSON lines that `bench/run.sh` collected (one `ferry bench --json` result per run,
//! or an `error` record) into the markdown report: medians per cell, ratios to plain TCP, noise,
//! and the fan-out and deflate sections, which measure ferry alone.
//!
//! Usage: report RESULTS.jsonl MACHINE.txt > latest.md
//! MACHINE.txt holds `key<TAB>value` lines (machine, versions, settings), printed as a table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

/// The servers, in column order, by the label run.sh gives them. uWebSockets.js runs only where
/// npm is installed; without it its column shows dashes.
const SERVERS: [(&str, &str); 5] = [
    ("plain-tcp", "plain TCP"),
    ("ferry", "ferry"),
    ("fastwebsockets", "fastwebsockets"),
    ("tokio-tungstenite", "tokio-tungstenite"),
    ("uwebsockets-js", "uWebSockets.js"),
];
const FLOOR: &str = "plain-tcp";
const PEERS: [&str; 3] = ["fastwebsockets", "tokio-tungstenite", "uwebsockets-js"];
/// The fan-out section's server, and the deflate section's two clients of one `ferry echo`.
const FANOUT: &str = "ferry-serve";
const DEFLATE_ON: &str = "ferry-deflate";
const DEFLATE_OFF: &str = "ferry-plain";

struct Run {
    label: String,
    mode: String,
    connections: u64,
    size: u64,
    value: Value,
}

impl Run {
    fn f(&self, path: &[&str]) -> Option<f64> {
        let mut v = &self.value;
        for key in path {
            v = v.get(key)?;
        }
        v.as_f64()
    }

    fn error(&self) -> Option<&str> {
        self.value.get("error").and_then(Value::as_str)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(results), Some(machine)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: report RESULTS.jsonl MACHINE.txt > latest.md");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(results).unwrap_or_else(|e| {
        eprintln!("report: cannot read {results}: {e}");
        std::process::exit(1);
    });
    let machine = std::fs::read_to_string(machine).unwrap_or_default();
    let mut runs = Vec::new();
    let mut unreadable = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Value>(line) {
            Ok(value) => runs.push(Run {
                label: value["label"].as_str().unwrap_or("?").to_owned(),
                mode: value["mode"].as_str().unwrap_or("?").to_owned(),
                connections: value["connections"].as_u64().unwrap_or(0),
                size: value["size"].as_u64().unwrap_or(0),
                value,
            }),
            Err(_) => unreadable += 1,
        }
    }
    print!("{}", render(&runs, &machine, unreadable));
}

fn render(runs: &[Run], machine: &str, unreadable: usize) -> String {
    let mut out = String::new();
    let settings: BTreeMap<&str, &str> =
        machine.lines().filter_map(|l| l.split_once('\t')).collect();
    let _ = writeln!(out, "# ferry bench: latest results\n");
    if settings.get("quick") == Some(&"1") {
        let _ = writeln!(
            out,
            "> **QUICK=1 smoke run**: fewer cells, short runs. It shows the harness works end to \
             end; its numbers are not for comparison.\n"
        );
    }
    let _ = writeln!(
        out,
        "Produced by `bench/run.sh` (method and how to rerun: [bench/README.md](../README.md)). \
         Each server runs alone, pinned to one core (`taskset -c {}`), the Rust ones on a tokio \
         current_thread runtime; `ferry bench` runs pinned to another (`taskset -c {}`). Servers are interleaved \
         run by run (A B C D, B C D A, ...); every figure is the median of the runs of its cell. \
         uWebSockets.js is the C++ uWebSockets under Node (each message crosses into JavaScript \
         and back); its column is empty where npm was not installed. \
         **Server CPU per message** is utime+stime of the server process over the measured \
         window, divided by the messages echoed in it. On loopback the kernel's receive \
         processing of a segment runs on the sending core, so a server's figure holds the \
         receive of its echoes instead of that of its requests: similar work in an echo, and \
         alike for every server, but loopback µs, not network-card µs.\n",
        settings.get("server_cpu").unwrap_or(&"?"),
        settings.get("client_cpu").unwrap_or(&"?"),
    );
    let _ = writeln!(out, "## Machine and versions\n\n| | |\n|---|---|");
    for line in machine.lines() {
        if let Some((k, v)) = line.split_once('\t') {
            let _ = writeln!(out, "| {k} | {} |", v.replace('|', "\\|"));
        }
    }
    let _ = writeln!(out);

    echo_section(&mut out, runs);
    bulk_section(&mut out, runs);
    handshake_section(&mut out, runs);
    idle_section(&mut out, runs);
    fanout_section(&mut out, runs);
    deflate_section(&mut out, runs);
    problems_section(&mut out, runs, unreadable);
    out
}

fn ok_runs<'a>(runs: &'a [Run], mode: &'a str) -> impl Iterator<Item = &'a Run> {
    runs.iter()
        .filter(move |r| r.mode == mode && r.error().is_none())
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// (max - min) / median, the spread of a cell's runs.
fn spread(values: &[f64]) -> Option<f64> {
    let med = median(values.to_vec())?;
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    (med > 0.0 && values.len() > 1).then(|| (max - min) / med)
}

fn size_name(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

fn rate(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

type Cell = (u64, u64);

/// Values of `path` for each (cell, server), in run order.
fn collect(runs: &[Run], mode: &str, path: &[&str]) -> BTreeMap<(Cell, String), Vec<f64>> {
    let mut map: BTreeMap<(Cell, String), Vec<f64>> = BTreeMap::new();
    for run in ok_runs(runs, mode) {
        if let Some(v) = run.f(path) {
            map.entry(((run.connections, run.size), run.label.clone()))
                .or_default()
                .push(v);
        }
    }
    map
}

fn cells(runs: &[Run], mode: &str) -> Vec<Cell> {
    let mut cells: Vec<Cell> = runs
        .iter()
        .filter(|r| r.mode == mode)
        .map(|r| (r.connections, r.size))
        .collect();
    cells.sort();
    cells.dedup();
    cells
}

fn header(out: &mut String, first: &str, extra: &[&str]) {
    let _ = write!(out, "| {first} |");
    for (_, name) in SERVERS {
        let _ = write!(out, " {name} |");
    }
    for e in extra {
        let _ = write!(out, " {e} |");
    }
    let _ = write!(out, "\n|---|");
    for _ in SERVERS.iter().chain(extra.iter().map(|_| &SERVERS[0])) {
        let _ = write!(out, "---:|");
    }
    let _ = writeln!(out);
}

fn echo_section(out: &mut String, runs: &[Run]) {
    let cells = cells(runs, "echo");
    if cells.is_empty() {
        return;
    }
    let cpu = collect(runs, "echo", &["server", "cpu_us_per_op"]);
    let per_s = collect(runs, "echo", &["per_s"]);
    let sat = collect(runs, "echo", &["client", "cpu_util"]);
    let util = collect(runs, "echo", &["server", "cpu_util"]);
    let p50 = collect(runs, "echo", &["latency_us", "p50"]);
    let p99 = collect(runs, "echo", &["latency_us", "p99"]);
    let get = |map: &BTreeMap<(Cell, String), Vec<f64>>, cell: Cell, s: &str| {
        map.get(&(cell, s.to_owned())).cloned().unwrap_or_default()
    };
    let runs_per_cell = cells
        .iter()
        .flat_map(|&c| SERVERS.iter().map(move |(s, _)| (c, *s)))
        .map(|(c, s)| get(&cpu, c, s).len())
        .max()
        .unwrap_or(0);

    let kind = ok_runs(runs, "echo")
        .find(|r| r.label != FLOOR)
        .and_then(|r| r.value["kind"].as_str())
        .unwrap_or("binary");
    let pipeline = ok_runs(runs, "echo")
        .find_map(|r| r.value["pipeline"].as_u64())
        .unwrap_or(1);
    let _ = writeln!(
        out,
        "## Echo: server CPU per message\n\nMedian µs of server CPU per echoed message; for each \
         WebSocket server, its ratio to plain TCP in the same cell, then the µs. `ferry / best \
         peer` compares ferry with the best of fastwebsockets, tokio-tungstenite and uWebSockets.js \
         (where it ran). Target \
         (issue 4): ferry ≤ 1.03 × plain TCP and ≤ the best peer. Messages: {kind}, {pipeline} \
         in flight per connection; up to {runs_per_cell} runs per cell.\n"
    );
    header(
        out,
        "connections × payload",
        &["ferry / best peer", "target"],
    );
    for &cell in &cells {
        let floor = median(get(&cpu, cell, FLOOR));
        let _ = write!(out, "| {} × {} |", cell.0, size_name(cell.1));
        for (server, _) in SERVERS {
            let m = median(get(&cpu, cell, server));
            let _ = match (m, floor) {
                (Some(m), _) if server == FLOOR => write!(out, " 1.00 ({m:.2} µs) |"),
                (Some(m), Some(f)) if f > 0.0 => write!(out, " {:.2} ({m:.2}) |", m / f),
                (Some(m), _) => write!(out, " ({m:.2} µs) |"),
                (None, _) => write!(out, " – |"),
            };
        }
        let ferry = median(get(&cpu, cell, "ferry"));
        let best = PEERS
            .iter()
            .filter_map(|p| median(get(&cpu, cell, p)))
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.min(b))));
        let _ = match (ferry, best) {
            (Some(f), Some(b)) if b > 0.0 => write!(out, " {:.2} |", f / b),
            _ => write!(out, " – |"),
        };
        let _ = match (ferry, floor, best) {
            (Some(f), Some(t), Some(b)) => {
                let met = f <= 1.03 * t && f <= b;
                write!(out, " {} |", if met { "met" } else { "**missed**" })
            }
            _ => write!(out, " – |"),
        };
        let _ = writeln!(out);
    }

    let _ = writeln!(
        out,
        "\n## Echo: messages per second\n\nMedian messages/s, and in brackets the server's CPU \
         use in the measured window (100% = one core busy). † marks a cell where `ferry bench` \
         used ≥ 95% of its core in most runs: the load generator, not the server, set the pace, \
         so messages/s there is a tie by the issue's rule and server CPU per message is the \
         figure that separates servers.\n"
    );
    header(out, "connections × payload", &["ferry / best peer"]);
    for &cell in &cells {
        let _ = write!(out, "| {} × {} |", cell.0, size_name(cell.1));
        for (server, _) in SERVERS {
            let r = median(get(&per_s, cell, server));
            let saturated = {
                let s = get(&sat, cell, server);
                s.iter().filter(|u| **u >= 0.95).count() * 2 > s.len()
            };
            let u = median(get(&util, cell, server));
            let _ = match r {
                Some(r) => write!(
                    out,
                    " {}{} ({}) |",
                    rate(r),
                    if saturated { "†" } else { "" },
                    u.map_or("–".into(), |u| format!("{:.0}%", u * 100.0))
                ),
                None => write!(out, " – |"),
            };
        }
        let ferry = median(get(&per_s, cell, "ferry"));
        let best = PEERS
            .iter()
            .filter_map(|p| median(get(&per_s, cell, p)))
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
        let _ = match (ferry, best) {
            (Some(f), Some(b)) if b > 0.0 => writeln!(out, " {:.2} |", f / b),
            _ => writeln!(out, " – |"),
        };
    }

    let _ = writeln!(
        out,
        "\n## Echo: latency\n\nMedian over runs of each run's p50 / p99 round trip (send to \
         whole echo verified), in µs.\n"
    );
    header(out, "connections × payload", &[]);
    for &cell in &cells {
        let _ = write!(out, "| {} × {} |", cell.0, size_name(cell.1));
        for (server, _) in SERVERS {
            let _ = match (
                median(get(&p50, cell, server)),
                median(get(&p99, cell, server)),
            ) {
                (Some(a), Some(b)) => write!(out, " {a:.0} / {b:.0} |"),
                _ => write!(out, " – |"),
            };
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(
        out,
        "\n## Noise\n\nSpread of server CPU per message across a cell's runs: (max − min) / \
         median. A ratio between two servers means little when it is smaller than their \
         spreads.\n"
    );
    header(out, "connections × payload", &[]);
    let mut all = Vec::new();
    for &cell in &cells {
        let _ = write!(out, "| {} × {} |", cell.0, size_name(cell.1));
        for (server, _) in SERVERS {
            let s = spread(&get(&cpu, cell, server));
            if let Some(s) = s {
                all.push(s);
            }
            let _ = match s {
                Some(s) => write!(out, " ±{:.1}% |", s * 50.0),
                None => write!(out, " – |"),
            };
        }
        let _ = writeln!(out);
    }
    if let Some(m) = median(all) {
        let _ = writeln!(
            out,
            "\nMedian spread over all cells and servers: ±{:.1}% (shown as ± half the range).",
            m * 50.0
        );
    }
    let _ = writeln!(out);
}

fn bulk_section(out: &mut String, runs: &[Run]) {
    let cells = cells(runs, "bulk");
    if cells.is_empty() {
        return;
    }
    let mbs = collect(runs, "bulk", &["payload_mb_per_s"]);
    let cpu = collect(runs, "bulk", &["server", "cpu_us_per_op"]);
    let pipeline = ok_runs(runs, "bulk")
        .find_map(|r| r.value["pipeline"].as_u64())
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "## Bulk: large binary messages\n\nMedian echoed payload MB/s (10⁶ bytes, each way), \
         {pipeline} messages in flight; in brackets the ratio to plain TCP. Target: ferry ≥ 0.9 × \
         plain TCP. Below it, server CPU ms per message.\n"
    );
    header(out, "connections × message", &[]);
    for &cell in &cells {
        let floor = median(mbs.get(&(cell, FLOOR.into())).cloned().unwrap_or_default());
        let _ = write!(out, "| {} × {} |", cell.0, size_name(cell.1));
        for (server, _) in SERVERS {
            let m = median(mbs.get(&(cell, server.into())).cloned().unwrap_or_default());
            let _ = match (m, floor) {
                (Some(m), Some(f)) if f > 0.0 => write!(out, " {m:.0} ({:.2}) |", m / f),
                (Some(m), _) => write!(out, " {m:.0} |"),
                _ => write!(out, " – |"),
            };
        }
        let _ = writeln!(out);
        let _ = write!(out, "| server CPU per message |");
        for (server, _) in SERVERS {
            let m = median(cpu.get(&(cell, server.into())).cloned().unwrap_or_default());
            let _ = match m {
                Some(m) => write!(out, " {:.2} ms |", m / 1e3),
                None => write!(out, " – |"),
            };
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
}

fn handshake_section(out: &mut String, runs: &[Run]) {
    let rates = collect(runs, "handshakes", &["per_s"]);
    if rates.is_empty() {
        return;
    }
    let cpu = collect(runs, "handshakes", &["server", "cpu_us_per_op"]);
    let client = collect(runs, "handshakes", &["client", "cpu_util"]);
    let concurrency = ok_runs(runs, "handshakes")
        .map(|r| r.connections)
        .next()
        .unwrap_or(0);
    let fws = median(
        rates
            .iter()
            .filter(|((_, s), _)| s == "fastwebsockets")
            .flat_map(|(_, v)| v.clone())
            .collect(),
    );
    let _ = writeln!(
        out,
        "## Handshakes\n\nConnect, upgrade, echo one 20-byte message, close (the server closes \
         TCP first), over and over from {concurrency} concurrent loops. Median handshakes/s; \
         target: ferry ≥ 1.2 × fastwebsockets. Plain TCP does connect, one length-prefixed \
         echo, close. When `ferry bench` used ≥ 95% of its core (†), it set the pace: compare \
         server CPU per handshake instead.\n\n\
         | server | handshakes/s | vs fastwebsockets | server CPU per handshake | client CPU |\n\
         |---|---:|---:|---:|---:|"
    );
    for (server, name) in SERVERS {
        let pick = |map: &BTreeMap<(Cell, String), Vec<f64>>| {
            median(
                map.iter()
                    .filter(|((_, s), _)| s == server)
                    .flat_map(|(_, v)| v.clone())
                    .collect(),
            )
        };
        let (r, c, u) = (pick(&rates), pick(&cpu), pick(&client));
        let saturated = u.is_some_and(|u| u >= 0.95);
        let _ = writeln!(
            out,
            "| {name} | {}{} | {} | {} | {} |",
            r.map_or("–".into(), rate),
            if saturated { "†" } else { "" },
            match (r, fws) {
                (Some(r), Some(f)) if f > 0.0 => format!("{:.2}", r / f),
                _ => "–".into(),
            },
            c.map_or("–".into(), |c| format!("{c:.1} µs")),
            u.map_or("–".into(), |u| format!("{:.0}%", u * 100.0)),
        );
    }
    let _ = writeln!(out);
}

fn idle_section(out: &mut String, runs: &[Run]) {
    let per = collect(runs, "idle", &["server", "rss_per_conn_kib"]);
    if per.is_empty() {
        return;
    }
    let connections = ok_runs(runs, "idle")
        .map(|r| r.connections)
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "## Idle memory\n\nServer RSS growth (VmRSS after − before) over {connections} connections \
         that have each echoed one 20-byte message and then stay idle, per connection; median of \
         runs. Target: ferry ≤ 1 KiB.\n\n| server | KiB per idle connection |\n|---|---:|"
    );
    for (server, name) in SERVERS {
        let m = median(
            per.iter()
                .filter(|((_, s), _)| s == server)
                .flat_map(|(_, v)| v.clone())
                .collect(),
        );
        let _ = writeln!(
            out,
            "| {name} | {} |",
            m.map_or("–".into(), |m| format!("{m:.2}"))
        );
    }
    let _ = writeln!(out);
}

/// Medians of `path` per (cell) for one label and mode.
fn by_cell(runs: &[Run], mode: &str, label: &str, path: &[&str]) -> BTreeMap<Cell, f64> {
    collect(runs, mode, path)
        .into_iter()
        .filter(|((_, l), _)| l == label)
        .filter_map(|((cell, _), v)| Some((cell, median(v)?)))
        .collect()
}

fn fanout_section(out: &mut String, runs: &[Run]) {
    let per_s = by_cell(runs, "fanout", FANOUT, &["per_s"]);
    if per_s.is_empty() {
        return;
    }
    let published = by_cell(runs, "fanout", FANOUT, &["fanout", "published_per_s"]);
    let cpu = by_cell(runs, "fanout", FANOUT, &["server", "cpu_us_per_op"]);
    let util = by_cell(runs, "fanout", FANOUT, &["server", "cpu_util"]);
    let client = by_cell(runs, "fanout", FANOUT, &["client", "cpu_util"]);
    let p50 = by_cell(runs, "fanout", FANOUT, &["latency_us", "p50"]);
    let p99 = by_cell(runs, "fanout", FANOUT, &["latency_us", "p99"]);
    let window = ok_runs(runs, "fanout")
        .find_map(|r| r.value["pipeline"].as_u64())
        .map_or("its default".into(), |w| w.to_string());
    let _ = writeln!(
        out,
        "## Fan-out: ferry serve pub/sub\n\nOne publisher and N subscribers on one topic of \
         `ferry serve` (`/ws/topics/bench`), binary messages. Every subscriber checks every \
         message byte for byte and in order. The publisher keeps at most {window} messages in \
         flight (the first cell's window; `ferry bench` picks it per size so that it stays \
         under a quarter of serve's 1 MiB `--send-queue`): a message is in flight until every \
         subscriber, and the publisher itself (serve sends it its own messages), has it, so \
         the slow-subscriber policy never fires. **Server CPU per delivery** divides the \
         server's CPU time by every delivery it made, the publisher's copies included. Latency \
         is from the publisher's write to each subscriber's whole message. No peer here has \
         pub/sub, so there is nothing to compare with; † as above (the generator set the pace). \
         `ferry serve` runs its multi-threaded runtime on the one pinned core. When neither \
         side is busy, deliveries/s is bounded by the window and the latency (Little's law), \
         not by CPU: compare server CPU per delivery. Medians of runs.\n\n\
         | subscribers × payload | deliveries/s | published/s | server CPU per delivery | \
         server CPU use | latency p50 / p99 | client CPU |\n\
         |---|---:|---:|---:|---:|---:|---:|"
    );
    for (cell, rate_v) in &per_s {
        let saturated = client.get(cell).is_some_and(|u| *u >= 0.95);
        let ms = |v: Option<&f64>| v.map_or("–".into(), |v| format!("{:.2} ms", v / 1e3));
        let _ = writeln!(
            out,
            "| {} × {} | {}{} | {} | {} | {} | {} / {} | {} |",
            cell.0,
            size_name(cell.1),
            rate(*rate_v),
            if saturated { "†" } else { "" },
            published.get(cell).map_or("–".into(), |v| rate(*v)),
            cpu.get(cell).map_or("–".into(), |v| format!("{v:.2} µs")),
            util.get(cell)
                .map_or("–".into(), |v| format!("{:.0}%", v * 100.0)),
            ms(p50.get(cell)),
            ms(p99.get(cell)),
            client
                .get(cell)
                .map_or("–".into(), |v| format!("{:.0}%", v * 100.0)),
        );
    }
    let _ = writeln!(out);
}

fn deflate_section(out: &mut String, runs: &[Run]) {
    let cpu_on = by_cell(runs, "echo", DEFLATE_ON, &["server", "cpu_us_per_op"]);
    let cpu_off = by_cell(runs, "echo", DEFLATE_OFF, &["server", "cpu_us_per_op"]);
    let idle_on = by_cell(runs, "idle", DEFLATE_ON, &["server", "rss_per_conn_kib"]);
    let idle_off = by_cell(runs, "idle", DEFLATE_OFF, &["server", "rss_per_conn_kib"]);
    if cpu_on.is_empty() && cpu_off.is_empty() && idle_on.is_empty() && idle_off.is_empty() {
        return;
    }
    let rate_on = by_cell(runs, "echo", DEFLATE_ON, &["per_s"]);
    let rate_off = by_cell(runs, "echo", DEFLATE_OFF, &["per_s"]);
    let wire = by_cell(runs, "echo", DEFLATE_ON, &["deflate", "sent_payload_bytes"]);
    let response = ok_runs(runs, "echo")
        .filter(|r| r.label == DEFLATE_ON)
        .find_map(|r| r.value["deflate"]["response"].as_str())
        .unwrap_or("?");
    let _ = writeln!(
        out,
        "## permessage-deflate: ferry echo\n\nOne `ferry echo --threads 1` with compression \
         on (its defaults: level 1, context takeover, 256-byte threshold); `ferry bench` offers \
         `permessage-deflate; client_no_context_takeover; client_max_window_bits` \
         (**negotiated**) or nothing (**not negotiated**), alternately run by run. The payload \
         is the same deterministic JSON-like text either way; the client sends it compressed \
         once at start-up (level 6, 4 KiB window) and inflates and checks every echo. The \
         server answered `{response}`. Medians of runs.\n\n\
         | connections × payload | server CPU per message: not negotiated | negotiated | \
         ratio | messages/s: not negotiated | negotiated | client → server payload |\n\
         |---|---:|---:|---:|---:|---:|---:|"
    );
    let cells: std::collections::BTreeSet<Cell> =
        cpu_on.keys().chain(cpu_off.keys()).copied().collect();
    for cell in cells {
        let us = |v: Option<&f64>| v.map_or("–".into(), |v| format!("{v:.2} µs"));
        let _ = writeln!(
            out,
            "| {} × {} | {} | {} | {} | {} | {} | {} |",
            cell.0,
            size_name(cell.1),
            us(cpu_off.get(&cell)),
            us(cpu_on.get(&cell)),
            match (cpu_on.get(&cell), cpu_off.get(&cell)) {
                (Some(a), Some(b)) if *b > 0.0 => format!("{:.1}×", a / b),
                _ => "–".into(),
            },
            rate_off.get(&cell).map_or("–".into(), |v| rate(*v)),
            rate_on.get(&cell).map_or("–".into(), |v| rate(*v)),
            wire.get(&cell).map_or("–".into(), |v| format!(
                "{} ({:.0}%)",
                size_name(*v as u64),
                100.0 * v / cell.1.max(1) as f64
            )),
        );
    }
    if !idle_on.is_empty() || !idle_off.is_empty() {
        let _ = writeln!(
            out,
            "\nIdle memory with compression: server RSS growth per connection after each \
             connection echoed one 1 KiB JSON-like message (above the threshold, so a negotiated \
             connection has compressed) and then stays idle.\n\n\
             | connections | KiB per idle connection: not negotiated | negotiated |\n\
             |---|---:|---:|"
        );
        let cells: std::collections::BTreeSet<Cell> =
            idle_on.keys().chain(idle_off.keys()).copied().collect();
        for cell in cells {
            let kib = |v: Option<&f64>| v.map_or("–".into(), |v| format!("{v:.2}"));
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                cell.0,
                kib(idle_off.get(&cell)),
                kib(idle_on.get(&cell))
            );
        }
    }
    let _ = writeln!(out);
}

fn problems_section(out: &mut String, runs: &[Run], unreadable: usize) {
    let errors: Vec<&Run> = runs.iter().filter(|r| r.error().is_some()).collect();
    let warned: Vec<&Run> = runs
        .iter()
        .filter(|r| {
            r.value["warnings"]
                .as_array()
                .is_some_and(|w| !w.is_empty())
        })
        .collect();
    if errors.is_empty() && warned.is_empty() && unreadable == 0 {
        let _ = writeln!(
            out,
            "## Problems\n\nNone: every run completed and every message verified."
        );
        return;
    }
    let _ = writeln!(out, "## Problems\n");
    for run in errors {
        let _ = writeln!(
            out,
            "- {} {} {} × {}: failed: {}",
            run.label,
            run.mode,
            run.connections,
            size_name(run.size),
            run.error().unwrap_or_default()
        );
    }
    for run in warned {
        let warnings = run.value["warnings"].as_array().map_or(0, Vec::len);
        let first = run.value["warnings"][0].as_str().unwrap_or_default();
        let _ = writeln!(
            out,
            "- {} {} {} × {}: {warnings} connection(s) did not close cleanly (first: {first})",
            run.label,
            run.mode,
            run.connections,
            size_name(run.size),
        );
    }
    if unreadable > 0 {
        let _ = writeln!(out, "- {unreadable} result line(s) were not valid JSON");
    }
}
