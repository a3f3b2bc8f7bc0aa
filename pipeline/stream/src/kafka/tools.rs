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

/// A producer for files and benchmarks: batches for at most 1 ms (`linger.ms`).
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

/// Enqueues one message, waiting while the producer's local queue is full.
/// `partition: None` lets the partitioner choose (by key); `payload: None`
/// is a tombstone.
pub fn send(
    p: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
) -> Result<DeliveryFuture, KafkaError> {
    loop {
        let mut rec = FutureRecord::<[u8], [u8]>::to(topic);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        if let Some(v) = payload {
            rec = rec.payload(v);
        }
        if let Some(part) = partition {
            rec = rec.partition(part);
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
        futures.push(send(
            &p,
            topic,
            None,
            key.as_deref().map(str::as_bytes),
            Some(&line),
        )?);
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
/// `from` (`Offset::Beginning`, `Offset::End`).
pub fn reader(brokers: &str, topic: &str, from: Offset) -> Result<BaseConsumer, KafkaError> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "haechi-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), from)?;
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
    let c = reader(brokers, topic, Offset::Beginning)?;
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

/// What a Kafka benchmark measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub events: usize,
    pub seconds: f64,
    pub events_per_second: f64,
    /// Produce-to-verdict latency (latency runs only).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied()
}

/// Throughput: reads `verdicts` until `expect` verdicts arrived and times
/// the first to the last (startup and group join excluded).
pub fn bench_throughput(
    brokers: &str,
    verdicts: &str,
    expect: usize,
    idle: Duration,
) -> Result<BenchReport, KafkaError> {
    let c = reader(brokers, verdicts, Offset::Beginning)?;
    let mut n = 0usize;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut idle_since = Instant::now();
    while n < expect && idle_since.elapsed() < idle {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                n += 1;
                last = Instant::now();
                idle_since = last;
                first.get_or_insert(last);
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    let secs = first.map(|f| (last - f).as_secs_f64()).unwrap_or(0.0);
    Ok(BenchReport {
        events: n,
        seconds: secs,
        events_per_second: if secs > 0.0 { n as f64 / secs } else { 0.0 },
        p50_ms: None,
        p99_ms: None,
        max_ms: None,
    })
}

/// The `event_id` of a listing or a verdict.
fn event_id(json: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        event_id: String,
    }
    serde_json::from_slice::<Id>(json).ok().map(|i| i.event_id)
}

/// Latency: produces `lines` at a steady `rate` while reading `verdicts`
/// from its end; the latency of an event is the time from its produce call
/// to its verdict's arrival.
pub fn bench_latency(
    brokers: &str,
    listings: &str,
    verdicts: &str,
    lines: Vec<Vec<u8>>,
    rate: f64,
) -> Result<BenchReport, KafkaError> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    let c = reader(brokers, verdicts, Offset::End)?;
    // Let the assignment settle before the clock starts.
    let _ = c.poll(Duration::from_millis(500));
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let expect = lines.len();
    let producer = {
        let sent = sent.clone();
        let brokers = brokers.to_owned();
        let listings = listings.to_owned();
        std::thread::spawn(move || {
            produce_lines(&brokers, &listings, lines, Some(rate), |_, line| {
                if let (Some(id), Ok(mut s)) = (event_id(line), sent.lock()) {
                    s.insert(id, Instant::now());
                }
            })
        })
    };
    let start = Instant::now();
    let mut lat = Vec::with_capacity(expect);
    let mut idle_since = Instant::now();
    while lat.len() < expect && idle_since.elapsed() < Duration::from_secs(10) {
        match c.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let now = Instant::now();
                idle_since = now;
                let id = event_id(m.payload().unwrap_or_default());
                if let Some(t) = id.and_then(|id| sent.lock().ok()?.get(&id).copied()) {
                    lat.push((now - t).as_secs_f64() * 1000.0);
                }
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    let secs = start.elapsed().as_secs_f64();
    match producer.join() {
        Ok(r) => {
            r?;
        }
        Err(_) => return Err(KafkaError::Canceled),
    }
    lat.sort_by(f64::total_cmp);
    Ok(BenchReport {
        events: lat.len(),
        seconds: secs,
        events_per_second: lat.len() as f64 / secs,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        max_ms: lat.last().copied(),
    })
}
