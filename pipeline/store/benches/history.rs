//! History read+update cycles (snapshot before the decision, record after
//! it) against a store already holding 1,000,000 sellers: the measured
//! thread does every read and write; the store's applier thread puts the
//! flushed batches into sled beside it (a second core when there is one).
//! A cycle is the idempotency check, the snapshot, the decision and the
//! record; its input listing is built outside the timed routine.
//!
//! Twice: as `haechi run` and replay keep the store by default (records
//! read through sled's cache), and with `resident_history` (the history's
//! records — sellers, text bands, prices, identifiers — in memory).
//!
//! `cargo bench -p haechi-store --bench history`; also prints the store's
//! size on disk. `-- resident_history` runs only the second (`-- 'record$'`
//! only the first).

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The allocator the `haechi` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use haechi_engine::rules::Source;
use haechi_engine::{decode_listing, Analysis, Engine, Limits, Listing, RuleSources};
use haechi_store::Store;
use std::path::Path;

const SELLERS: usize = 1_000_000;

fn bench(c: &mut Criterion) {
    for resident_history in [false, true] {
        cycles(c, resident_history);
    }
}

/// The store with a million sellers, and the listings the cycles post.
struct Setup {
    engine: Engine,
    store: Store,
    pool: Vec<Listing>,
    analyses: Vec<Analysis>,
    _dir: tempfile::TempDir,
}

fn setup(resident_history: bool) -> Setup {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut sources = RuleSources::default();
    for dir in ["ko", "en"] {
        for e in std::fs::read_dir(root.join("rules").join(dir)).unwrap() {
            let p = e.unwrap().path();
            sources.packs.push(Source {
                path: p.display().to_string(),
                text: std::fs::read_to_string(&p).unwrap(),
            });
        }
    }
    let engine = Engine::from_sources(&sources).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        haechi_store::HistoryConfig {
            resident_history,
            ..Default::default()
        },
    )
    .unwrap();
    store.track_keys().unwrap();

    // A million sellers, each with one listing already recorded.
    let text = std::fs::read_to_string(root.join("fixtures/train.jsonl")).unwrap();
    let pool: Vec<_> = text
        .lines()
        .take(20_000)
        .map(|l| decode_listing(l.as_bytes(), &Limits::default()).unwrap())
        .collect();
    let analyses: Vec<_> = pool.iter().map(|l| engine.analyze(l)).collect();
    for i in 0..SELLERS {
        let mut l = pool[i % pool.len()].clone();
        l.seller_id = format!("seller-{i}");
        l.event_id = format!("pre-{i}");
        l.listing_id = format!("pre-{i}");
        let a = &analyses[i % pool.len()];
        let v = engine.decide(&l, a, &Default::default());
        store.record(&l, a, &v).unwrap();
        if i % 50_000 == 0 {
            store.flush().unwrap();
        }
    }
    store.flush().unwrap();
    eprintln!(
        "store with {SELLERS} sellers: {} MB on disk",
        store.size_on_disk().unwrap() >> 20
    );
    Setup {
        engine,
        store,
        pool,
        analyses,
        _dir: dir,
    }
}

fn cycles(c: &mut Criterion, resident_history: bool) {
    let mut g = c.benchmark_group("history");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    let name = if resident_history {
        "snapshot_and_record_resident_history"
    } else {
        "snapshot_and_record"
    };
    // Built when criterion first runs the function (a filter naming only
    // the other one skips it: each setup takes about half a minute).
    let mut state: Option<Setup> = None;
    let mut n = 0usize;
    // Where the measured thread's time goes, from the first cycle on.
    let mut started: Option<(std::time::Instant, std::time::Duration, std::time::Duration)> = None;
    let mut flushing = std::time::Duration::ZERO;
    g.bench_function(name, |b| {
        let Setup {
            engine,
            store,
            pool,
            analyses,
            ..
        } = state.get_or_insert_with(|| setup(resident_history));
        started.get_or_insert_with(|| (std::time::Instant::now(), thread_cpu(), process_cpu()));
        // The cycle's input (a pool listing under another seller and a new
        // listing id) is built outside the timed routine: it is not part of
        // a history cycle.
        let next = || {
            n += 1;
            let k = (n * 7919) % pool.len();
            let mut l = pool[k].clone();
            l.seller_id = format!("seller-{}", (n * 104_729) % SELLERS);
            // A new listing each cycle: reusing the pool's 20,000 listing
            // ids grew their records by one event per cycle (hundreds of
            // verdicts each, decoded and rewritten every time), which no
            // real listing does.
            l.event_id = format!("cycle-{n}");
            l.listing_id = format!("cycle-{n}");
            (l, k)
        };
        b.iter_batched(
            next,
            |(l, k)| {
                let a = &analyses[k];
                // As the event loops do: the idempotency check, the snapshot,
                // the record reusing their reads.
                let mut reads = store.event_reads();
                assert!(store
                    .seen_json_with(&l.listing_id, &l.event_id, &mut reads)
                    .unwrap()
                    .is_none());
                let snap = store.snapshot_with(&l, a, &mut reads).unwrap();
                let v = engine.decide(&l, a, &snap);
                store.record_with(&l, a, &v, reads).unwrap();
                if store.pending() >= 50_000 {
                    let t = std::time::Instant::now();
                    // As replay flushes: the log file written behind, by
                    // the applier (the Kafka loop's flushes wait for it).
                    store.flush_behind().unwrap();
                    flushing += t.elapsed();
                }
                l
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    if let Some((t0, cpu0, all0)) = started {
        let wall = t0.elapsed();
        let cpu = thread_cpu().saturating_sub(cpu0);
        let others = process_cpu().saturating_sub(all0).saturating_sub(cpu);
        eprintln!(
            "measured thread over {n} cycles (building their inputs included): {:.1} µs CPU per \
             cycle, on the CPU {:.0}% of {:.1} s, flushes {:.0}% of it (the rest waits for the \
             applier or for a core)",
            cpu.as_secs_f64() * 1e6 / n.max(1) as f64,
            100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
            wall.as_secs_f64(),
            100.0 * flushing.as_secs_f64() / wall.as_secs_f64(),
        );
        eprintln!(
            "the other threads (the store's applier, image merges, sled's): {:.1} µs CPU per cycle",
            others.as_secs_f64() * 1e6 / n.max(1) as f64,
        );
    }
    if let Some(Setup { store, .. }) = &state {
        store.flush().unwrap();
        eprintln!(
            "after the cycles: {} MB on disk",
            store.size_on_disk().unwrap() >> 20
        );
    }
}

/// CPU time of the calling thread (user + system), from
/// /proc/thread-self/stat (clock ticks of 10 ms: fine over seconds).
fn thread_cpu() -> std::time::Duration {
    cpu_of("/proc/thread-self/stat")
}

/// CPU time of the whole process, threads gone included.
fn process_cpu() -> std::time::Duration {
    cpu_of("/proc/self/stat")
}

fn cpu_of(path: &str) -> std::time::Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which may hold spaces), from field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 (1-based): 11 and 12 here.
    std::time::Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

criterion_group!(benches, bench);
criterion_main!(benches);
