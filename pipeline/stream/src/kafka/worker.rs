//! The consumer loop of `haechi run`, on its own thread (CPU work stays off
//! the async runtime, which only serves HTTP and signals).
//!
//! One round, with the next round overlapping it where that is safe:
//!
//! 1. **collect** up to `batch.max_events` messages: what is fetched, and
//!    what arrives within `batch.max_wait_ms` once that is taken; rebalance
//!    callbacks fire inside `poll`: a revoked partition's collected-but-
//!    unjudged messages are dropped (they were never stored for commit, so the
//!    new owner gets them), an assigned partition's seller state is restored
//!    from the changelog before any of its events is judged; a revoke also
//!    waits until everything produced (a changelog still on its way) is
//!    delivered. Then whatever else is already fetched becomes the next batch,
//!    decoded and analyzed on `batch.analysis_threads` other threads (pure
//!    work) while this one is judged;
//! 2. **judge**: every message in partition order: listings through the
//!    same [`Processor`] as replay, decisions into history, bad bytes to the
//!    dead-letter topic; the store's change capture is taken after each
//!    message and grouped by its partition (the last value of each key per
//!    changelog message);
//! 3. **seal** the batch's store writes (the next batch's stay out of its
//!    flush) once the previous batch is finished, and produce its changelog;
//!    the rest happens on a helper thread while the loop goes round:
//! 4. wait for the changelog's **delivery** (failed ones are produced
//!    again, the same bytes): a published verdict always has its state in
//!    the changelog; then **produce** the verdicts and dead letters,
//!    **flush** the sealed writes while they are in flight (one log file,
//!    fsync; sled is updated behind), and wait for their delivery;
//! 5. **store the offsets** of the batch for the next commit (the loop,
//!    when the helper is done).
//!
//! An offset is therefore committed only when its event's verdict, its
//! changelog and its history and review writes are all durable. A crash at
//! any point redelivers events from the last commit; the store (restored
//! from the changelog on another instance) knows them by event id and
//! re-emits their original verdicts without counting anything twice.

use super::config::{KafkaConfig, RunConfig};
use super::obs::{self, Health};
use crate::process::{parallel_map, Processed, Processor, FLUSH_INTERVAL};
use crate::reload::{ReloadOutcome, Reloader};
use haechi_engine::{
    decode_listing, Analysis, DeadLetter, Engine, InvalidEvent, Limits, Listing, ReasonSource,
    SourcePos,
};
use haechi_store::changelog::{decode_changes, encode_changes, KeyValue};
use haechi_store::{Store, StoreError};
use metrics::{counter, gauge, histogram};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The key of the marker a restoring instance writes to a changelog
/// partition to know where its end is (store keys never start with 0xff).
const MARKER_KEY: &[u8] = b"\xffhaechi-restore-marker";

/// Why the loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Setup(String),
    #[error(
        "shutdown timed out after {0:?} with deliveries outstanding; the uncommitted events will be redelivered"
    )]
    ShutdownTimeout(Duration),
    #[error("restoring partition {partition} of the changelog: {message}")]
    Restore { partition: i32, message: String },
}

/// A rebalance, as the context saw it inside `poll`.
#[derive(Debug)]
enum Rebalanced {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// The consumer's context: records rebalances for the loop, commits what
/// is durable before partitions are revoked, and turns librdkafka's
/// statistics into the lag gauges.
#[derive(Default)]
pub struct Ctx {
    events: Mutex<Vec<Rebalanced>>,
    /// The loop's producer: a revoke waits until what was produced (the
    /// changelog of a batch still on its way out) is delivered, so that the
    /// next owner's restore finds it.
    producer: std::sync::OnceLock<FutureProducer>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").finish_non_exhaustive()
    }
}

impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    gauge!(obs::LAG, "topic" => topic.clone(), "partition" => p.to_string())
                        .set(part.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Every stored offset is durable (see the module docs): commit
            // them before the partitions go, so the next owner starts there.
            commit_sync(consumer);
            if let Some(p) = self.producer.get() {
                if let Err(e) = p.flush(Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "producer flush at revoke");
                }
            }
            tracing::info!(partitions = ?partitions(tpl), "partitions revoked");
            lock(&self.events).push(Rebalanced::Revoked(partitions(tpl)));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(partitions = ?partitions(tpl), "partitions assigned");
            lock(&self.events).push(Rebalanced::Assigned(partitions(tpl)));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Commits the stored offsets; "nothing to commit" is not an error.
fn commit_sync<C: ConsumerContext>(consumer: &BaseConsumer<C>) {
    let t = Instant::now();
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(error = %e, "commit failed; the events will be redelivered"),
    }
    histogram!(obs::STAGE, "stage" => "commit").record(t.elapsed().as_secs_f64());
}

/// Where a message landed (partition, offset), or why it did not.
type DeliveryReport = Result<(i32, i64), String>;

/// A message to produce, kept whole so a failed delivery can be retried.
#[derive(Debug, Clone)]
struct Outgoing {
    topic: String,
    partition: Option<i32>,
    key: Vec<u8>,
    /// `None`: a tombstone (a removed store key in the changelog).
    payload: Option<Vec<u8>>,
}

/// A changelog message holds the changes of consecutive events of one
/// partition, cut at an event boundary once past this many bytes (well
/// under Kafka's 1 MB default message limit). One message per event was
/// half of all messages produced, and the broker shares our two cores.
const CHANGELOG_MESSAGE_BYTES: usize = 256 << 10;

fn change_bytes((key, value): &KeyValue) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len) + 8
}

/// One partition's changes for its next changelog message: the last value
/// of each key only. A restore merges a record with what it has (unions,
/// maxima) or takes it whole, and each later value of a key holds what the
/// earlier ones added, so restoring the last equals restoring them all —
/// while a product's price record, rewritten by every listing of it, is
/// sent once per message instead of once per event.
#[derive(Debug, Default)]
struct PendingChanges {
    /// In the order of their last change; `None`: superseded.
    changes: Vec<Option<KeyValue>>,
    /// Key → its slot in `changes`.
    slots: std::collections::HashMap<Vec<u8>, usize>,
    bytes: usize,
}

impl PendingChanges {
    fn add(&mut self, change: KeyValue) {
        let slot = self.changes.len();
        if let Some(old) = self.slots.insert(change.0.clone(), slot) {
            if let Some(gone) = self.changes[old].take() {
                self.bytes -= change_bytes(&gone);
            }
        }
        self.bytes += change_bytes(&change);
        self.changes.push(Some(change));
    }

    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The message of the changes (taken, left empty).
    fn message(&mut self, k: &KafkaConfig, partition: i32) -> Outgoing {
        let changes: Vec<KeyValue> = self.changes.drain(..).flatten().collect();
        self.slots.clear();
        self.bytes = 0;
        Outgoing {
            topic: k.changelog_topic.clone(),
            partition: Some(partition),
            key: b"events".to_vec(),
            payload: Some(encode_changes(&changes)),
        }
    }
}

/// The loop's parts.
pub struct Worker<'a> {
    cfg: &'a RunConfig,
    consumer: BaseConsumer<Ctx>,
    courier: Arc<Courier<'a>>,
    restorer: BaseConsumer,
    store: &'a Store,
    reloader: &'a Reloader,
    health: &'a Health,
    limits: Limits,
    /// Listings partitions this instance owns and has restored.
    owned: BTreeSet<i32>,
    /// Events judged (not counting redeliveries).
    pub events: u64,
    meters: obs::EventMeters,
}

impl std::fmt::Debug for Worker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("owned", &self.owned)
            .field("events", &self.events)
            .finish()
    }
}

fn client_config(cfg: &RunConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.brokers)
        .set("client.id", &cfg.kafka.client_id);
    c
}

fn with_properties(mut c: ClientConfig, cfg: &RunConfig) -> ClientConfig {
    for (k, v) in &cfg.kafka.properties {
        c.set(k, v);
    }
    c
}

impl<'a> Worker<'a> {
    pub fn new(
        cfg: &'a RunConfig,
        store: &'a Store,
        reloader: &'a Reloader,
        health: &'a Health,
        rt: tokio::runtime::Handle,
    ) -> Result<Worker<'a>, WorkerError> {
        let k = &cfg.kafka;
        let consumer: BaseConsumer<Ctx> = with_properties(
            {
                let mut c = client_config(cfg);
                c.set("group.id", &k.group_id)
                    .set("enable.auto.commit", "true")
                    .set("auto.commit.interval.ms", k.commit_interval_ms.to_string())
                    .set("enable.auto.offset.store", "false")
                    .set("auto.offset.reset", "earliest")
                    .set("session.timeout.ms", k.session_timeout_ms.to_string())
                    .set("heartbeat.interval.ms", k.heartbeat_interval_ms.to_string())
                    // listings and decisions are co-partitioned: the range
                    // assignor gives partition p of both to the same instance.
                    .set("partition.assignment.strategy", "range")
                    .set("statistics.interval.ms", "5000")
                    // Latency over fetch efficiency: a steady trickle of
                    // listings must not wait for a full fetch.
                    .set("fetch.wait.max.ms", "10");
                c
            },
            cfg,
        )
        .create_with_context(Ctx::default())?;
        let producer: FutureProducer = with_properties(
            {
                let mut c = client_config(cfg);
                // No lingering: a batch's messages are produced together
                // anyway, and a verdict waits for the changelog's round trip
                // first (at 450 events/s, linger 2 → 0 and max_wait_ms 5 → 2
                // took produce-to-verdict p50 from ~23 to ~16 ms).
                c.set("message.timeout.ms", k.message_timeout_ms.to_string())
                    .set("linger.ms", "0");
                c
            },
            cfg,
        )
        .create()?;
        let restorer: BaseConsumer = {
            let mut c = client_config(cfg);
            c.set("group.id", format!("{}-restore", k.group_id))
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest");
            c.create()?
        };
        // Revoked partitions wait for what was produced for them.
        consumer.context().producer.get_or_init(|| producer.clone());
        let w = Worker {
            cfg,
            consumer,
            courier: Arc::new(Courier {
                producer,
                rt,
                health,
                stop_timeout: Duration::from_secs(cfg.shutdown.timeout_secs),
                stop_deadline: std::sync::OnceLock::new(),
            }),
            restorer,
            store,
            reloader,
            health,
            limits: Limits::default(),
            owned: BTreeSet::new(),
            events: 0,
            meters: obs::EventMeters::new(&k.listings_topic, &k.decisions_topic),
        };
        w.check_topics()?;
        Ok(w)
    }

    /// The topics exist and the changelog (and decisions) have as many
    /// partitions as listings: seller state follows partition numbers.
    fn check_topics(&self) -> Result<(), WorkerError> {
        let k = &self.cfg.kafka;
        let md = self
            .courier
            .producer
            .client()
            .fetch_metadata(None, Duration::from_secs(10))?;
        let count = |name: &str| -> Result<usize, WorkerError> {
            match md.topics().iter().find(|t| t.name() == name) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    Ok(t.partitions().len())
                }
                _ => Err(WorkerError::Setup(format!(
                    "topic {name:?} does not exist on {}; create it (scripts/broker.sh topics does it locally)",
                    k.brokers
                ))),
            }
        };
        let listings = count(&k.listings_topic)?;
        for (name, must_match) in [
            (&k.verdicts_topic, false),
            (&k.dlq_topic, false),
            (&k.decisions_topic, true),
            (&k.changelog_topic, true),
        ] {
            let n = count(name)?;
            if must_match && n != listings {
                return Err(WorkerError::Setup(format!(
                    "topic {name:?} has {n} partitions but {:?} has {listings}: they must match (seller state follows the partition number)",
                    k.listings_topic
                )));
            }
        }
        Ok(())
    }

    /// Runs until a shutdown is requested, then drains and commits.
    pub fn run(&mut self) -> Result<(), WorkerError> {
        let k = &self.cfg.kafka;
        self.consumer
            .subscribe(&[k.listings_topic.as_str(), k.decisions_topic.as_str()])?;
        let reload_every = Duration::from_secs(self.cfg.engine.reload_secs);
        let mut last_reload = Instant::now();
        publish_versions(self.reloader);
        // Only this loop flushes the store: a moderator's flush (review API)
        // would otherwise make a half-delivered batch durable before its
        // changelog; theirs wait for ours.
        self.store.own_flushes();
        let courier = Arc::clone(&self.courier);
        let store = self.store;
        // A judged batch finishes its way out (deliveries, flush) on a
        // thread of its own while the next one is judged; its offsets are
        // stored when it is done.
        let drained = std::thread::scope(|scope| -> Result<(), WorkerError> {
            let mut last_flush = Instant::now();
            let mut outbound: Option<std::thread::ScopedJoinHandle<'_, Finished>> = None;
            // The next batch, collected from what was already fetched and
            // being analyzed while the current one is judged.
            let mut ahead: Option<Batch> = None;
            loop {
                self.health.beat();
                if outbound.as_ref().is_some_and(|h| h.is_finished()) {
                    self.done(outbound.take())?;
                }
                if self.courier.shutdown_deadline().is_some() {
                    // In flight: fetched, never judged. Finish it.
                    if let Some(batch) = ahead.take() {
                        let out = self.judge(batch)?;
                        self.done(outbound.take())?;
                        self.store.seal()?;
                        let c = Arc::clone(&courier);
                        outbound = Some(scope.spawn(move || out.finish(&c, store)));
                    }
                    break;
                }
                if !reload_every.is_zero() && last_reload.elapsed() >= reload_every {
                    last_reload = Instant::now();
                    if let ReloadOutcome::Reloaded { .. } = self.reloader.check() {
                        publish_versions(self.reloader);
                    }
                }
                let mut batch = match ahead.take() {
                    Some(batch) => batch,
                    None => {
                        let messages = self.collect()?;
                        self.analyze_behind(messages)
                    }
                };
                if !batch.is_empty() && !self.health.stopping() {
                    let next = self.collect_fetched(&mut batch)?;
                    if !next.is_empty() {
                        ahead = Some(self.analyze_behind(next));
                    }
                }
                // Idle with writes pending: an empty batch delivers their
                // changelog and flushes them — at once when a moderator's
                // request waits for it, else (compaction) once a second.
                let idle_flush = self.store.flush_wanted()
                    || (self.store.pending() > 0 && last_flush.elapsed() >= FLUSH_INTERVAL);
                if !batch.is_empty() || idle_flush {
                    let out = self.judge(batch)?;
                    // The previous batch's writes were sealed before this
                    // one's began; they must be durable before these are
                    // sealed in turn.
                    self.done(outbound.take())?;
                    self.store.seal()?;
                    let c = Arc::clone(&courier);
                    outbound = Some(scope.spawn(move || out.finish(&c, store)));
                    last_flush = Instant::now();
                }
            }
            self.done(outbound.take())
        });
        // Drained: every judged event is durable and its offset stored.
        commit_sync(&self.consumer);
        self.consumer.unsubscribe();
        let left = self.courier.time_left();
        if let Err(e) = self.courier.producer.flush(left) {
            tracing::warn!(error = %e, "producer flush at shutdown");
        }
        let flushed = drained.and_then(|()| Ok(self.store.flush()?));
        self.store.release_flushes();
        flushed
    }

    /// A batch's way out ended: its offsets are stored for the next commit,
    /// and compaction starts if due.
    fn done(
        &mut self,
        outbound: Option<std::thread::ScopedJoinHandle<'_, Finished>>,
    ) -> Result<(), WorkerError> {
        let Some(handle) = outbound else {
            return Ok(());
        };
        let offsets = match handle.join() {
            Ok(finished) => finished?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        for ((topic, p), o) in offsets {
            if let Err(e) = self.consumer.store_offset(&topic, p, o) {
                tracing::warn!(error = %e, topic, partition = p, "offset not stored; the events will be redelivered");
            }
        }
        // Every `compact_every_days` of event time, on its own thread (its
        // writes stay out of the changelog: each instance compacts its own
        // store).
        self.store.compact_if_due()?;
        Ok(())
    }

    /// Step 1: a batch of messages, rebalances handled: waits for the first
    /// one, takes every message already fetched, and waits for more until
    /// `batch.max_wait_ms` after the first (0: no wait).
    fn collect(&mut self) -> Result<Vec<OwnedMessage>, WorkerError> {
        let max = self.cfg.batch.max_events;
        let wait = Duration::from_millis(self.cfg.batch.max_wait_ms);
        let mut batch: Vec<OwnedMessage> = Vec::new();
        let mut deadline: Option<Instant> = None;
        loop {
            let timeout = match deadline {
                None => Duration::from_millis(100),
                Some(d) => d.saturating_duration_since(Instant::now()),
            };
            let (got, _) = self.poll_into(timeout, &mut batch)?;
            if got {
                deadline.get_or_insert_with(|| Instant::now() + wait);
            }
            let full = batch.len() >= max;
            // Past the deadline, messages already fetched are still taken
            // (a poll with no time left answers from the local queue): a
            // batch ends when that queue is empty, not in the middle of it.
            let due = !got && deadline.is_some_and(|d| Instant::now() >= d);
            if full || due || (!got && batch.is_empty()) || self.health.stopping() {
                return Ok(batch);
            }
        }
    }

    /// One poll: a message joins `batch`; the rebalances it ran are handled
    /// and the revoked partitions' messages leave `batch`. Returns whether a
    /// message came, and the partitions revoked.
    fn poll_into(
        &mut self,
        timeout: Duration,
        batch: &mut Vec<OwnedMessage>,
    ) -> Result<(bool, BTreeSet<(String, i32)>), WorkerError> {
        let got = match self.consumer.poll(timeout) {
            Some(Ok(m)) => {
                batch.push(m.detach());
                true
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
                false
            }
            None => false,
        };
        let gone = self.on_rebalance()?;
        drop_revoked(batch, &gone, |m| m);
        Ok((got, gone))
    }

    /// A batch of messages already fetched, without waiting (at most
    /// `batch.max_events`); a rebalance meanwhile also drops `judging`'s
    /// messages of revoked partitions.
    fn collect_fetched(&mut self, judging: &mut Batch) -> Result<Vec<OwnedMessage>, WorkerError> {
        let max = self.cfg.batch.max_events;
        let mut batch: Vec<OwnedMessage> = Vec::new();
        while batch.len() < max {
            let (got, gone) = self.poll_into(Duration::ZERO, &mut batch)?;
            judging.revoked.extend(gone);
            if !got {
                break;
            }
        }
        Ok(batch)
    }

    /// Decodes and analyzes a batch's listings on other threads (pure
    /// work) while this one goes on; [`Worker::judge`] waits for it.
    fn analyze_behind(&self, messages: Vec<OwnedMessage>) -> Batch {
        let engine = self.reloader.engine();
        let messages = Arc::new(messages);
        let analysis = if messages.is_empty() {
            None
        } else {
            let (m, e) = (Arc::clone(&messages), Arc::clone(&engine));
            let limits = self.limits;
            let listings = self.cfg.kafka.listings_topic.clone();
            let threads = self.cfg.batch.threads();
            std::thread::Builder::new()
                .name("haechi-analyze".into())
                .spawn(move || {
                    parallel_map(&m, threads, &|m: &OwnedMessage| {
                        (m.topic() == listings).then(|| analyze(&e, m, &limits))
                    })
                })
                .map_err(
                    |e| tracing::warn!(error = %e, "no analysis thread; analyzing in the loop"),
                )
                .ok()
        };
        Batch {
            engine,
            messages,
            analysis,
            revoked: BTreeSet::new(),
        }
    }

    /// The partitions revoked by rebalances `poll` ran since the last call
    /// (restoring the assigned ones first).
    fn on_rebalance(&mut self) -> Result<BTreeSet<(String, i32)>, WorkerError> {
        let mut revoked = BTreeSet::new();
        let events = std::mem::take(&mut *lock(&self.consumer.context().events));
        for ev in events {
            match ev {
                Rebalanced::Revoked(parts) => {
                    let gone: BTreeSet<(String, i32)> = parts.into_iter().collect();
                    revoked.extend(gone.iter().cloned());
                    for (t, p) in gone {
                        if t == self.cfg.kafka.listings_topic {
                            self.owned.remove(&p);
                        }
                    }
                    self.health
                        .ready
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
                Rebalanced::Assigned(parts) => {
                    for (t, p) in parts {
                        if t == self.cfg.kafka.listings_topic && !self.owned.contains(&p) {
                            self.restore(p)?;
                            self.owned.insert(p);
                        }
                    }
                    self.health
                        .ready
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        gauge!(obs::PARTITIONS).set(self.owned.len() as f64);
        Ok(revoked)
    }

    /// Brings this store up to date with a partition's changelog: writes a
    /// marker to learn where the end is, then applies everything from the
    /// store's checkpoint up to the marker.
    fn restore(&mut self, partition: i32) -> Result<(), WorkerError> {
        let started = Instant::now();
        let topic = self.cfg.kafka.changelog_topic.clone();
        let err = |message: String| WorkerError::Restore { partition, message };
        let marker = Outgoing {
            topic: topic.clone(),
            partition: Some(partition),
            key: MARKER_KEY.to_vec(),
            payload: Some(self.cfg.kafka.client_id.as_bytes().to_vec()),
        };
        let delivered = self.courier.deliver(vec![marker], "changelog")?;
        let end = delivered
            .first()
            .map(|d| d.1)
            .ok_or_else(|| err("the marker was not delivered".into()))?;
        let from = self
            .store
            .changelog_checkpoint(partition)?
            .map(|o| o + 1)
            .unwrap_or(0);
        let mut applied = 0u64;
        if from < end {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, partition, Offset::Offset(from))?;
            self.restorer.assign(&tpl)?;
            let mut chunk: Vec<KeyValue> = Vec::new();
            let mut last_seen = Instant::now();
            let mut last_offset = from - 1;
            while last_offset < end {
                match self.restorer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => {
                        last_seen = Instant::now();
                        last_offset = m.offset();
                        if m.key() != Some(MARKER_KEY) {
                            if let Some(payload) = m.payload() {
                                chunk.extend(decode_changes(payload)?);
                            }
                        }
                        if chunk.len() >= 5_000 || last_offset >= end {
                            applied += chunk.len() as u64;
                            self.store.restore(&chunk, partition, last_offset)?;
                            chunk.clear();
                        }
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, partition, "changelog read"),
                    None if last_seen.elapsed() > Duration::from_secs(60) => {
                        return Err(err(format!(
                            "no changelog record for 60 s at offset {} (marker at {end})",
                            last_offset + 1
                        )))
                    }
                    None => {}
                }
                self.health.beat();
            }
            self.restorer.unassign()?;
        }
        self.store.set_changelog_checkpoint(partition, end)?;
        // The flush below also makes durable the batch on its way out, whose
        // changelog may still be in flight: wait for it to be answered first
        // (a failed delivery is produced again by the batch's way out, as
        // at a revoke). A revoke before an assignment has flushed the
        // producer already; this covers an assignment without one, e.g.
        // under a cooperative assignor.
        if let Err(e) = self.courier.producer.flush(self.courier.time_left()) {
            return Err(err(format!("changelog in flight not delivered: {e}")));
        }
        self.store.flush()?;
        counter!(obs::RESTORED).increment(applied);
        histogram!(obs::STAGE, "stage" => "restore").record(started.elapsed().as_secs_f64());
        tracing::info!(
            partition,
            records = applied,
            from,
            to = end,
            seconds = started.elapsed().as_secs_f64(),
            "seller state restored from the changelog"
        );
        Ok(())
    }

    /// Steps 2 to 5 for one batch.
    fn judge(&mut self, batch: Batch) -> Result<Outbound, WorkerError> {
        let engine = self.reloader.engine();
        let (batch, analyzed) = batch.wait(&engine, &self.limits, &self.cfg.kafka.listings_topic);
        let proc = Processor::manual_flush(&engine, self.store);
        let k = &self.cfg.kafka;
        if !batch.is_empty() {
            histogram!(obs::BATCH).record(batch.len() as f64);
        }

        // Moderators' actions since the last batch (HTTP API, other threads)
        // cannot be tied to one partition here: they go to every owned one;
        // restores merge them (see haechi_store::changelog).
        let mut other: Vec<KeyValue> = self.store.take_changes().other;
        let mut out: Vec<Outgoing> = Vec::with_capacity(batch.len() * 2);
        let mut offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut produced_at: Vec<i64> = Vec::with_capacity(batch.len());
        let judged = histogram!(obs::EVENT_AGE, "at" => "judged");
        // Each partition's changes, whole events per message.
        let mut changelog: BTreeMap<i32, PendingChanges> = BTreeMap::new();
        // Decoding and analysis (pure) ran on other threads; everything
        // stateful below stays in order.
        for (m, analyzed) in batch.iter().zip(analyzed) {
            offsets.insert((m.topic().to_owned(), m.partition()), m.offset());
            self.meters.event_in(m.topic());
            if let Some(analyzed) = analyzed {
                if let (Ok(_), Some(at)) = (&analyzed, m.timestamp().to_millis()) {
                    produced_at.push(at);
                    judged.record(age_seconds(at));
                }
                self.listing(m, analyzed, &proc, &mut out)?;
            } else if m.topic() == k.decisions_topic {
                self.decision(m, &mut out)?;
            }
            let taken = self.store.take_changes();
            if !taken.own.is_empty() {
                let changes = changelog.entry(m.partition()).or_default();
                if changes.bytes >= CHANGELOG_MESSAGE_BYTES {
                    out.push(changes.message(k, m.partition()));
                }
                for change in taken.own {
                    changes.add(change);
                }
            }
            other.extend(taken.other);
        }
        for (partition, changes) in &mut changelog {
            if !changes.is_empty() {
                out.push(changes.message(k, *partition));
            }
        }
        if !other.is_empty() {
            let payload = encode_changes(&other);
            for p in &self.owned {
                out.push(Outgoing {
                    topic: k.changelog_topic.clone(),
                    partition: Some(*p),
                    key: b"moderators".to_vec(),
                    payload: Some(payload.clone()),
                });
            }
        }

        // The changelog goes out now; the rest waits for its delivery (see
        // [`Outbound::finish`]).
        let started = Instant::now();
        let (changelog, outputs): (Vec<Outgoing>, Vec<Outgoing>) =
            out.into_iter().partition(|o| o.topic == k.changelog_topic);
        Ok(Outbound {
            changelog: self.courier.send_all(changelog),
            started,
            outputs,
            offsets,
            produced_at,
        })
    }

    fn listing(
        &mut self,
        m: &OwnedMessage,
        analyzed: Result<Analyzed, InvalidEvent>,
        proc: &Processor<'_>,
        out: &mut Vec<Outgoing>,
    ) -> Result<(), WorkerError> {
        let k = &self.cfg.kafka;
        match analyzed {
            Ok(Analyzed {
                listing,
                analysis,
                took,
            }) => {
                let p: Processed = proc.process_analyzed(&listing, analysis)?;
                let meters = &mut self.meters;
                if p.duplicate {
                    meters.duplicates.increment(1);
                } else {
                    self.events += 1;
                    let t = p.timings;
                    meters.analyze.record(took.as_secs_f64());
                    meters.history.record(t.history.as_secs_f64());
                    meters.decide.record(t.decide.as_secs_f64());
                    meters.record.record(t.record.as_secs_f64());
                    for r in &p.verdict.reasons {
                        if matches!(r.source, ReasonSource::Rule | ReasonSource::List) {
                            meters.rule_hit(&r.id);
                        }
                    }
                }
                meters.verdict(p.verdict.action);
                out.push(Outgoing {
                    topic: k.verdicts_topic.clone(),
                    partition: None,
                    key: listing.seller_id.into_bytes(),
                    payload: Some(p.json.into_bytes()),
                });
            }
            Err(e) => out.push(self.dead_letter(m, &e)),
        }
        Ok(())
    }

    fn dead_letter(&self, m: &OwnedMessage, e: &InvalidEvent) -> Outgoing {
        let raw = m.payload().unwrap_or_default();
        let dl = DeadLetter::new(
            SourcePos::Kafka {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                offset: m.offset(),
            },
            e,
            raw,
        );
        counter!(obs::DEAD_LETTERS, "code" => dl.code.clone()).increment(1);
        tracing::debug!(source = %dl.source, code = %dl.code, "dead letter");
        Outgoing {
            topic: self.cfg.kafka.dlq_topic.clone(),
            partition: None,
            key: m.key().unwrap_or_default().to_vec(),
            payload: Some(serde_json::to_vec(&dl).unwrap_or_default()),
        }
    }

    fn decision(&mut self, m: &OwnedMessage, out: &mut Vec<Outgoing>) -> Result<(), WorkerError> {
        let raw = m.payload().unwrap_or_default();
        match parse_decision(raw) {
            Ok(d) => {
                let id = d
                    .decision_id
                    .unwrap_or_else(|| format!("{}/{}/{}", m.topic(), m.partition(), m.offset()));
                let applied =
                    self.store
                        .apply_decision_once(&id, &d.listing_id, &d.seller_id, d.fraud)?;
                counter!(obs::DECISIONS, "applied" => if applied { "new" } else { "duplicate" })
                    .increment(1);
            }
            Err(e) => out.push(self.dead_letter(m, &e)),
        }
        Ok(())
    }
}

/// Produces messages and waits for their delivery reports: shared by the
/// loop and the thread that finishes the previous batch while the loop
/// judges the next.
struct Courier<'a> {
    producer: FutureProducer,
    rt: tokio::runtime::Handle,
    health: &'a Health,
    stop_timeout: Duration,
    /// When a shutdown was first seen plus `stop_timeout`: bounds every
    /// wait after it.
    stop_deadline: std::sync::OnceLock<Instant>,
}

impl Courier<'_> {
    /// Once a shutdown is requested: the time by which the drain must end
    /// (fixed at the first call after the request).
    fn shutdown_deadline(&self) -> Option<Instant> {
        if !self.health.stopping() {
            return self.stop_deadline.get().copied();
        }
        Some(*self.stop_deadline.get_or_init(|| {
            tracing::info!("shutdown requested: finishing in-flight events");
            Instant::now() + self.stop_timeout
        }))
    }

    fn time_left(&self) -> Duration {
        self.stop_deadline
            .get()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(30))
    }

    /// Produces everything and waits for every delivery report (see
    /// [`Courier::await_delivery`]), timed as `stage`.
    fn deliver(
        &self,
        out: Vec<Outgoing>,
        stage: &'static str,
    ) -> Result<Vec<(String, i64, i32)>, WorkerError> {
        let started = Instant::now();
        let inflight = self.send_all(out);
        self.await_delivery(inflight, started, stage)
    }

    /// Produces every message without waiting for the broker.
    fn send_all(&self, out: Vec<Outgoing>) -> Vec<(Outgoing, Option<DeliveryFuture>)> {
        out.into_iter()
            .map(|o| {
                let f = self.enqueue(&o);
                (o, f)
            })
            .collect()
    }

    /// Waits for the delivery report of every message sent, producing
    /// failed ones again until they are delivered (or the shutdown deadline
    /// passes). Returns (topic, offset, partition) of each.
    fn await_delivery(
        &self,
        inflight: Vec<(Outgoing, Option<DeliveryFuture>)>,
        started: Instant,
        stage: &'static str,
    ) -> Result<Vec<(String, i64, i32)>, WorkerError> {
        if inflight.is_empty() {
            // Nothing to wait for (a batch of duplicates has no changelog):
            // no zero-length observation in the histogram.
            return Ok(Vec::new());
        }
        let mut delivered = Vec::with_capacity(inflight.len());
        let mut inflight = inflight;
        let mut backoff = Duration::from_millis(200);
        loop {
            let results: Vec<(Outgoing, DeliveryReport)> = self.rt.block_on(async {
                let mut results = Vec::with_capacity(inflight.len());
                for (o, f) in inflight {
                    let r = match f {
                        None => Err("not enqueued".to_string()),
                        Some(f) => match f.await {
                            Ok(Ok(d)) => Ok((d.partition, d.offset)),
                            Ok(Err((e, _))) => Err(e.to_string()),
                            Err(_) => Err("delivery report lost".to_string()),
                        },
                    };
                    results.push((o, r));
                }
                results
            });
            let mut todo = Vec::new();
            for (o, r) in results {
                match r {
                    Ok((p, off)) => delivered.push((o.topic, off, p)),
                    Err(e) => {
                        tracing::warn!(topic = %o.topic, error = %e, "delivery failed; producing it again");
                        counter!(obs::PRODUCE_RETRIES).increment(1);
                        todo.push(o);
                    }
                }
            }
            if todo.is_empty() {
                break;
            }
            self.health.beat();
            if self
                .shutdown_deadline()
                .is_some_and(|d| Instant::now() >= d)
            {
                return Err(WorkerError::ShutdownTimeout(self.stop_timeout));
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
            inflight = self.send_all(todo);
        }
        histogram!(obs::STAGE, "stage" => stage).record(started.elapsed().as_secs_f64());
        Ok(delivered)
    }

    fn enqueue(&self, o: &Outgoing) -> Option<DeliveryFuture> {
        let sent = super::tools::send(
            &self.producer,
            &o.topic,
            o.partition,
            Some(&o.key),
            o.payload.as_deref(),
        );
        sent.map_err(|e| tracing::warn!(topic = %o.topic, error = %e, "produce refused"))
            .ok()
    }
}

/// What a batch's way out ends with: the offsets to store.
type Finished = Result<BTreeMap<(String, i32), i64>, WorkerError>;

/// A judged batch on its way out: its changelog sent, its verdicts and
/// dead letters waiting for the changelog's delivery, its store writes
/// sealed.
struct Outbound {
    changelog: Vec<(Outgoing, Option<DeliveryFuture>)>,
    started: Instant,
    outputs: Vec<Outgoing>,
    offsets: BTreeMap<(String, i32), i64>,
    /// The Kafka timestamps (ms) of the batch's listings.
    produced_at: Vec<i64>,
}

impl Outbound {
    /// The rest of a batch's way out, on a thread of its own while the loop
    /// judges the next batch: the changelog delivered (so that a verdict is
    /// never out while the state behind it is neither durable nor in the
    /// changelog), each partition's changelog position noted, then the
    /// verdicts produced while the sealed writes are made durable. Returns
    /// the offsets that may now be stored.
    fn finish(self, courier: &Courier<'_>, store: &Store) -> Finished {
        let delivered = courier.await_delivery(self.changelog, self.started, "changelog")?;
        counter!(obs::CHANGELOG_OUT).increment(delivered.len() as u64);
        let mut checkpoints: BTreeMap<i32, i64> = BTreeMap::new();
        for (_, offset, partition) in delivered {
            let c = checkpoints.entry(partition).or_insert(offset);
            *c = (*c).max(offset);
        }
        // Written with the next batch's writes: a checkpoint a batch behind
        // only makes a restore re-apply changes the store has (merged or
        // replaced by the same values, then by the newer ones after them).
        for (p, o) in checkpoints {
            store.set_changelog_checkpoint(p, o)?;
        }
        let started = Instant::now();
        let inflight = courier.send_all(self.outputs);
        store.flush_sealed()?;
        histogram!(obs::STAGE, "stage" => "flush").record(started.elapsed().as_secs_f64());
        courier.await_delivery(inflight, started, "deliver")?;
        let delivered = histogram!(obs::EVENT_AGE, "at" => "delivered");
        for at in self.produced_at {
            delivered.record(age_seconds(at));
        }
        Ok(self.offsets)
    }
}

/// Seconds since `at` (ms since the epoch, a Kafka timestamp); never
/// negative (the producer's clock may be ahead of ours).
fn age_seconds(at: i64) -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    now.saturating_sub(at).max(0) as f64 / 1000.0
}

/// What analysis made of a batch's messages: `None` for other topics.
type Analyses = Vec<Option<Result<Analyzed, InvalidEvent>>>;

/// A batch of messages whose analysis runs on other threads.
#[derive(Debug)]
struct Batch {
    /// The engine it is analyzed with.
    engine: Arc<Engine>,
    messages: Arc<Vec<OwnedMessage>>,
    /// `None`: not started (no thread could be had), done by [`Batch::wait`].
    analysis: Option<std::thread::JoinHandle<Analyses>>,
    /// Partitions revoked since it was collected: their messages are left
    /// to the next owner.
    revoked: BTreeSet<(String, i32)>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The messages and their analyses, in order, without the revoked
    /// partitions'; analyzed here if no thread did it or the engine was
    /// reloaded meanwhile (a verdict comes from one engine).
    fn wait(
        self,
        engine: &Arc<Engine>,
        limits: &Limits,
        listings: &str,
    ) -> (Vec<OwnedMessage>, Analyses) {
        let done = match self.analysis {
            None => None,
            Some(handle) => match handle.join() {
                Ok(done) => Some(done),
                // Analysis does not panic on input (fuzzed); if it ever
                // did, fail loudly rather than lose events.
                Err(panic) => std::panic::resume_unwind(panic),
            },
        };
        let messages = Arc::try_unwrap(self.messages).unwrap_or_else(|shared| (*shared).clone());
        let analyzed: Analyses = match done {
            Some(a) if Arc::ptr_eq(&self.engine, engine) => a,
            _ => messages
                .iter()
                .map(|m| (m.topic() == listings).then(|| analyze(engine, m, limits)))
                .collect(),
        };
        if self.revoked.is_empty() {
            return (messages, analyzed);
        }
        let mut both: Vec<_> = messages.into_iter().zip(analyzed).collect();
        drop_revoked(&mut both, &self.revoked, |(m, _)| m);
        let (messages, analyzed) = both.into_iter().unzip();
        (messages, analyzed)
    }
}

/// Drops the messages of revoked partitions from a batch not yet judged.
fn drop_revoked<T>(
    batch: &mut Vec<T>,
    gone: &BTreeSet<(String, i32)>,
    message: impl Fn(&T) -> &OwnedMessage,
) {
    if gone.is_empty() {
        return;
    }
    let before = batch.len();
    batch.retain(|item| {
        let m = message(item);
        !gone.contains(&(m.topic().to_owned(), m.partition()))
    });
    if batch.len() < before {
        tracing::info!(
            dropped = before - batch.len(),
            "unjudged messages of revoked partitions left to their next owner"
        );
    }
}

/// A listing decoded and analyzed ahead of the ordered part of a batch.
#[derive(Debug)]
struct Analyzed {
    listing: Listing,
    analysis: Analysis,
    took: Duration,
}

fn analyze(engine: &Engine, m: &OwnedMessage, limits: &Limits) -> Result<Analyzed, InvalidEvent> {
    let listing = match m.payload() {
        None => return Err(InvalidEvent::Empty),
        Some(raw) => decode_listing(raw, limits)?,
    };
    let t = Instant::now();
    let analysis = engine.analyze(&listing);
    Ok(Analyzed {
        listing,
        analysis,
        took: t.elapsed(),
    })
}

fn publish_versions(reloader: &Reloader) {
    let e = reloader.engine();
    let v = e.versions();
    gauge!(obs::VERSIONS, "rules" => v.rules.clone(), "model" => v.model.clone()).set(1.0);
}

/// A moderator's decision as it arrives on `moderation-decisions`.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionMessage {
    /// Idempotency key; default: topic/partition/offset of the message.
    pub decision_id: Option<String>,
    pub listing_id: String,
    pub seller_id: String,
    /// Confirmed fraud (`true`) or cleared.
    pub fraud: bool,
}

#[derive(serde::Deserialize)]
struct DecisionWire {
    decision_id: Option<String>,
    listing_id: Option<String>,
    seller_id: Option<String>,
    action: Option<String>,
    fraud: Option<bool>,
}

/// Parses a decision: `listing_id`, `seller_id` and either `fraud` (bool)
/// or `action` (`approve`, `remove`, `ban-seller`, as the review CLI says).
pub fn parse_decision(raw: &[u8]) -> Result<DecisionMessage, InvalidEvent> {
    let w: DecisionWire = serde_json::from_slice(raw).map_err(|e| InvalidEvent::InvalidJson {
        message: format!("moderation decision: {e}"),
    })?;
    let listing_id = w
        .listing_id
        .filter(|s| !s.is_empty())
        .ok_or(InvalidEvent::MissingField {
            field: "listing_id",
        })?;
    let seller_id = w
        .seller_id
        .filter(|s| !s.is_empty())
        .ok_or(InvalidEvent::MissingField { field: "seller_id" })?;
    let fraud = match (w.fraud, w.action.as_deref()) {
        (Some(f), _) => f,
        (None, Some("approve")) => false,
        (None, Some("remove" | "ban-seller")) => true,
        (None, Some(other)) => {
            return Err(InvalidEvent::WrongType {
                field: "action".into(),
                message: format!("{other:?} is not approve, remove or ban-seller"),
            })
        }
        (None, None) => return Err(InvalidEvent::MissingField { field: "fraud" }),
    };
    Ok(DecisionMessage {
        decision_id: w.decision_id,
        listing_id,
        seller_id,
        fraud,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changelog_message_holds_the_last_value_of_each_key() {
        let kv =
            |k: &str, v: Option<&str>| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec()));
        let mut p = PendingChanges::default();
        p.add(kv("price:iphone", Some("1 sample")));
        p.add(kv("seller:a", Some("a1")));
        p.add(kv("price:iphone", Some("2 samples")));
        p.add(kv("listing:x", None));
        assert_eq!(
            p.bytes,
            [
                kv("seller:a", Some("a1")),
                kv("price:iphone", Some("2 samples")),
                kv("listing:x", None)
            ]
            .iter()
            .map(change_bytes)
            .sum::<usize>()
        );
        let cfg = KafkaConfig::default();
        let m = p.message(&cfg, 3);
        assert_eq!(
            (m.topic.as_str(), m.partition),
            (cfg.changelog_topic.as_str(), Some(3))
        );
        let changes = decode_changes(&m.payload.unwrap()).unwrap();
        assert_eq!(
            changes,
            vec![
                kv("seller:a", Some("a1")),
                kv("price:iphone", Some("2 samples")),
                kv("listing:x", None)
            ]
        );
        assert!(p.is_empty() && p.bytes == 0, "taken");
    }

    #[test]
    fn decisions_parse_or_say_why() {
        let d =
            parse_decision(br#"{"listing_id":"l1","seller_id":"s1","action":"remove"}"#).unwrap();
        assert!(d.fraud);
        let d = parse_decision(
            br#"{"decision_id":"d9","listing_id":"l1","seller_id":"s1","fraud":false}"#,
        )
        .unwrap();
        assert_eq!((d.fraud, d.decision_id.as_deref()), (false, Some("d9")));
        let e = parse_decision(br#"{"listing_id":"l1","seller_id":"s1","action":"maybe"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("maybe"));
        let e = parse_decision(br#"{"seller_id":"s1","fraud":true}"#).unwrap_err();
        assert_eq!(e.code(), "missing_field");
        assert_eq!(parse_decision(b"{").unwrap_err().code(), "invalid_json");
    }
}
