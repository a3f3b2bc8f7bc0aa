//! Fitting: feature selection, the dense design matrix linfa wants, logistic
//! regression and multinomial naive Bayes, both turned into the sparse
//! linear form the engine serves.

use crate::dataset::Example;
use haechi_engine::features::{BUCKETS, DENSE};
use linfa::prelude::*;
use linfa_bayes::{MultinomialNb, NaiveBayes};
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use std::collections::HashMap;

/// Training settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// How many hashed text features to keep (by chi-squared with the label).
    pub max_features: usize,
    /// Ignore text features seen in fewer examples than this.
    pub min_df: u32,
    /// L2 penalty of the logistic regression.
    pub alpha: f64,
    pub max_iterations: u64,
    /// Additive smoothing of naive Bayes.
    pub nb_alpha: f64,
    /// The penalties `train` tries for each learner (validation picks).
    pub lr_alphas: Vec<f64>,
    pub nb_alphas: Vec<f64>,
    /// Keep at most this many legitimate examples per fraudulent one
    /// (negative downsampling; the bias is corrected afterwards).
    pub max_negative_ratio: f64,
    /// Seed of the downsampling.
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_features: 3_000,
            min_df: 3,
            alpha: 0.01,
            max_iterations: 100,
            nb_alpha: 0.01,
            lr_alphas: vec![0.01, 0.001],
            nb_alphas: vec![0.001],
            max_negative_ratio: 8.0,
            seed: 7,
        }
    }
}

/// Keeps every fraudulent example and a seeded, deterministic sample of the
/// legitimate ones, at most `max_negative_ratio` per fraudulent one. Returns
/// the sample and the share of legitimate examples kept; a model fitted on
/// the sample over-states fraud odds by 1/share, so its bias must be
/// corrected by ln(share) (see [`Linear::correct_for_sampling`]).
pub fn downsample(examples: &[Example], s: &Settings) -> (Vec<Example>, f64) {
    let pos = examples.iter().filter(|e| e.fraud).count();
    let neg = examples.len() - pos;
    let keep = if neg == 0 {
        1.0
    } else {
        (s.max_negative_ratio * pos as f64 / neg as f64).min(1.0)
    };
    if keep >= 1.0 {
        return (examples.to_vec(), 1.0);
    }
    let threshold = (keep * u64::MAX as f64) as u64;
    let sample: Vec<Example> = examples
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            e.fraud
                || haechi_engine::history::fxhash64_u64(*i as u64 ^ s.seed.rotate_left(17))
                    < threshold
        })
        .map(|(_, e)| e.clone())
        .collect();
    let kept_neg = sample.iter().filter(|e| !e.fraud).count();
    (sample, kept_neg as f64 / neg as f64)
}

/// The chosen feature columns: every dense feature plus the most
/// informative text buckets. Deterministic: ties break by index.
pub fn select(examples: &[Example], s: &Settings) -> Vec<u32> {
    let n = examples.len() as f64;
    let pos = examples.iter().filter(|e| e.fraud).count() as f64;
    // (documents with the feature, of which fraud)
    let mut df: HashMap<u32, (u32, u32)> = HashMap::new();
    let mut distinct: Vec<u32> = Vec::new();
    for e in examples {
        distinct.clear();
        distinct.extend(e.text.idx.iter().copied());
        distinct.sort_unstable();
        distinct.dedup();
        for &i in &distinct {
            let c = df.entry(i).or_default();
            c.0 += 1;
            c.1 += u32::from(e.fraud);
        }
    }
    let mut scored: Vec<(f64, u32)> = df
        .into_iter()
        .filter(|(_, (d, _))| *d >= s.min_df)
        .map(|(i, (d, f))| (chi2(f64::from(f), f64::from(d), pos, n), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut cols: Vec<u32> = scored.iter().take(s.max_features).map(|x| x.1).collect();
    cols.sort_unstable();
    cols.extend((0..DENSE.len() as u32).map(|i| BUCKETS + i));
    cols
}

/// Chi-squared statistic of a binary feature against a binary label.
fn chi2(a: f64, df: f64, pos: f64, n: f64) -> f64 {
    // a = feature & fraud, b = feature & legit, c = no feature & fraud, d = neither
    let b = df - a;
    let c = pos - a;
    let d = n - pos - b;
    let num = n * (a * d - b * c).powi(2);
    let den = (a + b) * (c + d) * (a + c) * (b + d);
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

/// The dense design matrix over the chosen columns.
pub fn matrix(examples: &[Example], cols: &[u32]) -> (Array2<f64>, Array1<bool>) {
    let at: HashMap<u32, usize> = cols.iter().enumerate().map(|(j, &c)| (c, j)).collect();
    let mut x = Array2::<f64>::zeros((examples.len(), cols.len()));
    for (r, e) in examples.iter().enumerate() {
        for (i, v) in e.features() {
            if let Some(&j) = at.get(&i) {
                x[[r, j]] += f64::from(v);
            }
        }
    }
    let y = examples.iter().map(|e| e.fraud).collect();
    (x, y)
}

/// A fitted model in the engine's form: fraud log-odds = bias + Σ w·x.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    pub kind: &'static str,
    pub bias: f64,
    /// (feature index, weight), in column order.
    pub weights: Vec<(u32, f64)>,
}

impl Linear {
    /// Undoes negative downsampling: the sample's fraud odds are the
    /// population's divided by the share of legitimate examples kept.
    pub fn correct_for_sampling(mut self, kept_share: f64) -> Linear {
        if kept_share > 0.0 && kept_share < 1.0 {
            self.bias += kept_share.ln();
        }
        self
    }

    /// Scores examples exactly as the engine will (sparse dot product).
    pub fn logits(&self, examples: &[Example]) -> Vec<f64> {
        let w: HashMap<u32, f64> = self.weights.iter().copied().collect();
        examples
            .iter()
            .map(|e| {
                self.bias
                    + e.features()
                        .map(|(i, v)| w.get(&i).copied().unwrap_or(0.0) * f64::from(v))
                        .sum::<f64>()
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{model}: {message}")]
pub struct FitError {
    pub model: &'static str,
    pub message: String,
}

/// L2-regularized logistic regression (linfa-logistic, L-BFGS).
pub fn logistic(
    x: &Array2<f64>,
    y: &Array1<bool>,
    cols: &[u32],
    s: &Settings,
) -> Result<Linear, FitError> {
    let err = |e: linfa_logistic::error::Error| FitError {
        model: "logistic_regression",
        message: e.to_string(),
    };
    let ds = DatasetBase::new(x.view(), y.view());
    let fitted = LogisticRegression::default()
        .alpha(s.alpha)
        .max_iterations(s.max_iterations)
        .with_intercept(true)
        .fit(&ds)
        .map_err(err)?;
    // linfa's "positive" class is the larger one (legitimate): flip if so.
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    Ok(Linear {
        kind: "logistic_regression",
        bias: sign * fitted.intercept(),
        weights: cols
            .iter()
            .zip(fitted.params().iter())
            .map(|(&c, &w)| (c, sign * w))
            .collect(),
    })
}

/// Multinomial naive Bayes (linfa-bayes), written as log-odds: for class
/// scores log P(c) + Σ x_j log θ_cj, the fraud log-odds are linear in x.
pub fn naive_bayes(
    x: &Array2<f64>,
    y: &Array1<bool>,
    cols: &[u32],
    s: &Settings,
) -> Result<Linear, FitError> {
    let targets: Array1<usize> = y.mapv(usize::from);
    let ds = DatasetBase::new(x.view(), targets.view());
    let nb = MultinomialNb::params()
        .alpha(s.nb_alpha)
        .fit(&ds)
        .map_err(|e| FitError {
            model: "multinomial_nb",
            message: e.to_string(),
        })?;
    // Read the linear form back from the model: the joint log-likelihood of
    // the zero vector is the log prior, of unit vector e_j the log prior plus
    // log θ_cj. Done in blocks to bound memory.
    let k = cols.len();
    let zero = Array2::<f64>::zeros((1, k));
    let jll0 = nb.joint_log_likelihood(zero.view());
    let prior = |c: usize| jll0.get(&c).map_or(0.0, |a| a[0]);
    let bias = prior(1) - prior(0);
    let mut weights = Vec::with_capacity(k);
    let block = 512;
    for start in (0..k).step_by(block) {
        let end = (start + block).min(k);
        let mut eye = Array2::<f64>::zeros((end - start, k));
        for r in 0..end - start {
            eye[[r, start + r]] = 1.0;
        }
        let jll = nb.joint_log_likelihood(eye.view());
        let (Some(f), Some(l)) = (jll.get(&1usize), jll.get(&0usize)) else {
            return Err(FitError {
                model: "multinomial_nb",
                message: "training data has a single class".into(),
            });
        };
        for r in 0..end - start {
            weights.push((cols[start + r], (f[r] - prior(1)) - (l[r] - prior(0))));
        }
    }
    Ok(Linear {
        kind: "multinomial_nb",
        bias,
        weights,
    })
}
