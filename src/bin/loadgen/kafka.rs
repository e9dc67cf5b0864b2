//! Kafka subcommands for the benchmark: `consume-raw`, the baseline the stats consumer is
//! compared with, and `kafka-delete`, which removes the topics and groups a run made.

use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use serde_json::json;

use post_rate::events::kafka::{delete_topic, ConsumerConfig};

use crate::args::{KafkaDeleteArgs, RawArgs};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// A consumer with the service's own librdkafka settings
/// ([`ConsumerConfig::client_config`]: fetch wait and backoff, offsets, timeouts, and
/// librdkafka's defaults for the rest), so the two read the topic the same way. What differs
/// is what is measured: decoding, applying to Redis, and storing and committing offsets
/// (this one never commits).
fn raw_consumer(args: &RawArgs) -> Result<StreamConsumer, String> {
    ConsumerConfig::new(&args.brokers, &args.topic, &args.group)
        .client_config()
        .set("client.id", "loadgen-consume-raw")
        .create()
        .map_err(|e| format!("creating the consumer: {e}"))
}

/// Messages in the topic now: the sum over its partitions of high minus low watermark.
fn messages_in_topic(consumer: &StreamConsumer, topic: &str) -> Result<u64, String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|e| format!("metadata of {topic}: {e}"))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| format!("the broker does not list topic {topic}"))?;
    let mut total = 0;
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, METADATA_TIMEOUT)
            .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))?;
        total += (high - low).max(0) as u64;
    }
    Ok(total)
}

/// Reads the topic until `--events` messages (or the watermarks) and reports events/s from
/// the first message received to the last, so the group join is left out.
pub async fn consume_raw(args: &RawArgs) -> Result<bool, String> {
    let consumer = raw_consumer(args)?;
    let target = match args.events {
        Some(n) => n,
        None => tokio::task::block_in_place(|| messages_in_topic(&consumer, &args.topic))?,
    };
    consumer
        .subscribe(&[args.topic.as_str()])
        .map_err(|e| format!("subscribing to {}: {e}", args.topic))?;

    let started = Instant::now();
    let (mut messages, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    let (mut first, mut last) = (None, started);
    let deadline = tokio::time::sleep(Duration::from_secs(args.timeout));
    tokio::pin!(deadline);
    let mut stream = consumer.stream();
    while messages < target {
        // Biased towards the stream, like the service's loop: no timer work while messages
        // are ready.
        let item = tokio::select! {
            biased;
            item = stream.next() => item,
            _ = &mut deadline => break,
        };
        match item {
            Some(Ok(msg)) => {
                last = Instant::now();
                first.get_or_insert(last);
                messages += 1;
                bytes += msg.payload_len() as u64;
            }
            Some(Err(e)) => {
                errors += 1;
                eprintln!("consume-raw: {e}");
            }
            None => break,
        }
    }
    drop(stream);

    let first = first.unwrap_or(last);
    let secs = last.duration_since(first).as_secs_f64();
    // The first message starts the clock, so it is not counted in the rate.
    let rate = if secs > 0.0 {
        (messages - 1) as f64 / secs
    } else {
        0.0
    };
    let complete = messages >= target;
    println!(
        "consume-raw {}: {messages} of {target} messages, {bytes} bytes, {secs:.3} s from the first \
         to the last: {rate:.0} events/s ({:.1} MB/s); first message {:.2} s after subscribing{}",
        args.topic,
        if secs > 0.0 { bytes as f64 / secs / 1e6 } else { 0.0 },
        first.duration_since(started).as_secs_f64(),
        if complete { "" } else { " (incomplete)" },
    );
    if let Some(path) = &args.json {
        let report = json!({
            "topic": args.topic,
            "group": args.group,
            "events": messages,
            "target": target,
            "bytes": bytes,
            "errors": errors,
            "secs": secs,
            "events_per_sec": rate,
            "first_message_secs": first.duration_since(started).as_secs_f64(),
            "complete": complete,
        });
        crate::write_json(path, &report)?;
    }
    // Leaving the group (closing the consumer) waits for the broker: off the async workers.
    tokio::task::spawn_blocking(move || drop(consumer))
        .await
        .map_err(|e| e.to_string())?;
    Ok(complete)
}

/// Deletes the named topics and groups; a missing one counts as deleted.
pub async fn delete(args: &KafkaDeleteArgs) -> Result<bool, String> {
    let mut ok = true;
    for topic in &args.topics {
        if let Err(e) = delete_topic(&args.brokers, topic).await {
            eprintln!("kafka-delete: {e}");
            ok = false;
        }
    }
    if args.groups.is_empty() {
        return Ok(ok);
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("client.id", "loadgen-kafka-delete")
        .create()
        .map_err(|e| format!("creating the admin client: {e}"))?;
    let opts = AdminOptions::new().request_timeout(Some(METADATA_TIMEOUT));
    let groups: Vec<&str> = args.groups.iter().map(String::as_str).collect();
    let results = admin
        .delete_groups(&groups, &opts)
        .await
        .map_err(|e| format!("deleting groups: {e}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::GroupIdNotFound)) => {}
            Err((group, code)) => {
                eprintln!("kafka-delete: group {group}: {code}");
                ok = false;
            }
        }
    }
    Ok(ok)
}
