//! The real `haechi` binary replaying the hand-checked fixture with bad lines
//! mixed in: one verdict per valid event, in order; every bad line in the
//! dead-letter file with its line number, raw bytes and reason; evaluation
//! figures that agree with the labels.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::root;

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn haechi(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_haechi"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("run haechi")
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Bad lines, with the code each must get.
fn bad_lines() -> Vec<(Vec<u8>, &'static str)> {
    let ok = r#"{"event_id":"x","listing_id":"l","seller_id":"s","title":"t","body":"b","price":1000,"created_at":"2026-11-01T10:00:00+09:00"}"#;
    let with = |field: &str, value: &str| {
        let mut v: Value = serde_json::from_str(ok).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        v.to_string().into_bytes()
    };
    let without = |field: &str| {
        let mut v: Value = serde_json::from_str(ok).unwrap();
        v.as_object_mut().unwrap().remove(field);
        v.to_string().into_bytes()
    };
    let mut invalid_utf8 = ok.as_bytes().to_vec();
    invalid_utf8[40] = 0xC3; // a lead byte followed by ASCII
    vec![
        (b"{\"event_id\": \"e\", ".to_vec(), "invalid_json"),
        (invalid_utf8, "invalid_utf8"),
        (without("seller_id"), "missing_field"),
        (with("price", "\"1000\""), "wrong_type"),
        (with("price", "-1"), "negative_price"),
        (
            with("title", &format!("\"{}\"", "가".repeat(301))),
            "field_too_long",
        ),
        (
            with("body", &format!("\"{}\"", "b".repeat(20_001))),
            "field_too_long",
        ),
        (with("event", "\"edited\""), "unknown_event"),
        (with("created_at", "\"soon\""), "bad_timestamp"),
        (Vec::new(), "empty"),
        (
            format!("{{\"title\":\"{}\"}}", "x".repeat(10 << 20)).into_bytes(),
            "too_large",
        ),
    ]
}

#[test]
fn replay_keeps_order_dead_letters_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::fs::read(root().join("fixtures/handpicked.jsonl")).unwrap();
    let good: Vec<&[u8]> = fixture
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let bad = bad_lines();

    // Interleave: a bad line after every 25 good ones.
    let mut input = Vec::new();
    let mut expected_dead = Vec::new(); // (line, code, raw)
    let mut line = 0u64;
    let mut bad_iter = bad.iter();
    for (i, g) in good.iter().enumerate() {
        input.extend_from_slice(g);
        input.push(b'\n');
        line += 1;
        if i % 25 == 24 {
            if let Some((raw, code)) = bad_iter.next() {
                input.extend_from_slice(raw);
                input.push(b'\n');
                line += 1;
                expected_dead.push((line, *code, raw.clone()));
            }
        }
    }
    for (raw, code) in bad_iter {
        input.extend_from_slice(raw);
        input.push(b'\n');
        line += 1;
        expected_dead.push((line, *code, raw.clone()));
    }
    assert_eq!(expected_dead.len(), bad.len());
    let input_path = dir.path().join("mixed.jsonl");
    std::fs::write(&input_path, &input).unwrap();
    let out = dir.path().join("verdicts.jsonl");
    let dlq = dir.path().join("dead.jsonl");

    let o = haechi(&[
        "replay",
        input_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--dead-letter",
        dlq.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();

    // One verdict per valid event, in input order.
    let events: Vec<Value> = good
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let verdicts = read_jsonl(&out);
    assert_eq!(verdicts.len(), events.len());
    for (e, v) in events.iter().zip(&verdicts) {
        assert_eq!(e["event_id"], v["event_id"]);
        assert_eq!(e["seller_id"], v["seller_id"]);
        let score = v["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
        assert!(["allow", "review", "block"].contains(&v["action"].as_str().unwrap()));
        assert!(v["versions"]["rules"].as_str().unwrap().starts_with("r-"));
    }
    assert_eq!(summary["verdicts"], events.len());
    assert_eq!(summary["lines"], line);

    // Every bad line, with its line number, reason and exact bytes.
    let dead = read_jsonl(&dlq);
    assert_eq!(dead.len(), expected_dead.len());
    assert_eq!(summary["dead_letters"], expected_dead.len());
    for (d, (line, code, raw)) in dead.iter().zip(&expected_dead) {
        assert_eq!(d["source"]["line"], *line);
        assert_eq!(d["code"], *code, "{d}");
        assert!(!d["reason"].as_str().unwrap().is_empty());
        assert_eq!(d["raw_len"], raw.len());
        let dl: haechi_engine::DeadLetter = serde_json::from_value(d.clone()).unwrap();
        assert_eq!(
            dl.raw_bytes().as_deref(),
            Some(raw.as_slice()),
            "line {line}"
        );
    }

    // The evaluation agrees with the labels and the verdicts.
    let (mut tp, mut fp, mut fneg) = (0u64, 0u64, 0u64);
    for (e, v) in events.iter().zip(&verdicts) {
        let fraud = e["label"]["fraud"].as_bool().unwrap();
        let flagged = v["action"] != "allow";
        match (fraud, flagged) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fneg += 1,
            _ => {}
        }
    }
    let ev = &summary["evaluation"];
    assert_eq!(ev["true_positives"], tp);
    assert_eq!(ev["false_positives"], fp);
    assert_eq!(ev["false_negatives"], fneg);
    let recall = ev["recall"].as_f64().unwrap();
    assert!((recall - tp as f64 / (tp + fneg) as f64).abs() < 1e-9);
    let precision = ev["precision"].as_f64().unwrap();
    assert!((precision - tp as f64 / (tp + fp) as f64).abs() < 1e-9);
    let kinds = ev["kinds"].as_array().unwrap();
    let fraud_kinds: Vec<&str> = kinds
        .iter()
        .filter(|k| k["fraud"] == true)
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "off_platform_contact",
        "prepayment",
        "fake_escrow",
        "counterfeit",
        "prohibited",
        "giftcard_ticket",
        "too_cheap",
        "bait_and_switch",
    ] {
        assert!(
            fraud_kinds.contains(&kind),
            "kind {kind} missing from the fixture's evaluation"
        );
    }
    // A floor, so a broken rule stage cannot pass silently.
    assert!(recall > 0.6, "recall {recall}");
    assert!(precision > 0.8, "precision {precision}");
}

#[test]
fn replaying_into_the_same_store_twice_counts_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let run = |name: &str| {
        let out = dir.path().join(name);
        let o = haechi(&[
            "replay",
            "fixtures/handpicked.jsonl",
            "--out",
            out.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let s: Value = serde_json::from_slice(&o.stdout).unwrap();
        (s, std::fs::read(out).unwrap())
    };
    let (first, v1) = run("v1.jsonl");
    let (second, v2) = run("v2.jsonl");
    assert_eq!(first["already_processed"], 0);
    assert_eq!(second["already_processed"], first["verdicts"]);
    assert_eq!(v1, v2, "a re-processed event must get its original verdict");
}

#[test]
fn bad_arguments_and_missing_files_are_explained() {
    let o = haechi(&["replay", "no/such/file.jsonl", "--out", "/tmp/x.jsonl"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no/such/file.jsonl"), "{err}");
    let o = haechi(&["replay"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn workers_and_resident_history_give_the_same_verdicts_and_dead_letters_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    // The valid split with bad lines spread through it, so that chunks of
    // the parallel analysis hold both kinds.
    let mut input = Vec::new();
    let bad = bad_lines();
    let text = std::fs::read(root().join("fixtures/valid.jsonl")).unwrap();
    for (i, line) in text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        input.extend_from_slice(line);
        input.push(b'\n');
        if i % 997 == 0 {
            let (raw, _) = &bad[(i / 997) % bad.len()];
            input.extend_from_slice(raw);
            input.push(b'\n');
        }
    }
    let path = dir.path().join("mixed.jsonl");
    std::fs::write(&path, &input).unwrap();
    let run = |input: &Path, name: &str, extra: &[&str]| {
        let out = dir.path().join(format!("v{name}.jsonl"));
        let mut args = vec![
            "replay",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        let o = haechi(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let dl = haechi_stream::replay::ReplayConfig::default_dead_letter(&out);
        (std::fs::read(&out).unwrap(), std::fs::read(dl).unwrap())
    };
    let (v1, d1) = run(&path, "1", &["--workers", "1"]);
    let (v2, d2) = run(&path, "2", &["--workers", "2"]);
    let (v3, d3) = run(&path, "3", &["--workers", "3"]);
    assert_eq!(v1.iter().filter(|&&b| b == b'\n').count(), 12_000);
    assert!(d1.iter().filter(|&&b| b == b'\n').count() >= 12);
    assert!(
        v1 == v2 && v1 == v3,
        "verdicts differ between 1, 2 and 3 workers"
    );
    assert!(
        d1 == d2 && d1 == d3,
        "dead letters differ between 1, 2 and 3 workers"
    );
    // The history's records resident in memory: the same bytes, also when
    // they are loaded from a store the first half was recorded into
    // (small flushes, so the log and sled both hold some of it).
    let (vr, dr) = run(&path, "r", &["--resident-history", "--flush-every", "500"]);
    assert!(v1 == vr, "verdicts differ with --resident-history");
    assert!(d1 == dr, "dead letters differ with --resident-history");
    let data = dir.path().join("store");
    let lines: Vec<&[u8]> = input.split_inclusive(|&b| b == b'\n').collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    let mut halves = Vec::new();
    for (i, (part, extra)) in [(first, &[][..]), (second, &["--resident-history"][..])]
        .into_iter()
        .enumerate()
    {
        let file = dir.path().join(format!("half{i}.jsonl"));
        std::fs::write(&file, part.concat()).unwrap();
        let mut args = vec!["--data-dir", data.to_str().unwrap(), "--flush-every", "500"];
        args.extend_from_slice(extra);
        halves.extend(run(&file, &format!("half{i}"), &args).0);
    }
    assert!(
        v1 == halves,
        "verdicts differ when the second half loads the first half's history as resident"
    );
}

#[test]
fn store_stats_count_what_a_replay_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let data = data.to_str().unwrap();
    let out = dir.path().join("v.jsonl");
    let o = haechi(&[
        "replay",
        "fixtures/handpicked.jsonl",
        "--out",
        out.to_str().unwrap(),
        "--data-dir",
        data,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events = read_jsonl(&root().join("fixtures/handpicked.jsonl"));
    let distinct = |field: &str| {
        events
            .iter()
            .map(|e| e[field].as_str().unwrap().to_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64
    };
    let flagged = read_jsonl(&out)
        .iter()
        .filter(|v| v["action"] != "allow")
        .map(|v| v["listing_id"].as_str().unwrap().to_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    let stats = || {
        let o = haechi(&["store", "stats", "--data-dir", data, "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    let s = stats();
    let records = |prefix: &str| {
        s["keyspaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["prefix"] == prefix)
            .map_or(0, |k| k["records"].as_u64().unwrap())
    };
    assert_eq!(records("s"), distinct("seller_id"), "{s}");
    assert_eq!(records("l"), distinct("listing_id"), "{s}");
    assert_eq!(
        records("c"),
        flagged,
        "one review case per flagged listing: {s}"
    );
    assert_eq!(s["format"], haechi_store::STORE_FORMAT);
    assert!(s["size_on_disk"].as_u64().unwrap() > 0);
    assert!(s["last_event"].as_str().unwrap().starts_with("20"), "{s}");
    // Reading changes nothing; the table says the same for people.
    assert_eq!(stats(), s);
    let o = haechi(&["store", "stats", "--data-dir", data]);
    let table = String::from_utf8_lossy(&o.stdout);
    let sellers = table
        .lines()
        .find(|l| l.starts_with("sellers (s)"))
        .unwrap();
    assert!(
        sellers
            .split_whitespace()
            .any(|w| w == records("s").to_string()),
        "{table}"
    );
    let o = haechi(&["store", "stats", "--data-dir", "no/such/store"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no store at no/such/store"));
}
