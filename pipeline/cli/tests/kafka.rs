//! `haechi run` against a real Kafka-protocol broker (tansu, started by the
//! project's own scripts/broker.sh on a free port for each test):
//!
//! * one verdict per valid event, dead letters with their bytes and
//!   position, metrics and health endpoints, SIGTERM drains and exits 0;
//! * kill -9 several times mid-stream: every event still gets a verdict,
//!   redeliveries repeat the original verdict byte for byte, no review case
//!   is duplicated, seller history counts are exact;
//! * the broker frozen (SIGSTOP) past the request timeouts, then resumed:
//!   nothing lost;
//! * two instances in one group, a rebalance mid-stream, then one leaves:
//!   the survivor restores the departed partitions' seller history and
//!   review cases from the changelog.
//!
//! The broker's high watermark can trail the real end, so the tests count
//! messages instead of trusting lag.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{free_port, root};

use haechi_engine::{decode_listing, EventKind, Limits};
use haechi_store::review::CaseFilter;
use haechi_store::Store;
use haechi_stream::kafka::tools;
use rdkafka::message::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOPICS: [&str; 5] = [
    "listings",
    "listing-verdicts",
    "listings-dlq",
    "moderation-decisions",
    "haechi-changelog",
];

/// A tansu broker on a free port, with haechi's topics (4 partitions).
struct Broker {
    child: Child,
    port: u16,
    tansu: PathBuf,
}

impl Broker {
    fn start() -> Broker {
        let out = Command::new(root().join("scripts/broker.sh"))
            .arg("path")
            .current_dir(root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/broker.sh path failed: {out:?}"
        );
        let tansu = root().join(String::from_utf8(out.stdout).unwrap().trim());
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let b = Broker { child, port, tansu };
        let started = Instant::now();
        while !b.tansu(&["topic", "list"]) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "broker did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        for t in TOPICS {
            assert!(
                b.tansu(&["topic", "create", "--partitions", "4", t]),
                "create {t}"
            );
        }
        b
    }

    fn tansu(&self, args: &[&str]) -> bool {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let (cmd, rest) = args.split_at(2);
        Command::new(&self.tansu)
            .args(cmd)
            .args(["--broker", &url])
            .args(rest)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `haechi run` process.
struct Pipeline {
    child: Child,
    http: u16,
    log: PathBuf,
}

fn start_pipeline(broker: &Broker, data: &Path, name: &str, extra: &[(&str, &str)]) -> Pipeline {
    let http = free_port();
    let log = data.with_extension(format!("{name}.log"));
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_haechi"));
    c.current_dir(root())
        .args(["run", "--config", "haechi.example.toml"])
        .env("HAECHI_KAFKA__BROKERS", broker.addr())
        .env("HAECHI_KAFKA__CLIENT_ID", name)
        .env("HAECHI_KAFKA__SESSION_TIMEOUT_MS", "3000")
        .env("HAECHI_KAFKA__HEARTBEAT_INTERVAL_MS", "1000")
        .env("HAECHI_STORE__DATA_DIR", data)
        .env("HAECHI_HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env("HAECHI_SHUTDOWN__TIMEOUT_SECS", "15")
        .env("HAECHI_LOG__LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(log_file);
    for (k, v) in extra {
        c.env(k, v);
    }
    Pipeline {
        child: c.spawn().unwrap(),
        http,
        log,
    }
}

impl Pipeline {
    fn get(&self, path: &str) -> Option<(u16, String)> {
        match ureq::get(&format!("http://127.0.0.1:{}{path}", self.http))
            .timeout(Duration::from_secs(2))
            .call()
        {
            Ok(r) => Some((r.status(), r.into_string().unwrap())),
            Err(ureq::Error::Status(code, r)) => Some((code, r.into_string().unwrap())),
            Err(_) => None,
        }
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        while self.get("/readyz").map(|r| r.0) != Some(200) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "not ready in 30 s; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, and the exit status (within the bound).
    fn terminate(mut self) -> i32 {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no exit 20 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn lines(path: &str, n: usize) -> Vec<Vec<u8>> {
    std::fs::read(root().join(path))
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .take(n)
        .map(<[u8]>::to_vec)
        .collect()
}

/// What the verdicts of a set of inputs must add up to.
struct Expected {
    events: BTreeSet<String>,
    created_per_seller: BTreeMap<String, u32>,
}

fn expected(inputs: &[Vec<u8>]) -> Expected {
    let mut e = Expected {
        events: BTreeSet::new(),
        created_per_seller: BTreeMap::new(),
    };
    for l in inputs {
        if let Ok(listing) = decode_listing(l, &Limits::default()) {
            e.events.insert(listing.event_id.clone());
            if listing.event == EventKind::Created {
                *e.created_per_seller.entry(listing.seller_id).or_default() += 1;
            }
        }
    }
    e
}

/// Reads `listing-verdicts` until every expected event has one (or 90 s),
/// and returns every verdict message by event id.
fn verdicts(broker: &Broker, want: &Expected) -> BTreeMap<String, Vec<String>> {
    let started = Instant::now();
    loop {
        let msgs = tools::read_topic(
            &broker.addr(),
            "listing-verdicts",
            None,
            Duration::from_secs(2),
        )
        .unwrap();
        let mut by_event: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in &msgs {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            // key = seller_id
            assert_eq!(
                m.key().unwrap(),
                v["seller_id"].as_str().unwrap().as_bytes()
            );
            by_event
                .entry(v["event_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(tools::text(m));
        }
        let have: BTreeSet<&String> = by_event.keys().collect();
        if want.events.iter().all(|e| have.contains(e)) {
            return by_event;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{} of {} events have a verdict after 90 s",
            want.events.iter().filter(|e| have.contains(e)).count(),
            want.events.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Exactly the expected events, and redeliveries repeat the verdict bytes.
fn check_verdicts(by_event: &BTreeMap<String, Vec<String>>, want: &Expected) -> BTreeSet<String> {
    let got: BTreeSet<String> = by_event.keys().cloned().collect();
    assert_eq!(got, want.events, "verdicts for exactly the valid events");
    let mut flagged = BTreeSet::new();
    for (id, vs) in by_event {
        assert!(
            vs.iter().all(|v| v == &vs[0]),
            "{id}: a redelivered event got a different verdict: {vs:?}"
        );
        let v: serde_json::Value = serde_json::from_str(&vs[0]).unwrap();
        if v["action"] != "allow" {
            flagged.insert(id.clone());
        }
    }
    flagged
}

/// History and review queue in a store, checked against the inputs.
fn check_store(data: &Path, want: &Expected, flagged: &BTreeSet<String>) {
    let store = Store::open(data).unwrap();
    for (seller, n) in &want.created_per_seller {
        let rec = store
            .seller(seller)
            .unwrap()
            .unwrap_or_else(|| panic!("seller {seller} missing from the store"));
        assert_eq!(rec.total, *n, "seller {seller}: listings counted");
    }
    let cases = store.cases(&CaseFilter::default(), 0).unwrap();
    let case_ids: Vec<String> = cases.iter().map(|c| c.id.clone()).collect();
    let unique: BTreeSet<String> = case_ids.iter().cloned().collect();
    assert_eq!(unique.len(), case_ids.len(), "duplicate review cases");
    // Deleted events are flagged without a case (nothing left to review).
    assert!(unique.is_subset(flagged), "cases only for flagged events");
    assert!(
        unique.len() * 100 >= flagged.len() * 95,
        "{} cases for {} flagged events",
        unique.len(),
        flagged.len()
    );
}

fn produce(broker: &Broker, inputs: &[Vec<u8>], rate: Option<f64>) {
    let n =
        tools::produce_lines(&broker.addr(), "listings", inputs.to_vec(), rate, |_, _| {}).unwrap();
    assert_eq!(n as usize, inputs.len());
}

fn produce_in_background(
    broker: &Broker,
    inputs: Vec<Vec<u8>>,
    rate: f64,
) -> std::thread::JoinHandle<()> {
    let addr = broker.addr();
    std::thread::spawn(move || {
        tools::produce_lines(&addr, "listings", inputs, Some(rate), |_, _| {}).unwrap();
    })
}

/// The sum of the verdict counters on a /metrics page.
fn verdicts_total(metrics: &str) -> usize {
    let total: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("haechi_verdicts_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    total as usize
}

#[test]
fn one_verdict_per_valid_event_and_dead_letters_with_their_bytes() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let good = lines("fixtures/handpicked.jsonl", usize::MAX);
    let bad = lines("fixtures/invalid.jsonl", usize::MAX);
    produce(&broker, &good, None);
    produce(&broker, &bad, None);
    let want = expected(&good);

    let data = dir.path().join("store");
    let p = start_pipeline(&broker, &data, "a", &[]);
    p.wait_ready();
    let by_event = verdicts(&broker, &want);
    let flagged = check_verdicts(&by_event, &want);
    assert!(
        by_event.values().all(|v| v.len() == 1),
        "no redelivery here"
    );

    // Dead letters: every bad line, with its exact bytes and position.
    let dlq = tools::read_topic(
        &broker.addr(),
        "listings-dlq",
        Some(bad.len()),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(dlq.len(), bad.len());
    let raws: BTreeSet<String> = bad
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    for m in &dlq {
        let d: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(d["source"]["kind"], "kafka");
        assert_eq!(d["source"]["topic"], "listings");
        assert!(d["source"]["offset"].as_i64().unwrap() >= 0);
        assert!(!d["reason"].as_str().unwrap().is_empty());
        let raw = d["raw"].as_str().map(str::to_owned).unwrap_or_default();
        assert!(raws.contains(&raw) || d["raw_base64"].is_string(), "{d}");
    }

    // Observability.
    let (code, metrics) = p.get("/metrics").unwrap();
    assert_eq!(code, 200);
    assert_eq!(verdicts_total(&metrics), want.events.len(), "{metrics}");
    // Every valid listing's age at judging and at its verdict's delivery.
    for at in ["judged", "delivered"] {
        let count = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "haechi_event_to_verdict_seconds_count{{at=\"{at}\"}} "
                ))
            })
            .unwrap_or_else(|| panic!("no event age at {at}:\n{metrics}"));
        assert_eq!(count.parse::<usize>().unwrap(), want.events.len(), "{at}");
    }
    for name in [
        "haechi_dead_letters_total{code=",
        "haechi_stage_seconds_bucket{stage=\"analyze\"",
        "haechi_rule_hits_total{rule=",
        "haechi_versions_info{",
        "haechi_events_in_total{topic=\"listings\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert_eq!(p.get("/healthz").unwrap().0, 200);

    // SIGTERM: drained, committed, exit 0.
    assert_eq!(p.terminate(), 0);
    check_store(&data, &want, &flagged);

    // A restart resumes after the committed offsets: nothing is judged again.
    let p = start_pipeline(&broker, &data, "a", &[]);
    p.wait_ready();
    std::thread::sleep(Duration::from_secs(2));
    let (_, metrics) = p.get("/metrics").unwrap();
    assert!(
        metrics.contains("haechi_verdicts_total{"),
        "the verdict counters are published from the start"
    );
    assert_eq!(
        verdicts_total(&metrics),
        0,
        "re-judged after a clean stop:\n{metrics}"
    );
    assert_eq!(p.terminate(), 0);
}

#[test]
fn kill_nine_mid_stream_loses_nothing_and_duplicates_nothing() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let inputs = lines("fixtures/test.jsonl", 4_000);
    let want = expected(&inputs);
    let data = dir.path().join("store");
    // Small batches so that kills land between durability points; every
    // other run holds the history resident (the store is the same either
    // way, and a restart may switch).
    let small = [("HAECHI_BATCH__MAX_EVENTS", "20")];
    let resident = [
        ("HAECHI_BATCH__MAX_EVENTS", "20"),
        ("HAECHI_STORE__RESIDENT_HISTORY", "true"),
    ];
    let settings = |round: u64| -> &[(&str, &str)] {
        if round % 2 == 1 {
            &resident
        } else {
            &small
        }
    };
    let producer = produce_in_background(&broker, inputs.clone(), 800.0);
    for round in 0..3 {
        let p = start_pipeline(&broker, &data, "a", settings(round));
        p.wait_ready();
        std::thread::sleep(Duration::from_millis(700 + 300 * round));
        p.kill9();
    }
    producer.join().unwrap();
    let p = start_pipeline(&broker, &data, "a", settings(3));
    let by_event = verdicts(&broker, &want);
    assert_eq!(p.terminate(), 0);
    let flagged = check_verdicts(&by_event, &want);
    let redelivered = by_event.values().filter(|v| v.len() > 1).count();
    eprintln!("{redelivered} events redelivered after kill -9");
    check_store(&data, &want, &flagged);
}

/// SIGTERM while events stream in: the loop stops fetching, judges what it
/// fetched (including the batch analyzed ahead), waits for every batch on
/// its way out, commits and exits 0; the restart goes on from there, so no
/// event is judged twice.
#[test]
fn sigterm_mid_stream_drains_and_commits_so_nothing_is_judged_twice() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let inputs = lines("fixtures/test.jsonl", 3_000);
    let want = expected(&inputs);
    let data = dir.path().join("store");
    let small = [("HAECHI_BATCH__MAX_EVENTS", "50")];
    let p = start_pipeline(&broker, &data, "a", &small);
    p.wait_ready();
    let producer = produce_in_background(&broker, inputs.clone(), 600.0);
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(p.terminate(), 0, "drained within the shutdown timeout");
    let first = tools::read_topic(
        &broker.addr(),
        "listing-verdicts",
        None,
        Duration::from_secs(2),
    )
    .unwrap()
    .len();
    assert!(
        first > 0 && first < want.events.len() / 2,
        "stopped mid-stream: {first} verdicts before the stop"
    );
    producer.join().unwrap();
    let p = start_pipeline(&broker, &data, "a", &small);
    let by_event = verdicts(&broker, &want);
    assert_eq!(p.terminate(), 0);
    let flagged = check_verdicts(&by_event, &want);
    let twice: Vec<_> = by_event
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(e, _)| e)
        .collect();
    assert!(
        twice.is_empty(),
        "judged again after a clean stop: {twice:?}"
    );
    check_store(&data, &want, &flagged);
}

#[test]
fn a_frozen_broker_delays_but_loses_nothing() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let inputs = lines("fixtures/test.jsonl", 3_000);
    let want = expected(&inputs);
    let data = dir.path().join("store");
    let short_timeouts = [
        ("HAECHI_KAFKA__PROPERTIES__SOCKET_TIMEOUT_MS", "3000"),
        ("HAECHI_KAFKA__MESSAGE_TIMEOUT_MS", "4000"),
    ];
    let p = start_pipeline(&broker, &data, "a", &short_timeouts);
    p.wait_ready();
    let (first, rest) = inputs.split_at(1_000);
    produce(&broker, first, None);
    std::thread::sleep(Duration::from_millis(300));
    broker.signal("-STOP");
    std::thread::sleep(Duration::from_secs(8));
    broker.signal("-CONT");
    produce(&broker, rest, None);
    let by_event = verdicts(&broker, &want);
    assert_eq!(p.terminate(), 0);
    let flagged = check_verdicts(&by_event, &want);
    check_store(&data, &want, &flagged);
}

#[test]
fn two_instances_split_the_partitions_and_state_follows_a_rebalance() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let inputs = lines("fixtures/test.jsonl", 6_000);
    let want = expected(&inputs);
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));
    let (first, rest) = inputs.split_at(2_000);
    let (second, third) = rest.split_at(2_000);

    let a = start_pipeline(&broker, &a_data, "a", &[]);
    a.wait_ready();
    produce(&broker, first, None);
    // B joins mid-stream: a rebalance splits the partitions.
    let producer = produce_in_background(&broker, second.to_vec(), 1_500.0);
    std::thread::sleep(Duration::from_millis(500));
    let b = start_pipeline(&broker, &b_data, "b", &[]);
    producer.join().unwrap();
    b.wait_ready();
    let _ = verdicts(&broker, &expected(&inputs[..4_000]));
    let (_, a_metrics) = a.get("/metrics").unwrap();
    let (_, b_metrics) = b.get("/metrics").unwrap();
    let owned = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("haechi_assigned_partitions "))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
    };
    assert_eq!(owned(&a_metrics), Some(2.0), "{a_metrics}");
    assert_eq!(owned(&b_metrics), Some(2.0), "{b_metrics}");

    // A leaves: B takes its partitions, restores their seller history from
    // the changelog, and judges the rest of the stream with it.
    assert_eq!(a.terminate(), 0);
    produce(&broker, third, None);
    let by_event = verdicts(&broker, &want);
    assert_eq!(b.terminate(), 0);
    let flagged = check_verdicts(&by_event, &want);
    // B's store holds every seller's exact history and every review case,
    // although A judged half of the events.
    check_store(&b_data, &want, &flagged);
}
