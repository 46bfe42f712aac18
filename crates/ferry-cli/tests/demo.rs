//! `ferry demo` as a user runs it: the WebSocket side must get exactly the messages sent.

use std::process::Command;

fn sizes_after<'a>(output: &'a str, prefix: &str) -> Vec<&'a str> {
    let line = output
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{output}"));
    let (_, sizes) = line.split_once("sizes: ").expect("a sizes list");
    sizes.split(' ').collect()
}

#[test]
fn websocket_side_receives_exactly_n_messages_of_the_sent_sizes() {
    for (messages, max, seed) in [("12", "24KiB", "1"), ("40", "64KiB", "9")] {
        let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "demo",
                "--messages",
                messages,
                "--max-size",
                max,
                "--seed",
                seed,
            ])
            .output()
            .expect("run ferry demo");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let sent = sizes_after(&stdout, "sent: ");
        let received = sizes_after(&stdout, "websocket: ");
        assert_eq!(sent.len(), messages.parse::<usize>().expect("n"));
        assert_eq!(received, sent, "the same sizes, in order");
        assert!(stdout.contains(&format!(
            "websocket: {messages} sends -> {messages} messages"
        )));
        // The TCP side carried the same bytes, however it cut them.
        let total = |list: &[&str]| -> usize {
            list.iter().map(|s| s.parse::<usize>().expect("size")).sum()
        };
        assert_eq!(total(&sizes_after(&stdout, "tcp: ")), total(&sent));
        assert!(stdout.contains("tcp: a non-blocking write of 1048576 bytes returned after"));
    }
}

#[test]
fn bad_flags_name_the_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["demo", "--messages", "0"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--messages 0"));
}
