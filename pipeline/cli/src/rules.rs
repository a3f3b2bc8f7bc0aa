//! `haechi rules ...`.

use crate::args::RulesCommand;
use anyhow::Context;
use haechi_engine::Engine;
use haechi_store::Store;
use haechi_stream::load::{load_engine, read_rules};
use haechi_stream::process::Processor;
use std::path::Path;

pub fn run(cmd: RulesCommand) -> anyhow::Result<i32> {
    match cmd {
        RulesCommand::Check { dir, json } => check(&dir, json),
        RulesCommand::Backtest {
            old,
            new,
            file,
            limit,
            json,
            no_progress,
        } => backtest(&old, &new, &file, limit, json, !no_progress),
    }
}

fn backtest(
    old: &Path,
    new: &Path,
    file: &Path,
    limit: usize,
    json: bool,
    progress: bool,
) -> anyhow::Result<i32> {
    let load = |dir: &Path| {
        load_engine(dir, None).with_context(|| format!("loading rules from {}", dir.display()))
    };
    let (old_engine, new_engine) = (load(old)?, load(new)?);
    let (old_dir, new_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (old_store, new_store) = (Store::open(old_dir.path())?, Store::open(new_dir.path())?);
    old_store.track_keys()?;
    new_store.track_keys()?;
    let b = haechi_stream::backtest::backtest(
        &Processor::new(&old_engine, &old_store),
        &Processor::new(&new_engine, &new_store),
        file,
        limit,
        progress && !json,
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&b)?);
    } else {
        print!("{b}");
    }
    Ok(0)
}

fn check(dir: &std::path::Path, json: bool) -> anyhow::Result<i32> {
    let sources = read_rules(dir, None)?;
    let mut problems: Vec<String> = Vec::new();
    let mut stats = None;
    match Engine::from_sources(&sources) {
        Err(e) => problems.extend(e.0.iter().map(ToString::to_string)),
        Ok(engine) => {
            problems.extend(
                engine
                    .rules()
                    .check_examples(engine.lists())
                    .iter()
                    .map(ToString::to_string),
            );
            stats = Some((
                engine.rules().rules().len(),
                engine.rules().composites().len(),
                engine.rules().keyword_count(),
                engine.rules().regex_count(),
                engine.lists().len(),
                engine.versions().rules.clone(),
                engine
                    .rules()
                    .regexes_without_literals()
                    .into_iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            ));
        }
    }
    if json {
        let v = serde_json::json!({
            "ok": problems.is_empty(),
            "problems": problems,
            "packs": sources.packs.len(),
            "rules": stats.as_ref().map(|s| s.0),
            "composites": stats.as_ref().map(|s| s.1),
            "keywords": stats.as_ref().map(|s| s.2),
            "regexes": stats.as_ref().map(|s| s.3),
            "list_entries": stats.as_ref().map(|s| s.4),
            "version": stats.as_ref().map(|s| s.5.clone()),
            "regexes_without_literals": stats.as_ref().map(|s| s.6.clone()),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if problems.is_empty() {
        if let Some((rules, composites, keywords, regexes, lists, version, unlit)) = stats {
            println!(
                "ok: {} packs, {rules} rules + {composites} composites, {keywords} keywords, {regexes} regexes, {lists} list entries; every example passes (version {version})",
                sources.packs.len()
            );
            if !unlit.is_empty() {
                println!(
                    "note: {} regex(es) have no literal every match starts or ends with, so every listing runs the whole regex set (slower, still correct):",
                    unlit.len()
                );
                for p in unlit {
                    println!("  {p}");
                }
            }
        }
    } else {
        eprintln!("{} problem(s) in {}:", problems.len(), dir.display());
        for p in &problems {
            eprintln!("  {p}");
        }
    }
    Ok(if problems.is_empty() { 0 } else { 1 })
}
