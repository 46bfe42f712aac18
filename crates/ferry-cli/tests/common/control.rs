//! A client of `ferry serve`'s control protocol for tests: requests with ids, topic messages
//! kept apart from replies, and a plain HTTP/1.1 request for the API and probes.

use std::collections::VecDeque;
use std::time::Duration;

use ferry::{CloseInfo, Incoming, Receiver, Sender};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Ctl {
    pub sender: Sender,
    receiver: Receiver,
    next_id: u64,
    /// Topic messages that arrived while waiting for a reply.
    messages: VecDeque<Value>,
}

/// One received topic message: its topic, offset, epoch and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    pub topic: String,
    pub offset: u64,
    pub epoch: String,
    pub data: String,
}

impl Got {
    pub fn of(value: &Value) -> Got {
        Got {
            topic: value["topic"].as_str().expect("topic").to_owned(),
            offset: value["offset"].as_u64().expect("offset"),
            epoch: value["epoch"].as_str().expect("epoch").to_owned(),
            data: value["data"].as_str().unwrap_or("").to_owned(),
        }
    }
}

impl Ctl {
    pub async fn connect(addr: &str) -> Ctl {
        Ctl::connect_url(&format!("ws://{addr}/ws/control")).await
    }

    /// With a token in the URL, as a browser sends it.
    pub async fn connect_with_token(addr: &str, token: &str) -> Ctl {
        Ctl::connect_url(&format!("ws://{addr}/ws/control?token={token}")).await
    }

    pub async fn connect_url(url: &str) -> Ctl {
        let (sender, receiver, _) = ferry::connect(url).await.expect("connect");
        Ctl {
            sender,
            receiver,
            next_id: 1,
            messages: VecDeque::new(),
        }
    }

    async fn read(&mut self, wait: Duration) -> Result<Value, Option<CloseInfo>> {
        match tokio::time::timeout(wait, self.receiver.recv()).await {
            Err(_) => panic!("nothing arrived in {wait:?}"),
            Ok(None) => Err(None),
            Ok(Some(Incoming::Closed(info))) => Err(Some(info)),
            Ok(Some(Incoming::Message(m))) => {
                Ok(serde_json::from_str(m.as_text().expect("text")).expect("JSON"))
            }
        }
    }

    /// Sends `body` with a fresh id and returns its reply; topic messages before it are kept.
    pub async fn request(&mut self, mut body: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        body["id"] = json!(id);
        self.sender.send(body.to_string()).await.expect("send");
        loop {
            let value = self
                .read(Duration::from_secs(15))
                .await
                .unwrap_or_else(|close| panic!("closed while waiting for a reply: {close:?}"));
            if value["type"] == "message" {
                self.messages.push_back(value);
            } else {
                assert_eq!(value["id"], json!(id), "replies come in order: {value}");
                return value;
            }
        }
    }

    pub async fn subscribe(&mut self, topics: &[&str]) -> Value {
        let ack = self
            .request(json!({"op": "subscribe", "topics": topics}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        ack
    }

    pub async fn publish(&mut self, topic: &str, data: &str) -> Value {
        self.request(json!({"op": "publish", "topic": topic, "data": data}))
            .await
    }

    /// The next topic message, or how the connection ended.
    pub async fn next(&mut self, wait: Duration) -> Result<Got, Option<CloseInfo>> {
        if let Some(value) = self.messages.pop_front() {
            return Ok(Got::of(&value));
        }
        loop {
            let value = self.read(wait).await?;
            if value["type"] == "message" {
                return Ok(Got::of(&value));
            }
        }
    }

    /// Topic messages until `count` have arrived.
    pub async fn take(&mut self, count: usize) -> Vec<Got> {
        let mut got = Vec::with_capacity(count);
        while got.len() < count {
            match self.next(Duration::from_secs(20)).await {
                Ok(message) => got.push(message),
                Err(close) => panic!("closed after {} messages: {close:?}", got.len()),
            }
        }
        got
    }

    /// Waits for the connection to end (messages before it are dropped).
    pub async fn closed(&mut self) -> Option<CloseInfo> {
        loop {
            match self.next(Duration::from_secs(20)).await {
                Ok(_) => {}
                Err(close) => return close,
            }
        }
    }
}

/// Asserts messages of one topic are offsets `from, from+1, ...` of one epoch.
pub fn assert_contiguous(got: &[Got], from: u64) {
    let epoch = &got[0].epoch;
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.offset, from + i as u64, "at {i}: {got:?}");
        assert_eq!(&g.epoch, epoch);
    }
}

/// A plain HTTP/1.1 request; returns the status and the body.
pub async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}
