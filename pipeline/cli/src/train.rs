//! `haechi train` and `haechi eval`.

use crate::args::{EvalCommand, TrainArgs};
use anyhow::Context;
use haechi_stream::load::load_engine;
use haechi_train::learn::Settings;
use haechi_train::{train, TrainOptions};

pub fn run(a: TrainArgs) -> anyhow::Result<i32> {
    let engine = load_engine(&a.rules, a.policy.as_deref())
        .with_context(|| format!("loading rules from {}", a.rules.display()))?;
    let name = a.name.clone().unwrap_or_else(|| {
        a.out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    let opts = TrainOptions {
        data: a.data.clone(),
        valid: a.valid.clone(),
        out: a.out.clone(),
        name,
        settings: Settings {
            max_features: a.max_features,
            lr_alphas: a.alpha.clone(),
            nb_alphas: a.nb_alpha.clone(),
            seed: a.seed,
            ..Settings::default()
        },
        progress: !a.no_progress && !a.json,
    };
    let m = train(&engine, &opts).with_context(|| format!("training from {}", a.data.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(0);
    }
    println!(
        "trained {} on {} examples ({} fraud), validated on {} ({} fraud)",
        a.out.display(),
        m.training.examples,
        m.training.positives,
        m.validation.examples,
        m.validation.positives
    );
    println!(
        "  {:<22}{:>9}{:>9}{:>9}{:>11}{:>9}{:>11}",
        "candidate", "PR-AUC", "ROC-AUC", "F1", "precision", "recall", "threshold"
    );
    for (name, c) in &m.candidates {
        println!(
            "  {:<22}{:>9.4}{:>9.4}{:>9.4}{:>11.4}{:>9.4}{:>11.4}{}",
            name,
            c.pr_auc,
            c.roc_auc,
            c.f1,
            c.precision,
            c.recall,
            c.threshold,
            if *name == m.chosen { "   <- kept" } else { "" }
        );
    }
    println!(
        "  {} features kept, {} non-zero weights; feature config {}",
        m.features_kept, m.nonzero_weights, m.feature_config
    );
    println!(
        "  wrote model.json, manifest.json, pr_curve.svg, score_histogram.svg into {}",
        a.out.display()
    );
    Ok(0)
}

pub fn eval(cmd: EvalCommand) -> anyhow::Result<i32> {
    match cmd {
        EvalCommand::Sms {
            data,
            json,
            rules,
            max_features,
        } => {
            let engine = load_engine(&rules, None)
                .with_context(|| format!("loading rules from {}", rules.display()))?;
            let settings = Settings {
                min_df: 2,
                max_features,
                ..Settings::default()
            };
            let report = haechi_train::sms::evaluate(&engine, &data, &settings)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            Ok(0)
        }
    }
}
