//! `haechi rules ...`.

use crate::args::RulesCommand;
use haechi_engine::Engine;
use haechi_stream::load::read_rules;

pub fn run(cmd: RulesCommand) -> anyhow::Result<i32> {
    match cmd {
        RulesCommand::Check { dir, json } => check(&dir, json),
    }
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
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if problems.is_empty() {
        if let Some((rules, composites, keywords, regexes, lists, version)) = stats {
            println!(
                "ok: {} packs, {rules} rules + {composites} composites, {keywords} keywords, {regexes} regexes, {lists} list entries; every example passes (version {version})",
                sources.packs.len()
            );
        }
    } else {
        eprintln!("{} problem(s) in {}:", problems.len(), dir.display());
        for p in &problems {
            eprintln!("  {p}");
        }
    }
    Ok(if problems.is_empty() { 0 } else { 1 })
}
