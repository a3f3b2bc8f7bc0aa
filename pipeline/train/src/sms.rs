//! The SMS Spam Collection protocol (Almeida, Gómez Hidalgo, Yamakami,
//! DocEng 2011): train on the first 30% of the messages, test on the other
//! 70%, report accuracy, spam caught (SC), blocked ham (BH) and the Matthews
//! correlation coefficient. Same feature extractor and learners as haechi's
//! listings, so the figures say something about them on real text.

use crate::dataset::Example;
use crate::learn::{self, FitError, Linear, Settings};
use haechi_engine::model::sigmoid;
use haechi_engine::{Engine, EventKind, Listing, SellerSnapshot};
use serde::Serialize;
use std::path::Path;

/// The paper's best result (linear SVM), for the table.
pub const PAPER_BEST: SmsResult = SmsResult {
    model: "paper: linear SVM",
    accuracy: 0.9764,
    spam_caught: 0.8310,
    blocked_ham: 0.0018,
    mcc: 0.893,
    true_positives: 0,
    false_positives: 0,
    true_negatives: 0,
    false_negatives: 0,
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SmsResult {
    pub model: &'static str,
    pub accuracy: f64,
    /// Share of spam caught (recall).
    pub spam_caught: f64,
    /// Share of ham blocked (false positive rate).
    pub blocked_ham: f64,
    pub mcc: f64,
    pub true_positives: u64,
    pub false_positives: u64,
    pub true_negatives: u64,
    pub false_negatives: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SmsReport {
    pub messages: usize,
    pub train: usize,
    pub test: usize,
    /// Penalties chosen by 3-fold cross-validation on the training 30%.
    pub lr_alpha: f64,
    pub nb_alpha: f64,
    pub results: Vec<SmsResult>,
    pub paper: SmsResult,
}

#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    #[error("reading {path}: {message}")]
    Csv { path: String, message: String },
    #[error(transparent)]
    Fit(#[from] FitError),
}

/// (spam?, text) in the collection's order.
pub fn read(path: &Path) -> Result<Vec<(bool, String)>, SmsError> {
    let err = |message: String| SmsError::Csv {
        path: path.display().to_string(),
        message,
    };
    let mut r = csv::Reader::from_path(path).map_err(|e| err(e.to_string()))?;
    let mut rows: Vec<(u64, bool, String)> = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| err(e.to_string()))?;
        let id: u64 = rec
            .get(0)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| err(format!("bad id in {rec:?}")))?;
        let spam = match rec.get(1) {
            Some("spam") => true,
            Some("ham") => false,
            other => return Err(err(format!("bad label {other:?}"))),
        };
        rows.push((id, spam, rec.get(2).unwrap_or("").to_owned()));
    }
    rows.sort_by_key(|r| r.0);
    Ok(rows.into_iter().map(|(_, s, t)| (s, t)).collect())
}

fn example(engine: &Engine, spam: bool, text: &str) -> Example {
    let listing = Listing {
        event_id: "sms".into(),
        listing_id: "sms".into(),
        seller_id: "sms".into(),
        event: EventKind::Created,
        title: String::new(),
        body: text.to_owned(),
        price: 0,
        category: None,
        region: None,
        created_at: chrono::DateTime::UNIX_EPOCH,
        seller_joined_at: None,
        image_count: None,
        label: None,
    };
    let snap = SellerSnapshot::default();
    let a = engine.analyze(&listing);
    let (text, dense) = engine.model_input(&listing, &a, &snap);
    Example {
        text,
        dense,
        fraud: spam,
        kind: if spam { "spam" } else { "ham" }.into(),
    }
}

fn score(model: &'static str, m: &Linear, test: &[Example]) -> SmsResult {
    let (mut tp, mut fp, mut tn, mut fneg) = (0u64, 0u64, 0u64, 0u64);
    for (e, z) in test.iter().zip(m.logits(test)) {
        match (e.fraud, sigmoid(z) >= 0.5) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (false, false) => tn += 1,
            (true, false) => fneg += 1,
        }
    }
    let (t, f, n, fnn) = (tp as f64, fp as f64, tn as f64, fneg as f64);
    let denom = ((t + f) * (t + fnn) * (n + f) * (n + fnn)).sqrt();
    SmsResult {
        model,
        accuracy: (t + n) / (t + f + n + fnn),
        spam_caught: t / (t + fnn).max(1.0),
        blocked_ham: f / (f + n).max(1.0),
        mcc: if denom > 0.0 {
            (t * n - f * fnn) / denom
        } else {
            0.0
        },
        true_positives: tp,
        false_positives: fp,
        true_negatives: tn,
        false_negatives: fneg,
    }
}

/// Mean MCC over `k` contiguous folds of `train` for a fitting function.
fn cross_validate(
    train: &[Example],
    settings: &Settings,
    k: usize,
    fit: impl Fn(
        &ndarray::Array2<f64>,
        &ndarray::Array1<bool>,
        &[u32],
        &Settings,
    ) -> Result<Linear, FitError>,
) -> Result<f64, FitError> {
    let n = train.len();
    let mut total = 0.0;
    for f in 0..k {
        let (lo, hi) = (n * f / k, n * (f + 1) / k);
        let fit_part: Vec<Example> = train[..lo].iter().chain(&train[hi..]).cloned().collect();
        let cols = learn::select(&fit_part, settings);
        let (x, y) = learn::matrix(&fit_part, &cols);
        let m = fit(&x, &y, &cols, settings)?;
        total += score("cv", &m, &train[lo..hi]).mcc;
    }
    Ok(total / k as f64)
}

/// The penalty grid searched by cross-validation.
pub const ALPHAS: [f64; 4] = [1.0, 0.1, 0.01, 0.001];

/// Runs the protocol. Penalties are chosen by cross-validation on the
/// training part only: the test 70% is touched once, at the end.
pub fn evaluate(engine: &Engine, path: &Path, settings: &Settings) -> Result<SmsReport, SmsError> {
    let engine = engine.clone().with_model(None).with_features();
    let rows = read(path)?;
    let examples: Vec<Example> = rows.iter().map(|(s, t)| example(&engine, *s, t)).collect();
    let cut = examples.len() * 3 / 10;
    let (train, test) = examples.split_at(cut);
    let mut best_lr = (f64::MIN, settings.alpha);
    let mut best_nb = (f64::MIN, settings.nb_alpha);
    for a in ALPHAS {
        let s = Settings {
            alpha: a,
            nb_alpha: a,
            ..settings.clone()
        };
        let lr = cross_validate(train, &s, 3, learn::logistic)?;
        if lr > best_lr.0 {
            best_lr = (lr, a);
        }
        let nb = cross_validate(train, &s, 3, learn::naive_bayes)?;
        if nb > best_nb.0 {
            best_nb = (nb, a);
        }
    }
    let settings = Settings {
        alpha: best_lr.1,
        nb_alpha: best_nb.1,
        ..settings.clone()
    };
    let cols = learn::select(train, &settings);
    let (x, y) = learn::matrix(train, &cols);
    let lr = learn::logistic(&x, &y, &cols, &settings)?;
    let nb = learn::naive_bayes(&x, &y, &cols, &settings)?;
    Ok(SmsReport {
        messages: examples.len(),
        train: train.len(),
        test: test.len(),
        lr_alpha: settings.alpha,
        nb_alpha: settings.nb_alpha,
        results: vec![
            score("haechi: logistic regression", &lr, test),
            score("haechi: multinomial naive Bayes", &nb, test),
        ],
        paper: PAPER_BEST,
    })
}

impl std::fmt::Display for SmsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "SMS Spam Collection v.1: {} messages; train on the first {} (30%), test on the last {} (70%)",
            self.messages, self.train, self.test
        )?;
        writeln!(
            f,
            "penalties by 3-fold cross-validation on the training part: logistic alpha {}, naive Bayes alpha {}",
            self.lr_alpha, self.nb_alpha
        )?;
        writeln!(
            f,
            "| model | accuracy | spam caught (SC) | blocked ham (BH) | MCC |"
        )?;
        writeln!(f, "|---|---:|---:|---:|---:|")?;
        for r in self.results.iter().chain(std::iter::once(&self.paper)) {
            writeln!(
                f,
                "| {} | {:.2}% | {:.2}% | {:.2}% | {:.3} |",
                r.model,
                r.accuracy * 100.0,
                r.spam_caught * 100.0,
                r.blocked_ham * 100.0,
                r.mcc
            )?;
        }
        Ok(())
    }
}
