//! `haechi replay`.

use crate::args::ReplayArgs;
use anyhow::Context;
use haechi_engine::Limits;
use haechi_store::Store;
use haechi_stream::load::load_full;
use haechi_stream::process::Processor;
use haechi_stream::replay::{replay, ReplayConfig};

pub fn run(a: ReplayArgs) -> anyhow::Result<i32> {
    let engine = load_full(
        &a.engine.rules,
        a.engine.policy.as_deref(),
        a.engine.model.as_deref(),
        a.engine.no_model,
    )
    .with_context(|| format!("loading the engine from {}", a.engine.rules.display()))?;
    // The embedded store lives in a fresh temporary directory unless asked.
    let tmp;
    let data_dir = match &a.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("haechi-replay-")
                .tempdir()
                .context("creating a temporary store directory")?;
            tmp.path().to_owned()
        }
    };
    let store = Store::open_with(
        &data_dir,
        haechi_store::HistoryConfig {
            cache_mb: a.cache_mb,
            resident_history: a.resident_history,
            checkpoint_keys: usize::try_from(a.checkpoint_keys).unwrap_or(usize::MAX),
            ..Default::default()
        },
    )?;
    store.track_keys()?;
    let cfg = ReplayConfig {
        dead_letter: a
            .dead_letter
            .clone()
            .unwrap_or_else(|| ReplayConfig::default_dead_letter(&a.out)),
        input: a.input,
        out: a.out,
        limits: Limits::default(),
        progress: !a.no_progress && !a.json,
        workers: a
            .workers
            .unwrap_or_else(haechi_stream::process::default_threads),
    };
    let mut processor = Processor::new(&engine, &store);
    if let Some(n) = a.flush_every {
        processor = processor.flush_every(n);
    }
    let summary = replay(&processor, &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{summary}");
    }
    Ok(0)
}
