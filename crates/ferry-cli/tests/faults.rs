//! Faults in a real network: `ferry serve` in network namespaces of its own, joined by veth
//! pairs this test makes and removes, and links taken down under it. Needs root (CI runs as
//! root); elsewhere, or where namespaces cannot be made, it says so and skips. Traffic stays
//! between the namespaces the test creates.
//!
//! - A peer whose link dies is found by keepalive within the ping interval plus the timeout.
//! - A node cut off from Redis stops being ready, and when the link is back it delivers what was
//!   published meanwhile, in order, from history.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::control::{Ctl, assert_contiguous, http};

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Namespaces and veth pairs, removed when dropped.
struct Net {
    namespaces: Vec<String>,
    links: Vec<String>,
    children: Vec<Child>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Net {
    /// A new empty set, or why namespaces cannot be made here.
    fn new() -> Result<Net, String> {
        let mut net = Net {
            namespaces: Vec::new(),
            links: Vec::new(),
            children: Vec::new(),
        };
        // A probe namespace: fails without root or without the capability.
        let probe = net.namespace()?;
        ip(&["netns", "del", &probe])?;
        net.namespaces.clear();
        Ok(net)
    }

    fn namespace(&mut self) -> Result<String, String> {
        let name = format!(
            "ferry-f{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// A veth pair: `a_addr/30` on the `a` side (the host when `a_ns` is None), `b_addr/30` in
    /// `b_ns`. Returns the name of the `a` side's link.
    fn link(
        &mut self,
        a_ns: Option<&str>,
        a_addr: &str,
        b_ns: &str,
        b_addr: &str,
    ) -> Result<String, String> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (a, b) = (
            format!("fa{}x{n}", std::process::id() % 10000),
            format!("fb{}x{n}", std::process::id() % 10000),
        );
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
        self.links.push(a.clone());
        ip(&["link", "set", &b, "netns", b_ns])?;
        if let Some(ns) = a_ns {
            ip(&["link", "set", &a, "netns", ns])?;
        }
        let in_a = |args: &[&str]| -> Result<(), String> {
            match a_ns {
                Some(ns) => {
                    let mut all = vec!["netns", "exec", ns, "ip"];
                    all.extend_from_slice(args);
                    ip(&all)
                }
                None => ip(args),
            }
        };
        in_a(&["addr", "add", &format!("{a_addr}/30"), "dev", &a])?;
        in_a(&["link", "set", &a, "up"])?;
        ip(&[
            "netns",
            "exec",
            b_ns,
            "ip",
            "addr",
            "add",
            &format!("{b_addr}/30"),
            "dev",
            &b,
        ])?;
        ip(&["netns", "exec", b_ns, "ip", "link", "set", &b, "up"])?;
        Ok(a)
    }

    /// Takes a link down or up (`ns`: where the link is).
    fn set(&self, ns: Option<&str>, link: &str, state: &str) {
        let result = match ns {
            Some(ns) => ip(&["netns", "exec", ns, "ip", "link", "set", link, state]),
            None => ip(&["link", "set", link, state]),
        };
        result.expect("link state");
    }

    /// Starts `ferry ARGS` in `ns` and waits for its "listening on http://" line.
    fn ferry(&mut self, ns: &str, args: &[&str]) -> String {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_ferry")])
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start ferry in the namespace");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("ferry exited").unwrap();
            if let Some(at) = line.find("http://") {
                break line[at + 7..].trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        self.children.push(child);
        addr
    }

    /// Starts any program in `ns`; kept until the end.
    fn spawn(&mut self, ns: &str, program: &str, args: &[&str]) -> &mut Child {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a program in the namespace");
        self.children.push(child);
        self.children.last_mut().unwrap()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for link in &self.links {
            let _ = ip(&["link", "del", link]);
        }
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

fn net_or_skip() -> Option<Net> {
    match Net::new() {
        Ok(net) => Some(net),
        Err(why) => {
            eprintln!("skipped: cannot make network namespaces here ({why}); CI runs as root");
            None
        }
    }
}

async fn metrics(addr: &str) -> String {
    http(addr, "GET", "/metrics", &[], b"").await.1
}

#[tokio::test]
async fn keepalive_finds_a_peer_whose_link_died_within_interval_plus_timeout() {
    let Some(mut net) = net_or_skip() else { return };
    let server_ns = net.namespace().unwrap();
    let link = net
        .link(None, "10.213.1.1", &server_ns, "10.213.1.2")
        .unwrap();
    let addr = net.ferry(
        &server_ns,
        &[
            "serve",
            "--listen",
            "10.213.1.2:8080",
            "--ping-interval",
            "1s",
            "--ping-timeout",
            "1s",
        ],
    );
    let (sender, _receiver, _) = ferry::connect(&format!("ws://{addr}/ws/echo"))
        .await
        .unwrap();
    sender.send("before").await.unwrap();
    assert!(metrics(&addr).await.contains("ferry_connections_open 1"));
    // The client's side goes dark: no FIN, no RST, nothing. Keepalive has 1 s to ping and 1 s
    // for the pong; give it 2.5 s more for scheduling.
    net.set(None, &link, "down");
    tokio::time::sleep(Duration::from_millis(4500)).await;
    net.set(None, &link, "up");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = metrics(&addr).await;
        if text.contains("ferry_connections_open 0") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        text.contains(r#"ferry_closes_total{code="1011",initiator="server"} 1"#),
        "the server closed the dead peer with 1011 while the link was down: {text}"
    );
    assert!(text.contains("ferry_connections_open 0"), "{text}");
}

#[tokio::test]
async fn a_node_cut_off_from_redis_catches_up_from_history_when_the_link_returns() {
    if !common::redis::installed() {
        return;
    }
    let Some(mut net) = net_or_skip() else { return };
    // host <-> node (10.213.2.0/30); node <-> redis (10.213.3.0/30), cut in the test.
    let node_ns = net.namespace().unwrap();
    let redis_ns = net.namespace().unwrap();
    net.link(None, "10.213.2.1", &node_ns, "10.213.2.2")
        .unwrap();
    let cut = net
        .link(Some(&node_ns), "10.213.3.1", &redis_ns, "10.213.3.2")
        .unwrap();
    net.spawn(
        &redis_ns,
        "redis-server",
        &[
            "--bind",
            "10.213.3.2",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let broker = "redis://10.213.3.2:6379";
    let node = net.ferry(
        &node_ns,
        &[
            "serve",
            "--listen",
            "10.213.2.2:8080",
            "--broker",
            broker,
            "--broker-probe",
            "300ms",
            "--broker-timeout",
            "1s",
        ],
    );
    // A second node beside Redis, out of the host's reach, takes the publishes.
    let publisher_node = net.ferry(
        &redis_ns,
        &["serve", "--listen", "10.213.3.2:8081", "--broker", broker],
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = http(&node, "GET", "/readyz", &[], b"").await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node never became ready: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut subscriber = Ctl::connect(&node).await;
    subscriber.subscribe(&["feed"]).await;
    let url = format!("ws://{publisher_node}/ws/topics/feed");
    let ferry = env!("CARGO_BIN_EXE_ferry");
    let publisher = net.spawn(&redis_ns, ferry, &["connect", "--linger", "60s", &url]);
    let mut lines = publisher.stdin.take().unwrap();
    let mut say = |text: &str| {
        writeln!(lines, "{text}").unwrap();
        lines.flush().unwrap();
    };
    say("m1");
    assert_eq!(subscriber.take(1).await[0].data, "m1");
    // Cut the node from Redis; publishes go on through the other node.
    net.set(Some(&node_ns), &cut, "down");
    for i in 2..=6 {
        say(&format!("m{i}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while http(&node, "GET", "/readyz", &[], b"").await.0 != 503 {
        assert!(
            Instant::now() < deadline,
            "the node never noticed it was cut off"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    net.set(Some(&node_ns), &cut, "up");
    // Back: the node resubscribes, reads what it missed from history, delivers it in order.
    let got = subscriber.take(5).await;
    let mut all = vec![];
    all.push(common::control::Got {
        topic: "feed".into(),
        offset: 1,
        epoch: got[0].epoch.clone(),
        data: "m1".into(),
    });
    all.extend(got);
    assert_contiguous(&all, 1);
    let data: Vec<&str> = all.iter().map(|g| g.data.as_str()).collect();
    assert_eq!(data, ["m1", "m2", "m3", "m4", "m5", "m6"]);
    let text = metrics(&node).await;
    assert!(!text.contains("ferry_broker_reconnects_total 0"), "{text}");
}
