//! Evaluation of verdicts against fixture labels.
//!
//! A verdict *flags* a listing when its action is `review` or `block`: both
//! put it in front of a moderator. Recall is the share of fraud flagged,
//! precision the share of flags that are fraud, flag rate the share of all
//! labeled events flagged (the moderators' workload). Per kind, fraud kinds
//! report recall and legitimate kinds report how often they were flagged.
//! Two slices matter enough to name: obfuscated fraud (labels with an
//! `obfuscation` field) and hard legitimate cases (labels with `"hard": true`:
//! sellers warning about scams, cheap but genuine items, urgent sales).

use crate::contract::{Action, Label};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counts by action: allow, review, block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionCounts {
    pub allow: u64,
    pub review: u64,
    pub block: u64,
}

impl ActionCounts {
    pub fn add(&mut self, a: Action) {
        match a {
            Action::Allow => self.allow += 1,
            Action::Review => self.review += 1,
            Action::Block => self.block += 1,
        }
    }
    pub fn total(&self) -> u64 {
        self.allow + self.review + self.block
    }
    pub fn flagged(&self) -> u64 {
        self.review + self.block
    }
}

/// Accumulates (label, action) pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    fraud: ActionCounts,
    legit: ActionCounts,
    kinds: BTreeMap<(bool, String), ActionCounts>,
    obfuscated: ActionCounts,
    hard_legit: ActionCounts,
}

/// A per-kind line of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindReport {
    pub kind: String,
    pub fraud: bool,
    pub events: u64,
    pub flagged: u64,
    /// Recall for fraud kinds, flag rate for legitimate kinds.
    pub rate: f64,
}

/// The evaluation as printed by `replay` (and `--json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub labeled: u64,
    pub fraud: u64,
    pub legit: u64,
    pub true_positives: u64,
    pub false_positives: u64,
    pub false_negatives: u64,
    pub recall: f64,
    pub precision: f64,
    pub f1: f64,
    pub flag_rate: f64,
    /// `fraud` and `legit` rows, by action.
    pub confusion: BTreeMap<String, ActionCounts>,
    pub kinds: Vec<KindReport>,
    pub obfuscated_fraud_recall: Option<f64>,
    pub obfuscated_fraud: u64,
    pub hard_legit_flag_rate: Option<f64>,
    pub hard_legit: u64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Evaluation {
    pub fn add(&mut self, label: &Label, action: Action) {
        if label.fraud {
            self.fraud.add(action);
            if label
                .extra
                .get("obfuscation")
                .is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty() && s != "none"))
            {
                self.obfuscated.add(action);
            }
        } else {
            self.legit.add(action);
            if label.extra.get("hard").and_then(|v| v.as_bool()) == Some(true) {
                self.hard_legit.add(action);
            }
        }
        let kind = if label.kind.is_empty() {
            if label.fraud { "fraud" } else { "legit" }.to_owned()
        } else {
            label.kind.clone()
        };
        self.kinds
            .entry((label.fraud, kind))
            .or_default()
            .add(action);
    }

    pub fn labeled(&self) -> u64 {
        self.fraud.total() + self.legit.total()
    }

    pub fn report(&self) -> EvalReport {
        let tp = self.fraud.flagged();
        let fp = self.legit.flagged();
        let fneg = self.fraud.allow;
        let recall = ratio(tp, tp + fneg);
        let precision = ratio(tp, tp + fp);
        let f1 = if recall + precision > 0.0 {
            2.0 * recall * precision / (recall + precision)
        } else {
            0.0
        };
        let mut kinds: Vec<KindReport> = self
            .kinds
            .iter()
            .map(|((fraud, kind), c)| KindReport {
                kind: kind.clone(),
                fraud: *fraud,
                events: c.total(),
                flagged: c.flagged(),
                rate: ratio(c.flagged(), c.total()),
            })
            .collect();
        kinds.sort_by(|a, b| b.fraud.cmp(&a.fraud).then_with(|| a.kind.cmp(&b.kind)));
        EvalReport {
            labeled: self.labeled(),
            fraud: self.fraud.total(),
            legit: self.legit.total(),
            true_positives: tp,
            false_positives: fp,
            false_negatives: fneg,
            recall,
            precision,
            f1,
            flag_rate: ratio(tp + fp, self.labeled()),
            confusion: BTreeMap::from([
                ("fraud".to_owned(), self.fraud),
                ("legit".to_owned(), self.legit),
            ]),
            kinds,
            obfuscated_fraud_recall: (self.obfuscated.total() > 0)
                .then(|| ratio(self.obfuscated.flagged(), self.obfuscated.total())),
            obfuscated_fraud: self.obfuscated.total(),
            hard_legit_flag_rate: (self.hard_legit.total() > 0)
                .then(|| ratio(self.hard_legit.flagged(), self.hard_legit.total())),
            hard_legit: self.hard_legit.total(),
        }
    }
}

impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "evaluation over {} labeled events ({} fraud, {} legitimate)",
            self.labeled, self.fraud, self.legit
        )?;
        writeln!(
            f,
            "  recall {:.4}   precision {:.4}   F1 {:.4}   flag rate {:.4}",
            self.recall, self.precision, self.f1, self.flag_rate
        )?;
        if let Some(r) = self.obfuscated_fraud_recall {
            writeln!(
                f,
                "  obfuscated fraud recall {r:.4} ({} events)",
                self.obfuscated_fraud
            )?;
        }
        if let Some(r) = self.hard_legit_flag_rate {
            writeln!(
                f,
                "  hard legitimate cases flagged {r:.4} ({} events)",
                self.hard_legit
            )?;
        }
        writeln!(f, "  confusion (label x action):")?;
        writeln!(
            f,
            "    {:<8}{:>9}{:>9}{:>9}",
            "", "allow", "review", "block"
        )?;
        for (label, c) in &self.confusion {
            writeln!(
                f,
                "    {:<8}{:>9}{:>9}{:>9}",
                label, c.allow, c.review, c.block
            )?;
        }
        writeln!(f, "  by kind:")?;
        for k in &self.kinds {
            writeln!(
                f,
                "    {:<28}{:>7} events  {} {:.4}",
                k.kind,
                k.events,
                if k.fraud { "recall   " } else { "flag rate" },
                k.rate
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(fraud: bool, kind: &str) -> Label {
        Label {
            fraud,
            kind: kind.into(),
            extra: Default::default(),
        }
    }

    #[test]
    fn figures_follow_the_counts() {
        let mut e = Evaluation::default();
        e.add(&label(true, "prepayment"), Action::Block);
        e.add(&label(true, "prepayment"), Action::Allow);
        e.add(&label(true, "counterfeit"), Action::Review);
        e.add(&label(false, "legit"), Action::Review);
        e.add(&label(false, "legit"), Action::Allow);
        let r = e.report();
        assert_eq!(
            (r.true_positives, r.false_positives, r.false_negatives),
            (2, 1, 1)
        );
        assert!((r.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.flag_rate - 3.0 / 5.0).abs() < 1e-12);
        let pre = r.kinds.iter().find(|k| k.kind == "prepayment").unwrap();
        assert_eq!((pre.events, pre.flagged), (2, 1));
        assert_eq!(r.confusion["legit"].review, 1);
    }
}
