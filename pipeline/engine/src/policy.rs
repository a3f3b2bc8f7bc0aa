//! The policy: how evidence adds up and where the actions begin.
//!
//! Every stage contributes *log-odds* (a rule's `weight`, a listed
//! identifier, the model's opinion, history signals). The policy adds them to
//! a prior, caps each kind of rule evidence so that ten keywords of one kind
//! cannot outvote everything else, and turns the total into a score with the
//! logistic function. Actions are thresholds on that score, as in rspamd's
//! `actions.conf`. The policy is data: `rules/policy.toml`.

use crate::rules::{RuleError, RuleErrors, Source};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub score: ScoreConfig,
    pub thresholds: Thresholds,
    pub rules: RuleWeights,
    pub lists: ListWeights,
    pub model: ModelWeights,
    pub history: HistoryWeights,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreConfig {
    /// Log-odds before any evidence.
    pub prior: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Score at or above which a listing goes to review.
    pub review: f64,
    /// Score at or above which a listing is blocked (and reviewed).
    pub block: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleWeights {
    /// The most the rules of one kind can add together.
    pub per_kind_cap: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListWeights {
    /// Log-odds per identifier on a known-bad list.
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelWeights {
    /// Multiplies the model's log-odds.
    pub weight: f64,
    /// The most the model can add.
    pub cap: f64,
    /// The most the model can subtract (a negative number).
    pub floor: f64,
}

/// Weights of the seller-history signals (log-odds each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryWeights {
    /// The seller was confirmed fraudulent by a moderator before.
    pub confirmed_fraud: f64,
    /// An identifier in this listing was used by a seller confirmed fraudulent.
    pub linked_to_fraud: f64,
    /// An identifier in this listing is shared with this many other sellers
    /// (`shared_ident_min`) or more.
    pub shared_ident: f64,
    pub shared_ident_min: u32,
    /// Near-identical text posted by other sellers recently.
    pub duplicate_text: f64,
    pub duplicate_text_min: u32,
    /// Burst: listings in the last hour at or above `burst_min`.
    pub burst: f64,
    pub burst_min: u32,
    /// Account younger than `fresh_days` days that carries contact details.
    pub fresh_with_contact: f64,
    pub fresh_days: f64,
    /// Price below `too_cheap_ratio` of the usual price for the product.
    pub too_cheap: f64,
    pub too_cheap_ratio: f64,
    /// The minimum number of observations behind a usual price.
    pub price_min_samples: u32,
    /// An edit that adds contact or payment details the listing did not have.
    pub edit_adds_contact: f64,
    /// Account active again after `dormant_days` of silence.
    pub dormant_reactivated: f64,
    pub dormant_days: f64,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        ScoreConfig { prior: -4.0 }
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            review: 0.5,
            block: 0.95,
        }
    }
}

impl Default for RuleWeights {
    fn default() -> Self {
        RuleWeights { per_kind_cap: 6.0 }
    }
}

impl Default for ListWeights {
    fn default() -> Self {
        ListWeights { weight: 6.0 }
    }
}

impl Default for ModelWeights {
    fn default() -> Self {
        ModelWeights {
            weight: 1.0,
            cap: 6.0,
            floor: -3.0,
        }
    }
}

impl Default for HistoryWeights {
    fn default() -> Self {
        HistoryWeights {
            confirmed_fraud: 4.0,
            linked_to_fraud: 4.0,
            shared_ident: 2.0,
            shared_ident_min: 3,
            duplicate_text: 2.0,
            duplicate_text_min: 3,
            burst: 1.0,
            burst_min: 5,
            fresh_with_contact: 1.0,
            fresh_days: 7.0,
            too_cheap: 3.0,
            too_cheap_ratio: 0.45,
            price_min_samples: 5,
            edit_adds_contact: 3.0,
            dormant_reactivated: 0.5,
            dormant_days: 180.0,
        }
    }
}

impl Policy {
    /// Parses and checks a policy file.
    pub fn parse(src: &Source) -> Result<Policy, RuleErrors> {
        let err = |line: usize, message: String| {
            RuleErrors(vec![RuleError {
                file: src.path.clone(),
                line,
                message,
            }])
        };
        let policy: Policy = toml::from_str(&src.text).map_err(|e| {
            let line = e.span().map_or(1, |s| {
                src.text[..s.start.min(src.text.len())]
                    .matches('\n')
                    .count()
                    + 1
            });
            err(line, format!("not a valid policy: {}", e.message()))
        })?;
        let t = &policy.thresholds;
        if !(0.0 < t.review && t.review <= t.block && t.block <= 1.0) {
            return Err(err(
                1,
                format!(
                    "thresholds must satisfy 0 < review <= block <= 1 (review = {}, block = {})",
                    t.review, t.block
                ),
            ));
        }
        if policy.model.floor > 0.0 || policy.model.cap < 0.0 {
            return Err(err(1, "model: floor must be <= 0 and cap >= 0".into()));
        }
        Ok(policy)
    }

    /// The score of a total log-odds.
    pub fn score(&self, logit: f64) -> f64 {
        1.0 / (1.0 + (-logit).exp())
    }
}
