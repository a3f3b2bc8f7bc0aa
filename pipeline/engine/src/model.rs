//! The trained classifier at inference time: a sparse linear model over the
//! features of [`crate::features`].
//!
//! Both model kinds haechi trains (logistic regression, multinomial naive
//! Bayes) are linear in the features once written as log-odds, so one
//! artifact format and one dot product serve both. The few thousand non-zero
//! weights live in a small open-addressing table (tens of KiB, cache
//! resident): inference is a few hundred probes per listing.

use crate::features::{feature_config_hash, Features, DIM};
use serde::{Deserialize, Serialize};

/// `model.json`: everything inference needs. The manifest next to it
/// (`manifest.json`) records how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    pub format: u32,
    pub name: String,
    /// `logistic_regression` or `multinomial_nb`.
    pub kind: String,
    /// [`feature_config_hash`] of the extractor it was trained with.
    pub feature_config: String,
    pub bias: f64,
    /// The decision threshold chosen on validation (probability).
    pub threshold: f64,
    /// The share of fraud in the training data: the model's own prior, so
    /// the engine can add the model's evidence (log-odds above the base
    /// rate) to the policy's prior without counting the base rate twice.
    pub base_rate: f64,
    /// Non-zero weights: (feature index, log-odds weight).
    pub weights: Vec<(u32, f32)>,
}

pub const FORMAT: u32 = 1;

/// Why a model cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("not a haechi model file: {0}")]
    Parse(String),
    #[error("model format {found} is not supported (this build reads format {FORMAT})")]
    Format { found: u32 },
    #[error(
        "model `{name}` was trained with feature configuration {model}, but this build extracts {code}: \
         retrain it with `haechi train` (features changed since)"
    )]
    FeatureMismatch {
        name: String,
        model: String,
        code: String,
    },
    #[error(
        "model `{name}` has a weight for feature {index}, outside the {DIM} features of this build"
    )]
    BadIndex { name: String, index: u32 },
}

/// A loaded model.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub kind: String,
    /// `m-NAME-HASH`: what the verdict's `versions.model` says.
    pub version: String,
    /// The first 8 bytes of the file's hash: which model computed a
    /// precomputed score (`Analysis::text_score`), without a string.
    pub id: u64,
    pub bias: f64,
    pub threshold: f64,
    pub base_rate: f64,
    table: WeightTable,
    nonzero: usize,
}

/// Feature index -> weight, open addressing with linear probing; absent
/// features weigh 0.
#[derive(Debug, Clone)]
struct WeightTable {
    keys: Vec<u32>,
    vals: Vec<f32>,
    mask: usize,
}

const EMPTY: u32 = u32::MAX;

impl WeightTable {
    fn new(weights: &[(u32, f32)]) -> WeightTable {
        let cap = (weights.len() * 2).next_power_of_two().max(16);
        let mut t = WeightTable {
            keys: vec![EMPTY; cap],
            vals: vec![0.0; cap],
            mask: cap - 1,
        };
        for &(k, v) in weights {
            let mut i = Self::slot(k) & t.mask;
            while t.keys[i] != EMPTY && t.keys[i] != k {
                i = (i + 1) & t.mask;
            }
            t.keys[i] = k;
            t.vals[i] = v;
        }
        t
    }

    #[inline]
    fn slot(k: u32) -> usize {
        (k.wrapping_mul(0x9E37_79B1) >> 8) as usize
    }

    #[inline]
    fn get(&self, k: u32) -> f32 {
        let mut i = Self::slot(k) & self.mask;
        loop {
            let key = self.keys[i];
            if key == k {
                return self.vals[i];
            }
            if key == EMPTY {
                return 0.0;
            }
            i = (i + 1) & self.mask;
        }
    }
}

impl Model {
    /// Parses and checks `model.json`.
    pub fn from_json(text: &str) -> Result<Model, ModelError> {
        let file: ModelFile =
            serde_json::from_str(text).map_err(|e| ModelError::Parse(e.to_string()))?;
        if file.format != FORMAT {
            return Err(ModelError::Format { found: file.format });
        }
        let code = feature_config_hash();
        if file.feature_config != code {
            return Err(ModelError::FeatureMismatch {
                name: file.name,
                model: file.feature_config,
                code,
            });
        }
        if let Some(&(index, _)) = file.weights.iter().find(|(i, _)| *i as usize >= DIM) {
            return Err(ModelError::BadIndex {
                name: file.name,
                index,
            });
        }
        let table = WeightTable::new(&file.weights);
        let digest = blake3::hash(text.as_bytes());
        let hash = digest.to_hex();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest.as_bytes()[..8]);
        Ok(Model {
            version: format!("m-{}-{}", file.name, &hash[..8]),
            id: u64::from_le_bytes(id),
            name: file.name,
            kind: file.kind,
            bias: file.bias,
            threshold: file.threshold,
            base_rate: file.base_rate.clamp(1e-6, 1.0 - 1e-6),
            nonzero: file.weights.len(),
            table,
        })
    }

    pub fn nonzero_weights(&self) -> usize {
        self.nonzero
    }

    /// The sum of weight × value over a sparse vector (no bias).
    #[inline]
    pub fn dot(&self, f: &Features) -> f64 {
        f.iter()
            .map(|(i, v)| f64::from(self.table.get(i) * v))
            .sum()
    }

    /// Log-odds of fraud for the text and dense halves of a listing's features.
    pub fn logit(&self, text: &Features, dense: &Features) -> f64 {
        self.with_dense(self.text_part(text), dense)
    }

    /// The half of [`Model::logit`] that depends only on the text (bias
    /// included): computed with the analysis, off the history thread.
    pub fn text_part(&self, text: &Features) -> f64 {
        self.bias + self.dot(text)
    }

    /// [`Model::logit`] from its [`Model::text_part`]: the same sums in the
    /// same order, so the same bits.
    pub fn with_dense(&self, text_part: f64, dense: &Features) -> f64 {
        text_part + self.dot(dense)
    }

    /// The `k` features contributing most (by |weight × value|, repeats of a
    /// feature summed), largest first.
    pub fn top_contributions(&self, parts: &[&Features], k: usize) -> Vec<(u32, f64)> {
        let mut each: Vec<(u32, f64)> = parts
            .iter()
            .flat_map(|f| f.iter())
            .map(|(i, v)| (i, f64::from(self.table.get(i) * v)))
            .filter(|(_, c)| *c != 0.0)
            .collect();
        each.sort_by_key(|e| e.0);
        let mut all: Vec<(u32, f64)> = Vec::with_capacity(each.len());
        for (i, c) in each {
            match all.last_mut() {
                Some(last) if last.0 == i => last.1 += c,
                _ => all.push((i, c)),
            }
        }
        all.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        all.truncate(k);
        all
    }
}

/// Log-odds of a probability.
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    (p / (1.0 - p)).ln()
}

/// The logistic function.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(config: &str) -> String {
        serde_json::to_string(&ModelFile {
            format: FORMAT,
            name: "t".into(),
            kind: "logistic_regression".into(),
            feature_config: config.into(),
            bias: -2.0,
            threshold: 0.5,
            base_rate: 0.04,
            weights: vec![(3, 1.5), (7, -0.5)],
        })
        .unwrap()
    }

    #[test]
    fn loads_and_scores() {
        let m = Model::from_json(&file(&feature_config_hash())).unwrap();
        let f = Features {
            idx: vec![3, 7, 9],
            val: vec![1.0, 2.0, 1.0],
        };
        assert!((m.logit(&f, &Features::default()) - (-2.0 + 1.5 - 1.0)).abs() < 1e-9);
        assert_eq!(m.top_contributions(&[&f], 1), vec![(3, 1.5)]);
        assert!(m.version.starts_with("m-t-"));
    }

    #[test]
    fn refuses_a_model_of_other_features() {
        let err = Model::from_json(&file("f-000000000000")).unwrap_err();
        assert!(matches!(err, ModelError::FeatureMismatch { .. }));
        assert!(err.to_string().contains("retrain it"), "{err}");
    }
}
