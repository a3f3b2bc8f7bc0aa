//! kill -9 in the middle of a replay into a persistent store, then resume:
//! the store is consistent (whole events only), and the resumed run ends
//! exactly where a run without a crash ends — same verdicts, same history,
//! no event counted twice, no review case duplicated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::root;

use haechi_store::Store;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn replay(input: &Path, out: &Path, data: &Path, resident: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_haechi"));
    c.current_dir(root())
        .args([
            "replay",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--data-dir",
        ])
        .arg(data)
        .arg("--no-progress")
        // Frequent flushes: a kill lands between two of them whatever the
        // machine's speed.
        .args(["--flush-every", "500"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if resident {
        // Checkpoints into the history image (and merges of its deltas)
        // every few dozen events: the kill lands among them.
        c.args(["--resident-history", "--checkpoint-keys", "2000"]);
    }
    c
}

/// The history image's files as a kill left them (before any open).
fn image_files(store: &Path) -> Vec<String> {
    std::fs::read_dir(store.join("history"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

fn ids(path: &Path, field: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()[field]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn a_killed_replay_resumes_to_exactly_the_clean_result() {
    killed_and_resumed(false);
}

/// The history's records held in memory (`--resident-history`): what a
/// kill leaves must be the same whole events, resumed the same way.
#[test]
fn a_killed_replay_with_resident_history_resumes_to_exactly_the_clean_result() {
    killed_and_resumed(true);
}

fn killed_and_resumed(resident: bool) {
    let dir = tempfile::tempdir().unwrap();
    let input = root().join("fixtures/valid.jsonl");
    let events: Vec<(String, String)> = ids(&input, "listing_id")
        .into_iter()
        .zip(ids(&input, "event_id"))
        .collect();
    let sellers: BTreeSet<String> = ids(&input, "seller_id").into_iter().collect();

    // The reference: one uninterrupted run.
    let clean_store = dir.path().join("clean");
    let clean_out = dir.path().join("clean.jsonl");
    assert!(replay(&input, &clean_out, &clean_store, resident)
        .status()
        .unwrap()
        .success());

    // Kill -9 mid-run until a kill lands after some events were made durable
    // and before all were.
    let store_dir = dir.path().join("crashed");
    let mut delay = Duration::from_millis(400);
    let mut partial = false;
    for _ in 0..12 {
        let _ = std::fs::remove_dir_all(&store_dir);
        let mut child = replay(
            &input,
            &dir.path().join("partial.jsonl"),
            &store_dir,
            resident,
        )
        .spawn()
        .unwrap();
        let start = Instant::now();
        while start.elapsed() < delay {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if status.success() {
            delay /= 2;
            continue;
        }
        let image = image_files(&store_dir);
        let store = Store::open(&store_dir).unwrap();
        // Per event of the file, in order: recorded in the store?
        let recorded: Vec<bool> = events
            .iter()
            .map(|(l, e)| store.seen(l, e).unwrap().is_some())
            .collect();
        let seen = recorded.iter().filter(|&&r| r).count();
        // Resident: the kill must come after checkpoints wrote the history
        // image (a delta, or a base merged from them), else try later.
        let checkpointed = image.iter().any(|f| {
            f.starts_with("delta-")
                || f.starts_with("base-") && f != "base-00000000000000000000.img"
        });
        // And before compaction dropped the first events' records (the file
        // spans 85 days, the retention is 30): a resumed run judges such
        // events again, with a history the clean run did not have then.
        let last = recorded.iter().rposition(|&r| r);
        let compacted = last.is_some_and(|last| !recorded[..=last].iter().all(|&r| r));
        if compacted {
            delay = delay * 2 / 3;
            continue;
        }
        if seen > 0 && seen < events.len() && (checkpointed || !resident) {
            eprintln!("killed after {seen} events; history image: {image:?}");
            partial = true;
            // Consistency: the store holds whole events, a prefix of the
            // file — a seller's total counts exactly its created events up
            // to the last one recorded (including listings compaction has
            // dropped since: their events are no longer "seen", but the
            // seller's count stays).
            let text = std::fs::read_to_string(&input).unwrap();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let last = last.unwrap_or(0);
            let mut totals = std::collections::HashMap::<String, u32>::new();
            for v in &lines[..=last] {
                if v["event"].as_str().unwrap_or("created") == "created" {
                    *totals
                        .entry(v["seller_id"].as_str().unwrap().to_owned())
                        .or_default() += 1;
                }
            }
            for (seller, n) in &totals {
                assert_eq!(
                    store.seller(seller).unwrap().unwrap().total,
                    *n,
                    "seller {seller} after the crash"
                );
            }
            break;
        }
        delay = delay * 3 / 2;
    }
    assert!(partial, "never managed to kill the replay mid-run");

    // Resume: the same file into the same store.
    let resumed_out = dir.path().join("resumed.jsonl");
    assert!(replay(&input, &resumed_out, &store_dir, resident)
        .status()
        .unwrap()
        .success());
    let (clean_verdicts, resumed_verdicts) = (
        std::fs::read_to_string(&clean_out).unwrap(),
        std::fs::read_to_string(&resumed_out).unwrap(),
    );
    let first_difference = clean_verdicts
        .lines()
        .zip(resumed_verdicts.lines())
        .position(|(a, b)| a != b);
    assert_eq!(
        (first_difference, clean_verdicts.len()),
        (None, resumed_verdicts.len()),
        "the resumed run must give every event the verdict of the clean run \
         (first different line, 0-based; lengths)"
    );
    let clean = Store::open(&clean_store).unwrap();
    let resumed = Store::open(&store_dir).unwrap();
    for s in &sellers {
        assert_eq!(
            clean.seller(s).unwrap(),
            resumed.seller(s).unwrap(),
            "seller {s}"
        );
    }
    let (a, b) = (clean.counts().unwrap(), resumed.counts().unwrap());
    for keyspace in ['s', 'l', 'c', 'q', 'i', 'p'] {
        assert_eq!(
            a.get(&keyspace),
            b.get(&keyspace),
            "records in keyspace {keyspace}"
        );
    }
}
