//! `ferry listen` as a user runs it, with `ferry connect` as the client: messages one way are
//! printed, stdin lines the other way are sent.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

#[test]
fn prints_what_the_client_sends_and_sends_stdin_lines_to_it() {
    let mut server = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["listen", "--listen", "127.0.0.1:0", "--once"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferry listen");
    let mut server_err = BufReader::new(server.stderr.take().expect("stderr")).lines();
    let url = loop {
        let line = server_err.next().expect("listen exited").expect("stderr");
        if let Some(at) = line.find("ws://") {
            break line[at..].trim().to_owned();
        }
    };
    let mut client = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["connect", "--quiet", "--no-proxy", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ferry connect");
    let mut client_in = client.stdin.take().expect("stdin");
    let mut client_out = BufReader::new(client.stdout.take().expect("stdout"));
    let mut server_out = BufReader::new(server.stdout.take().expect("stdout"));
    // Client to server: printed on the server's stdout.
    writeln!(client_in, "hello from the client ✓").expect("write");
    let mut line = String::new();
    server_out.read_line(&mut line).expect("read");
    assert_eq!(line, "hello from the client ✓\n");
    // The client is connected now (its message arrived): server stdin goes to it.
    let mut server_in = server.stdin.take().expect("stdin");
    writeln!(server_in, "hello from the server").expect("write");
    line.clear();
    client_out.read_line(&mut line).expect("read");
    assert_eq!(line, "hello from the server\n");
    // The client leaves; with --once the server ends too.
    drop(client_in);
    assert!(client.wait().expect("wait").success());
    assert!(server.wait().expect("wait").success());
    let rest: Vec<String> = server_err.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("closed: 1000")), "{rest:?}");
}
