//! Backtest: one labeled file under two rule sets, compared verdict by
//! verdict. How a rule change is reviewed before it ships.
//!
//! Each rule set runs the whole pipeline with its own fresh store, so history
//! signals are part of the comparison. The file is streamed once; each event
//! is decoded once and judged by both.

use crate::input::JsonlReader;
use crate::process::Processor;
use haechi_engine::eval::{EvalReport, Evaluation};
use haechi_engine::{decode_listing, Action, Limits, Verdict};
use haechi_store::StoreError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("cannot read {path}: {source}")]
    Input {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An event whose verdict changed.
#[derive(Debug, Clone, Serialize)]
pub struct Flip {
    pub line: u64,
    pub event_id: String,
    pub title: String,
    /// `fraud/KIND` or `legit/KIND`, when labeled.
    pub label: Option<String>,
    pub old: Action,
    pub new: Action,
    pub old_score: f64,
    pub new_score: f64,
    /// Reason ids only in the new verdict (+) or only in the old (-).
    pub reasons_added: Vec<String>,
    pub reasons_removed: Vec<String>,
}

/// The comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Backtest {
    pub events: u64,
    pub invalid: u64,
    pub old_version: String,
    pub new_version: String,
    /// Count of each `old->new` action change.
    pub transitions: BTreeMap<String, u64>,
    pub flipped: u64,
    pub newly_flagged: u64,
    pub newly_unflagged: u64,
    pub old_eval: Option<EvalReport>,
    pub new_eval: Option<EvalReport>,
    /// The first `limit` listings newly flagged and newly unflagged.
    pub newly_flagged_examples: Vec<Flip>,
    pub newly_unflagged_examples: Vec<Flip>,
}

fn reason_ids(v: &Verdict) -> Vec<String> {
    v.reasons.iter().map(|r| r.id.clone()).collect()
}

/// Runs `file` through `old` and `new`.
pub fn backtest(
    old: &Processor,
    new: &Processor,
    file: &Path,
    limit: usize,
    progress: bool,
) -> Result<Backtest, BacktestError> {
    let err = |source| BacktestError::Input {
        path: file.display().to_string(),
        source,
    };
    let mut input = JsonlReader::open(file, progress, "backtest").map_err(err)?;
    let limits = Limits::default();
    let (mut old_eval, mut new_eval) = (Evaluation::default(), Evaluation::default());
    let mut b = Backtest {
        events: 0,
        invalid: 0,
        old_version: old.engine.versions().rules.clone(),
        new_version: new.engine.versions().rules.clone(),
        transitions: BTreeMap::new(),
        flipped: 0,
        newly_flagged: 0,
        newly_unflagged: 0,
        old_eval: None,
        new_eval: None,
        newly_flagged_examples: Vec::new(),
        newly_unflagged_examples: Vec::new(),
    };
    while let Some((line, raw)) = input.next_line().map_err(err)? {
        let Ok(listing) = decode_listing(raw, &limits) else {
            b.invalid += 1;
            continue;
        };
        b.events += 1;
        let o = old.process(&listing)?.verdict;
        let n = new.process(&listing)?.verdict;
        if let Some(label) = &listing.label {
            old_eval.add(label, o.action);
            new_eval.add(label, n.action);
        }
        if o.action == n.action {
            continue;
        }
        b.flipped += 1;
        *b.transitions
            .entry(format!("{}->{}", o.action, n.action))
            .or_default() += 1;
        let (ro, rn) = (reason_ids(&o), reason_ids(&n));
        let flip = Flip {
            line,
            event_id: listing.event_id.clone(),
            title: listing.title.chars().take(60).collect(),
            label: listing
                .label
                .as_ref()
                .map(|l| format!("{}/{}", if l.fraud { "fraud" } else { "legit" }, l.kind)),
            old: o.action,
            new: n.action,
            old_score: o.score,
            new_score: n.score,
            reasons_added: rn.iter().filter(|r| !ro.contains(r)).cloned().collect(),
            reasons_removed: ro.iter().filter(|r| !rn.contains(r)).cloned().collect(),
        };
        match (o.action.is_flag(), n.action.is_flag()) {
            (false, true) => {
                b.newly_flagged += 1;
                if b.newly_flagged_examples.len() < limit {
                    b.newly_flagged_examples.push(flip);
                }
            }
            (true, false) => {
                b.newly_unflagged += 1;
                if b.newly_unflagged_examples.len() < limit {
                    b.newly_unflagged_examples.push(flip);
                }
            }
            _ => {}
        }
    }
    old.store.flush()?;
    new.store.flush()?;
    if old_eval.labeled() > 0 {
        b.old_eval = Some(old_eval.report());
        b.new_eval = Some(new_eval.report());
    }
    Ok(b)
}

impl std::fmt::Display for Backtest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "backtest over {} events ({} invalid lines skipped): old rules {}  new rules {}",
            self.events, self.invalid, self.old_version, self.new_version
        )?;
        if let (Some(o), Some(n)) = (&self.old_eval, &self.new_eval) {
            writeln!(f, "  {:<22}{:>10}{:>10}{:>10}", "", "old", "new", "change")?;
            for (name, a, b) in [
                ("recall", o.recall, n.recall),
                ("precision", o.precision, n.precision),
                ("F1", o.f1, n.f1),
                ("flag rate", o.flag_rate, n.flag_rate),
            ] {
                writeln!(f, "  {name:<22}{a:>10.4}{b:>10.4}{:>+10.4}", b - a)?;
            }
            for nk in &n.kinds {
                if let Some(ok) = o.kinds.iter().find(|k| k.kind == nk.kind) {
                    if (ok.rate - nk.rate).abs() > 1e-12 {
                        writeln!(
                            f,
                            "  {:<22}{:>10.4}{:>10.4}{:>+10.4}",
                            format!("  {}", nk.kind),
                            ok.rate,
                            nk.rate,
                            nk.rate - ok.rate
                        )?;
                    }
                }
            }
        }
        writeln!(
            f,
            "  verdicts flipped: {} (newly flagged {}, newly unflagged {})",
            self.flipped, self.newly_flagged, self.newly_unflagged
        )?;
        for (t, n) in &self.transitions {
            writeln!(f, "    {t:<16}{n:>8}")?;
        }
        for (title, list) in [
            ("newly flagged", &self.newly_flagged_examples),
            ("newly unflagged", &self.newly_unflagged_examples),
        ] {
            if list.is_empty() {
                continue;
            }
            writeln!(f, "  {title}:")?;
            for x in list {
                writeln!(
                    f,
                    "    line {:<6} {:<14} {:<28} {}->{} ({:.2}->{:.2})  {}{}{}",
                    x.line,
                    x.event_id,
                    x.label.as_deref().unwrap_or("-"),
                    x.old,
                    x.new,
                    x.old_score,
                    x.new_score,
                    x.title,
                    x.reasons_added
                        .iter()
                        .map(|r| format!("  +{r}"))
                        .collect::<String>(),
                    x.reasons_removed
                        .iter()
                        .map(|r| format!("  -{r}"))
                        .collect::<String>(),
                )?;
            }
        }
        Ok(())
    }
}
