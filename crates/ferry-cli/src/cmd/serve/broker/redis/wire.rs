//! What ferry keeps in Redis and how: the key and channel names, the two Lua scripts, and
//! the forms of their answers and of a published message.

use super::*;

/// Numbers, keeps and publishes one message. Its keys and channel share the `{topic}` hash
/// tag, so a Redis Cluster keeps them in one slot.
pub(super) static PUBLISH: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
-- KEYS[1] the log (a stream), KEYS[2] the meta hash (e: epoch, t: top offset)
-- ARGV: 1 epoch if the topic has none, 2 history size, 3 ttl ms, 4 channel, 5 kind, 6 data
if redis.call('hsetnx', KEYS[2], 'e', ARGV[1]) == 1 then
  -- A new epoch: a log left without its meta belongs to a lost one.
  redis.call('del', KEYS[1])
end
local epoch = redis.call('hget', KEYS[2], 'e')
local top = redis.call('hincrby', KEYS[2], 't', 1)
if tonumber(ARGV[2]) > 0 then
  redis.call('xadd', KEYS[1], 'MAXLEN', ARGV[2], top .. '-0', 'k', ARGV[5], 'd', ARGV[6])
  redis.call('pexpire', KEYS[1], ARGV[3])
end
redis.call('pexpire', KEYS[2], ARGV[3])
redis.call('publish', ARGV[4], top .. ' ' .. epoch .. ' ' .. ARGV[5] .. ' ' .. ARGV[6])
return {top, epoch}
",
    )
});

/// Reads a topic's epoch and top offset, and up to `count` messages from an offset on,
/// atomically. A topic without an epoch gets one, so every answer names an epoch.
pub(super) static HISTORY: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
-- KEYS[1] the log, KEYS[2] the meta hash
-- ARGV: 1 epoch if the topic has none, 2 ttl ms, 3 first offset wanted, 4 count (0: none)
if redis.call('hsetnx', KEYS[2], 'e', ARGV[1]) == 1 then
  redis.call('pexpire', KEYS[2], ARGV[2])
  redis.call('del', KEYS[1])
end
local meta = redis.call('hmget', KEYS[2], 'e', 't')
local entries = {}
if tonumber(ARGV[4]) > 0 then
  entries = redis.call('xrange', KEYS[1], ARGV[3] .. '-0', '+', 'COUNT', ARGV[4])
end
return {tonumber(meta[2] or 0), meta[1], entries}
",
    )
});

pub(super) fn log_key(topic: &str) -> String {
    format!("ferry:{{{topic}}}:log")
}

pub(super) fn meta_key(topic: &str) -> String {
    format!("ferry:{{{topic}}}:meta")
}

pub(super) fn channel(topic: &str) -> String {
    format!("ferry:{{{topic}}}:ch")
}

pub(super) fn topic_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("ferry:{")?.strip_suffix("}:ch")
}

/// What [`HISTORY`] answered, checked: the top, and the messages after `since` when they are
/// all there.
pub(super) async fn read_history(
    commands: &ConnectionManager,
    settings: &HistorySettings,
    timeout: Duration,
    topic: &str,
    since: Option<&Position>,
    limit: usize,
) -> Result<History, String> {
    let (from, count) = match since {
        Some(since) => (since.offset.saturating_add(1), limit),
        None => (1, 0),
    };
    let mut invocation = HISTORY.prepare_invoke();
    invocation
        .key(log_key(topic))
        .key(meta_key(topic))
        .arg(&*new_epoch())
        .arg(settings.for_topic(topic).1.as_millis() as u64)
        .arg(from)
        .arg(count);
    let mut commands = commands.clone();
    let call = invocation.invoke_async::<Value>(&mut commands);
    let answer = match tokio::time::timeout(timeout, call).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(err)) => return Err(err.to_string()),
        Err(_) => return Err("timed out".into()),
    };
    let (top, entries) = parse_history(answer).ok_or("an answer of an unexpected shape")?;
    let messages = since.and_then(|since| {
        let first = entries
            .first()
            .map_or(top.offset + 1, |(offset, _)| *offset);
        let from = recoverable(since, &top, first, limit)?;
        let wanted = (top.offset + 1 - from) as usize;
        let contiguous = entries.len() >= wanted
            && entries
                .iter()
                .take(wanted)
                .zip(from..)
                .all(|((offset, _), expected)| *offset == expected);
        contiguous.then(|| {
            entries
                .into_iter()
                .take(wanted)
                .map(|(offset, message)| (Position::new(offset, top.epoch.clone()), message))
                .collect()
        })
    });
    Ok(History { top, messages })
}

/// `{top, epoch, {{"N-0", {"k", kind, "d", data}}, ...}}`.
pub(super) fn parse_history(answer: Value) -> Option<(Position, Vec<(u64, Message)>)> {
    let Value::Array(mut parts) = answer else {
        return None;
    };
    if parts.len() != 3 {
        return None;
    }
    let entries = parts.pop()?;
    let epoch = match parts.pop()? {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok()?,
        Value::SimpleString(text) => text,
        _ => return None,
    };
    let top = match parts.pop()? {
        Value::Int(n) => u64::try_from(n).ok()?,
        _ => return None,
    };
    let Value::Array(entries) = entries else {
        return None;
    };
    let mut messages = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(mut entry) = entry else {
            return None;
        };
        let fields = entry.pop()?;
        let id = match entry.pop()? {
            Value::BulkString(bytes) => String::from_utf8(bytes).ok()?,
            Value::SimpleString(text) => text,
            _ => return None,
        };
        let offset: u64 = id.strip_suffix("-0")?.parse().ok()?;
        let Value::Array(fields) = fields else {
            return None;
        };
        let mut kind = None;
        let mut data = None;
        let mut fields = fields.into_iter();
        while let (Some(Value::BulkString(name)), Some(Value::BulkString(value))) =
            (fields.next(), fields.next())
        {
            match name.as_slice() {
                b"k" => kind = Some(value),
                b"d" => data = Some(value),
                _ => {}
            }
        }
        messages.push((offset, message_of(&kind?, data?)?));
    }
    Some((Position::new(top, epoch), messages))
}

pub(super) fn message_of(kind: &[u8], data: Vec<u8>) -> Option<Message> {
    match kind {
        b"t" => String::from_utf8(data).ok().map(Message::text),
        b"b" => Some(Message::binary(Bytes::from(data))),
        _ => None,
    }
}

/// `OFFSET EPOCH KIND DATA`, as [`PUBLISH`] sends it.
pub(super) fn parse_published(payload: &[u8]) -> Option<(Position, Message)> {
    let mut parts = payload.splitn(4, |&b| b == b' ');
    let offset: u64 = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let epoch = std::str::from_utf8(parts.next()?).ok()?;
    let kind = parts.next()?;
    let data = parts.next()?.to_vec();
    Some((Position::new(offset, epoch), message_of(kind, data)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_payloads_and_channels() {
        let (p, m) = parse_published(b"42 abc t hello world").unwrap();
        assert_eq!((p.offset, &*p.epoch), (42, "abc"));
        assert_eq!(m.as_text(), Some("hello world"));
        let (_, m) = parse_published(b"1 e b \x00 \xff").unwrap();
        assert_eq!(m.as_bytes(), b"\x00 \xff");
        assert!(
            parse_published(b"1 e t \xff").is_none(),
            "text must be UTF-8"
        );
        assert!(parse_published(b"x e t a").is_none());
        assert_eq!(
            topic_of_channel(&channel("chat.room-1")),
            Some("chat.room-1")
        );
        assert_eq!(topic_of_channel("ferry:probe:x"), None);
    }
}
