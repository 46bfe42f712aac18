//! `/demo/tcp-chunks`, the TCP half of the page's lesson, against the real binary.

mod common;

use common::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: &str, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

fn sizes(value: &serde_json::Value, key: &str) -> Vec<u64> {
    value[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {value}"))
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn n_writes_arrive_as_reads_with_every_byte() {
    let server = Server::serve(&[]);
    let (head, body) = get(&server.addr, "/demo/tcp-chunks?n=200").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/json"), "{head}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (writes, reads) = (sizes(&report, "writes"), sizes(&report, "reads"));
    assert_eq!(writes.len(), 200);
    assert!(writes.iter().all(|w| (1..=5000).contains(w)));
    assert_eq!(writes.iter().sum::<u64>(), reads.iter().sum::<u64>());
    assert_eq!(report["bytes"].as_u64(), Some(writes.iter().sum()));
    assert!(reads.iter().all(|r| *r > 0));
}

#[tokio::test]
async fn bad_parameters_get_400_without_echo() {
    let server = Server::serve(&[]);
    for query in ["n=0", "n=1001", "n=%3Cscript%3E", "evil=%3Cscript%3E"] {
        let (head, body) = get(&server.addr, &format!("/demo/tcp-chunks?{query}")).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{query}: {head}");
        assert!(!body.contains("script") && !body.contains("evil"), "{body}");
    }
}
