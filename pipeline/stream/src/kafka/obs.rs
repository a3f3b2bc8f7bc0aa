//! Observability of `haechi run`: the Prometheus recorder, the metric
//! names, and the health state the HTTP endpoints report.

use haechi_engine::Action;
use metrics::{counter, histogram, Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// Events consumed, by topic.
pub const EVENTS_IN: &str = "haechi_events_in_total";
/// Verdicts produced, by action (`allow`, `review`, `block`).
pub const VERDICTS: &str = "haechi_verdicts_total";
/// Events that had been processed before (redeliveries), answered with
/// their original verdict.
pub const DUPLICATES: &str = "haechi_duplicate_events_total";
/// Messages sent to the dead-letter topic, by code.
pub const DEAD_LETTERS: &str = "haechi_dead_letters_total";
/// Moderator decisions applied to seller history (`applied` = new).
pub const DECISIONS: &str = "haechi_decisions_total";
/// Consumer lag per topic and partition (from librdkafka's statistics).
pub const LAG: &str = "haechi_consumer_lag";
/// Seconds per stage: analyze, history, decide, record (per event);
/// changelog (its delivery), deliver (verdicts and dead letters), flush,
/// commit (per batch); restore (per partition).
pub const STAGE: &str = "haechi_stage_seconds";
/// Seconds from a listing's Kafka timestamp (when it was produced) to its
/// judging (`at="judged"`: fetch and queueing) and to its verdict's
/// confirmed delivery (`at="delivered"`: what the produce-to-verdict
/// latency target is about, as each instance sees it).
pub const EVENT_AGE: &str = "haechi_event_to_verdict_seconds";
/// Events per batch.
pub const BATCH: &str = "haechi_batch_events";
/// Rule hits, by rule id.
pub const RULE_HITS: &str = "haechi_rule_hits_total";
/// 1, labelled with the running rules and model versions.
pub const VERSIONS: &str = "haechi_versions_info";
/// Records written to the changelog topic.
pub const CHANGELOG_OUT: &str = "haechi_changelog_records_total";
/// Changelog records applied when a partition was assigned.
pub const RESTORED: &str = "haechi_restored_records_total";
/// Produce attempts that failed and were retried.
pub const PRODUCE_RETRIES: &str = "haechi_produce_retries_total";
/// Partitions this instance owns.
pub const PARTITIONS: &str = "haechi_assigned_partitions";

/// Installs the global Prometheus recorder (once per process).
pub fn install() -> Result<PrometheusHandle, String> {
    // Fine between 1 and 50 ms, where the latency target lies.
    const SECONDS: &[f64] = &[
        0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05,
        0.075, 0.1, 0.25, 0.5, 1.0, 5.0,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(STAGE.into()), SECONDS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(EVENT_AGE.into()), SECONDS))
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(BATCH.into()),
                &[1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0],
            )
        })
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// The per-event metrics, their handles resolved once: a `counter!` with
/// labels builds and hashes its key on every call, and an event touched
/// eight of them.
pub struct EventMeters {
    listings_topic: String,
    listings_in: Counter,
    decisions_topic: String,
    decisions_in: Counter,
    pub analyze: Histogram,
    pub history: Histogram,
    pub decide: Histogram,
    pub record: Histogram,
    pub duplicates: Counter,
    verdicts: [Counter; 3],
    rule_hits: HashMap<String, Counter>,
}

impl EventMeters {
    /// After [`install`] (handles taken before it record nothing).
    pub fn new(listings_topic: &str, decisions_topic: &str) -> EventMeters {
        let stage = |s: &'static str| histogram!(STAGE, "stage" => s);
        let verdicts = |a: Action| counter!(VERDICTS, "action" => a.as_str());
        EventMeters {
            listings_topic: listings_topic.to_owned(),
            listings_in: counter!(EVENTS_IN, "topic" => listings_topic.to_owned()),
            decisions_topic: decisions_topic.to_owned(),
            decisions_in: counter!(EVENTS_IN, "topic" => decisions_topic.to_owned()),
            analyze: stage("analyze"),
            history: stage("history"),
            decide: stage("decide"),
            record: stage("record"),
            duplicates: counter!(DUPLICATES),
            verdicts: [
                verdicts(Action::Allow),
                verdicts(Action::Review),
                verdicts(Action::Block),
            ],
            rule_hits: HashMap::new(),
        }
    }

    /// One event consumed from `topic`.
    pub fn event_in(&self, topic: &str) {
        if topic == self.listings_topic {
            self.listings_in.increment(1);
        } else if topic == self.decisions_topic {
            self.decisions_in.increment(1);
        } else {
            counter!(EVENTS_IN, "topic" => topic.to_owned()).increment(1);
        }
    }

    pub fn verdict(&self, action: Action) {
        let i = match action {
            Action::Allow => 0,
            Action::Review => 1,
            Action::Block => 2,
        };
        self.verdicts[i].increment(1);
    }

    pub fn rule_hit(&mut self, rule: &str) {
        match self.rule_hits.get(rule) {
            Some(c) => c.increment(1),
            None => {
                let c = counter!(RULE_HITS, "rule" => rule.to_owned());
                c.increment(1);
                self.rule_hits.insert(rule.to_owned(), c);
            }
        }
    }
}

impl std::fmt::Debug for EventMeters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventMeters")
            .field("rules", &self.rule_hits.len())
            .finish_non_exhaustive()
    }
}

/// What the loop tells the health endpoints.
#[derive(Debug, Default)]
pub struct Health {
    /// Set by SIGTERM/SIGINT: stop fetching and drain.
    pub stopping: AtomicBool,
    /// Subscribed and every assigned partition restored.
    pub ready: AtomicBool,
    /// When the loop last went round (ms since the epoch).
    pub heartbeat_ms: AtomicI64,
}

/// The loop is considered stuck past this.
pub const STUCK_MS: i64 = 60_000;

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Health {
    pub fn beat(&self) {
        self.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Alive: the loop went round recently.
    pub fn live(&self) -> bool {
        now_ms() - self.heartbeat_ms.load(Ordering::Relaxed) < STUCK_MS
    }

    /// Ready: alive, partitions restored, not shutting down.
    pub fn is_ready(&self) -> bool {
        self.live() && self.ready.load(Ordering::Relaxed) && !self.stopping()
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}
