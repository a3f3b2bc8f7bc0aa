//! # haechi-train
//!
//! Trains haechi's classifier with linfa and evaluates it honestly.
//!
//! `train` replays labeled events through the real pipeline (rules, history
//! store, feature extraction — the code that serves), selects the most
//! informative features, fits two linfa models (logistic regression and
//! multinomial naive Bayes), keeps the one with the better area under the
//! precision-recall curve on validation data, and writes an artifact the
//! engine loads: `model.json` (sparse weights), `manifest.json` (what it was
//! trained on and how well it did), `pr_curve.svg`, `score_histogram.svg`.
//!
//! [`sms`] reproduces the protocol of the SMS Spam Collection paper on its
//! data with the same features and learners.

pub mod dataset;
pub mod learn;
pub mod metrics;
pub mod plot;
pub mod sms;

use dataset::{Dataset, DatasetError};
use haechi_engine::features::{feature_config_hash, FEATURE_CONFIG};
use haechi_engine::model::{sigmoid, Model, ModelFile, FORMAT};
use haechi_engine::Engine;
use indicatif::{ProgressBar, ProgressStyle};
use learn::{FitError, Linear, Settings};
use metrics::Metrics;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub data: PathBuf,
    /// Validation data; without it, the last 20% of the training examples.
    pub valid: Option<PathBuf>,
    pub out: PathBuf,
    pub name: String,
    pub settings: Settings,
    pub progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DatasetError),
    #[error(transparent)]
    Fit(#[from] FitError),
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the model written to {path} does not load back: {message}")]
    Reload { path: PathBuf, message: String },
    #[error("{0}")]
    Data2(String),
}

/// Where the data came from, for the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataInfo {
    pub file: String,
    pub blake3: String,
    pub bytes: u64,
    pub examples: usize,
    pub positives: usize,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub kind: String,
    pub format: u32,
    pub feature_config: String,
    pub feature_config_text: String,
    pub rules_version: String,
    pub training: DataInfo,
    pub validation: DataInfo,
    pub features_kept: usize,
    pub nonzero_weights: usize,
    pub settings: BTreeMap<String, f64>,
    pub crates: BTreeMap<String, String>,
    /// `best_f1` and, when reachable, `precision_0.90` (probabilities).
    pub thresholds: BTreeMap<String, f64>,
    /// Validation figures of every candidate; `chosen` names the kept one.
    pub candidates: BTreeMap<String, Metrics>,
    pub chosen: String,
    pub model_blake3: String,
}

fn crates() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("haechi".into(), env!("CARGO_PKG_VERSION").into()),
        ("linfa".into(), env!("HAECHI_CRATE_LINFA").into()),
        (
            "linfa-logistic".into(),
            env!("HAECHI_CRATE_LINFA_LOGISTIC").into(),
        ),
        (
            "linfa-bayes".into(),
            env!("HAECHI_CRATE_LINFA_BAYES").into(),
        ),
        ("ndarray".into(), env!("HAECHI_CRATE_NDARRAY").into()),
        ("argmin".into(), env!("HAECHI_CRATE_ARGMIN").into()),
    ])
}

fn spinner(enabled: bool) -> ProgressBar {
    if !enabled || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} train [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn info(path: &Path, d: &Dataset, examples: usize, positives: usize) -> DataInfo {
    DataInfo {
        file: path.display().to_string(),
        blake3: d.hash.clone(),
        bytes: d.bytes,
        examples,
        positives,
    }
}

fn evaluate(
    m: Linear,
    valid: &[dataset::Example],
    labels: &[bool],
    alpha: f64,
) -> (Linear, Vec<f64>, Metrics, f64) {
    let p: Vec<f64> = m.logits(valid).into_iter().map(sigmoid).collect();
    let mt = metrics::metrics(&p, labels);
    (m, p, mt, alpha)
}

fn write(path: &Path, text: &str) -> Result<(), TrainError> {
    std::fs::write(path, text).map_err(|source| TrainError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Trains, compares, keeps the better model and writes the artifact.
/// `engine` supplies rules, lists and policy for the features; its model, if
/// any, is not used.
pub fn train(engine: &Engine, opts: &TrainOptions) -> Result<Manifest, TrainError> {
    let engine = engine.clone().with_model(None).with_features();
    let bar = spinner(opts.progress);
    bar.set_message(format!(
        "replaying {} through the pipeline",
        opts.data.display()
    ));
    let data = dataset::load(&engine, &opts.data, opts.progress)?;
    let (train, valid, valid_info) = match &opts.valid {
        Some(v) => {
            bar.set_message(format!("replaying {}", v.display()));
            let vd = dataset::load(&engine, v, opts.progress)?;
            let vi = info(v, &vd, vd.examples.len(), vd.positives());
            (data.examples.clone(), vd.examples, vi)
        }
        None => {
            // The newest 20%: validation must not see the future of training.
            let cut = data.examples.len() * 4 / 5;
            let (a, b) = data.examples.split_at(cut);
            let vi = info(
                &opts.data,
                &data,
                b.len(),
                b.iter().filter(|e| e.fraud).count(),
            );
            (a.to_vec(), b.to_vec(), vi)
        }
    };
    let positives = train.iter().filter(|e| e.fraud).count();
    if positives == 0 || positives == train.len() {
        return Err(TrainError::Data2(format!(
            "{} has {positives} fraudulent of {} examples: need both classes",
            opts.data.display(),
            train.len()
        )));
    }
    let train_info = info(&opts.data, &data, train.len(), positives);

    let (sample, kept) = learn::downsample(&train, &opts.settings);
    bar.set_message(format!("selecting features over {} examples", sample.len()));
    let cols = learn::select(&sample, &opts.settings);
    let (x, y) = learn::matrix(&sample, &cols);
    drop(sample);
    // Candidates: each learner under each penalty of its grid, judged on
    // validation by the area under the precision-recall curve.
    let labels: Vec<bool> = valid.iter().map(|e| e.fraud).collect();
    let mut candidates = BTreeMap::new();
    let mut curves: Vec<(String, metrics::Curve)> = Vec::new();
    let mut scored: Vec<(Linear, Vec<f64>, Metrics, f64)> = Vec::new();
    for &alpha in &opts.settings.lr_alphas {
        bar.set_message(format!(
            "fitting logistic regression alpha={alpha} ({} x {})",
            x.nrows(),
            x.ncols()
        ));
        let s = Settings {
            alpha,
            ..opts.settings.clone()
        };
        let m = learn::logistic(&x, &y, &cols, &s)?.correct_for_sampling(kept);
        scored.push(evaluate(m, &valid, &labels, alpha));
    }
    for &alpha in &opts.settings.nb_alphas {
        bar.set_message(format!("fitting multinomial naive Bayes alpha={alpha}"));
        let s = Settings {
            nb_alpha: alpha,
            ..opts.settings.clone()
        };
        let m = learn::naive_bayes(&x, &y, &cols, &s)?.correct_for_sampling(kept);
        scored.push(evaluate(m, &valid, &labels, alpha));
    }
    drop(x);
    for (m, p, mt, alpha) in &scored {
        let name = format!("{}(alpha={alpha})", m.kind);
        candidates.insert(name.clone(), mt.clone());
        curves.push((name, metrics::pr_curve(p, &labels)));
    }
    scored.sort_by(|a, b| b.2.pr_auc.total_cmp(&a.2.pr_auc));
    let (best, best_scores, best_metrics, best_alpha) = scored.swap_remove(0);
    let chosen = format!("{}(alpha={best_alpha})", best.kind);

    std::fs::create_dir_all(&opts.out).map_err(|source| TrainError::Write {
        path: opts.out.clone(),
        source,
    })?;
    let base_rate = positives as f64 / train.len() as f64;
    let file = ModelFile {
        format: FORMAT,
        name: opts.name.clone(),
        kind: best.kind.to_owned(),
        feature_config: feature_config_hash(),
        bias: best.bias,
        threshold: best_metrics.threshold,
        base_rate,
        weights: best
            .weights
            .iter()
            .filter(|(_, w)| w.abs() > 1e-6)
            .map(|&(i, w)| (i, w as f32))
            .collect(),
    };
    let model_text = serde_json::to_string(&file).map_err(|e| TrainError::Data2(e.to_string()))?;
    let model_path = opts.out.join("model.json");
    write(&model_path, &model_text)?;
    // What was written must load and score as it was trained.
    let loaded = Model::from_json(&model_text).map_err(|e| TrainError::Reload {
        path: model_path.clone(),
        message: e.to_string(),
    })?;
    if let Some(e) = valid.first() {
        let served = loaded.logit(&e.text, &e.dense);
        let trained = best.logits(std::slice::from_ref(e))[0];
        if (served - trained).abs() > 1e-3 {
            return Err(TrainError::Reload {
                path: model_path,
                message: format!("served score {served} != trained score {trained}"),
            });
        }
    }

    plot::pr_curves(&opts.out.join("pr_curve.svg"), &curves)?;
    plot::score_histogram(
        &opts.out.join("score_histogram.svg"),
        &best_scores,
        &labels,
        best_metrics.threshold,
    )?;

    let s = &opts.settings;
    let mut thresholds = BTreeMap::from([("best_f1".to_owned(), best_metrics.threshold)]);
    if let Some(t) = best_metrics.threshold_p90 {
        thresholds.insert("precision_0.90".into(), t);
    }
    let manifest = Manifest {
        name: opts.name.clone(),
        kind: best.kind.to_owned(),
        format: FORMAT,
        feature_config: feature_config_hash(),
        feature_config_text: FEATURE_CONFIG.to_owned(),
        rules_version: engine.versions().rules.clone(),
        training: train_info,
        validation: valid_info,
        features_kept: cols.len(),
        nonzero_weights: file.weights.len(),
        settings: BTreeMap::from([
            ("max_features".into(), s.max_features as f64),
            ("min_df".into(), f64::from(s.min_df)),
            ("alpha".into(), best_alpha),
            ("max_iterations".into(), s.max_iterations as f64),
            ("max_negative_ratio".into(), s.max_negative_ratio),
            ("negatives_kept".into(), kept),
            ("seed".into(), s.seed as f64),
        ]),
        crates: crates(),
        thresholds,
        candidates,
        chosen,
        model_blake3: blake3::hash(model_text.as_bytes()).to_hex().to_string(),
    };
    let manifest_text =
        serde_json::to_string_pretty(&manifest).map_err(|e| TrainError::Data2(e.to_string()))?;
    write(&opts.out.join("manifest.json"), &manifest_text)?;
    bar.finish_and_clear();
    Ok(manifest)
}
