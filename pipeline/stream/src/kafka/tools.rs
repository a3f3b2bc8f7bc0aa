//! Small Kafka clients for operators, tests and benchmarks: produce a JSONL
//! file to `listings` (key = seller_id, optionally at a steady rate), read a
//! topic back. `haechi kafka produce|consume|bench` are built on these.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// A producer that waits for nothing (linger 0) unless asked.
pub fn producer(brokers: &str) -> Result<FutureProducer, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "1")
        .set("message.timeout.ms", "30000")
        .create()
}

/// The `seller_id` of a JSON listing, the message key of `listings`.
pub fn seller_key(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Key {
        seller_id: Option<serde_json::Value>,
    }
    let k: Key = serde_json::from_slice(line).ok()?;
    match k.seller_id? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    }
}

/// Enqueues one message, waiting while the local queue is full.
pub fn send(
    p: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
) -> Result<DeliveryFuture, KafkaError> {
    loop {
        let mut rec = FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        match p.send_result(rec) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Waits for delivery reports; returns how many failed.
pub fn wait_all(futures: Vec<DeliveryFuture>) -> usize {
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(_) => return futures.len(),
    };
    rt.block_on(async {
        let mut failed = 0;
        for f in futures {
            if !matches!(f.await, Ok(Ok(_))) {
                failed += 1;
            }
        }
        failed
    })
}

/// Produces lines (one message each, key = seller_id when there is one),
/// at `rate` messages per second when given, and waits for every delivery.
/// Calls `sent(i, instant)` after enqueuing message `i`.
pub fn produce_lines<I, F>(
    brokers: &str,
    topic: &str,
    lines: I,
    rate: Option<f64>,
    mut sent: F,
) -> Result<u64, KafkaError>
where
    I: IntoIterator<Item = Vec<u8>>,
    F: FnMut(u64, &[u8]),
{
    let p = producer(brokers)?;
    let start = Instant::now();
    let mut futures = Vec::new();
    let mut n = 0u64;
    for line in lines {
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64(n as f64 / r);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let key = seller_key(&line);
        futures.push(send(&p, topic, key.as_deref().map(str::as_bytes), &line)?);
        sent(n, &line);
        n += 1;
        if futures.len() >= 10_000 {
            let failed = wait_all(std::mem::take(&mut futures));
            if failed > 0 {
                return Err(KafkaError::MessageProduction(
                    RDKafkaErrorCode::MessageTimedOut,
                ));
            }
        }
    }
    if wait_all(futures) > 0 {
        return Err(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageTimedOut,
        ));
    }
    Ok(n)
}

/// A consumer outside any group reading every partition of `topic` from
/// the beginning.
pub fn reader(brokers: &str, topic: &str) -> Result<BaseConsumer, KafkaError> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "haechi-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    c.assign(&tpl)?;
    Ok(c)
}

/// Reads `topic` until `want` messages arrived or nothing came for `idle`.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    want: Option<usize>,
    idle: Duration,
) -> Result<Vec<OwnedMessage>, KafkaError> {
    let c = reader(brokers, topic)?;
    let mut out = Vec::new();
    let mut last = Instant::now();
    while want.is_none_or(|w| out.len() < w) && last.elapsed() < idle {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.push(m.detach());
                last = Instant::now();
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    Ok(out)
}

/// The payload of a message as text (lossy).
pub fn text(m: &OwnedMessage) -> String {
    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()
}
