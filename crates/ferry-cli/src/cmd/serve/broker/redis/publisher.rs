//! Publishing: each shard sends its queued publishes to Redis in pipelines.

use super::wire::{PUBLISH, channel, log_key, meta_key};
use super::*;

/// A publish waiting for its shard's next pipeline.
pub(super) struct PublishJob {
    pub(super) topic: String,
    pub(super) message: Message,
    pub(super) reply: oneshot::Sender<Result<Position, Unavailable>>,
}

/// Sends a shard's publishes to Redis: whatever is queued goes in one pipeline of [`PUBLISH`]
/// calls, in queue order, and the next pipeline waits for its answers. Under load the
/// pipelines grow, so one round trip carries many messages; alone, a publish costs one.
pub(super) async fn publisher(
    shard: Arc<Shard>,
    settings: HistorySettings,
    counters: Arc<Counters>,
    mut jobs: mpsc::Receiver<PublishJob>,
) {
    let mut batch = Vec::with_capacity(MAX_PIPELINE);
    while jobs.recv_many(&mut batch, MAX_PIPELINE).await > 0 {
        let outcome = if shard.up.load(Ordering::Acquire) {
            publish_batch(&shard, &settings, &batch).await
        } else {
            Err(shard.unavailable())
        };
        match outcome {
            Ok(positions) => {
                for (job, position) in batch.drain(..).zip(positions) {
                    let _ = job.reply.send(Ok(position));
                }
            }
            Err(err) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(redis = %shard.url, error = %err, messages = batch.len(), "publish failed; nothing acknowledged");
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// One pipeline of publishes; when Redis lost the script (a restart), it is loaded and the
/// pipeline sent again: none of it ran, since every call was refused alike.
pub(super) async fn publish_batch(
    shard: &Shard,
    settings: &HistorySettings,
    batch: &[PublishJob],
) -> Result<Vec<Position>, Unavailable> {
    let mut pipe = redis::pipe();
    for job in batch {
        let kind = if job.message.is_text() { "t" } else { "b" };
        let (size, ttl) = settings.for_topic(&job.topic);
        pipe.cmd("EVALSHA")
            .arg(PUBLISH.get_hash())
            .arg(2)
            .arg(log_key(&job.topic))
            .arg(meta_key(&job.topic))
            .arg(&*new_epoch())
            .arg(size)
            .arg(ttl.as_millis() as u64)
            .arg(channel(&job.topic))
            .arg(kind)
            .arg(job.message.as_bytes());
    }
    let failed =
        |err: &dyn fmt::Display| Unavailable(format!("Redis {}: publish failed: {err}", shard.url));
    for attempt in 0..2 {
        let mut commands = shard.commands();
        let call = pipe.query_async::<Vec<(u64, String)>>(&mut commands);
        match tokio::time::timeout(shard.timeouts.command, call).await {
            Ok(Ok(answers)) if answers.len() == batch.len() => {
                return Ok(answers
                    .into_iter()
                    .map(|(offset, epoch)| Position::new(offset, epoch))
                    .collect());
            }
            Ok(Ok(answers)) => {
                return Err(failed(&format!(
                    "{} answers to {} publishes",
                    answers.len(),
                    batch.len()
                )));
            }
            Ok(Err(err))
                if attempt == 0
                    && err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                let mut commands = shard.commands();
                let load = PUBLISH.load_async(&mut commands);
                match tokio::time::timeout(shard.timeouts.command, load).await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(err)) => return Err(failed(&err)),
                    Err(_) => return Err(failed(&"loading the script timed out")),
                }
            }
            Ok(Err(err)) => return Err(failed(&err)),
            Err(_) => return Err(failed(&"timed out")),
        }
    }
    Err(failed(&"the script could not be loaded"))
}
