//! Training end to end on a slice of the committed fixtures: deterministic
//! for a seed, the saved model reloads to the same scores, and features are
//! the same whether computed by the training path or the serving path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use haechi_engine::features::text_features;
use haechi_engine::model::{sigmoid, Model};
use haechi_engine::normalize::normalize;
use haechi_engine::{decode_listing, Limits};
use haechi_store::Store;
use haechi_stream::load::load_engine;
use haechi_train::learn::Settings;
use haechi_train::{dataset, train, TrainOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn slice(file: &str, skip: usize, n: usize, out: &Path) {
    let text = std::fs::read_to_string(root().join("fixtures").join(file)).unwrap();
    let mut f = std::fs::File::create(out).unwrap();
    for l in text.lines().skip(skip).take(n) {
        writeln!(f, "{l}").unwrap();
    }
}

fn small() -> Settings {
    Settings {
        max_features: 800,
        lr_alphas: vec![0.01],
        nb_alphas: vec![0.01],
        max_iterations: 60,
        ..Settings::default()
    }
}

#[test]
fn training_is_deterministic_and_the_model_serves_what_it_learned() {
    let dir = tempfile::tempdir().unwrap();
    let (data, valid) = (
        dir.path().join("train.jsonl"),
        dir.path().join("valid.jsonl"),
    );
    slice("train.jsonl", 0, 6_000, &data);
    slice("valid.jsonl", 0, 3_000, &valid);
    let engine = load_engine(&root().join("rules"), None).unwrap();
    let run = |out: &str| {
        let opts = TrainOptions {
            data: data.clone(),
            valid: Some(valid.clone()),
            out: dir.path().join(out),
            name: "t".into(),
            settings: small(),
            progress: false,
        };
        let m = train(&engine, &opts).unwrap();
        (
            m,
            std::fs::read_to_string(dir.path().join(out).join("model.json")).unwrap(),
        )
    };
    let (m1, a) = run("a");
    let (_, b) = run("b");
    assert_eq!(a, b, "same data and seed must give the same model");
    for f in ["manifest.json", "pr_curve.svg", "score_histogram.svg"] {
        assert!(dir.path().join("a").join(f).is_file(), "{f} missing");
    }
    // The model learned something real on held-out data.
    let chosen = &m1.candidates[&m1.chosen];
    assert!(chosen.pr_auc > 0.5 && chosen.roc_auc > 0.9, "{chosen:?}");

    // Reloaded, it scores every validation example as training measured it.
    let model = Model::from_json(&a).unwrap();
    let with_features = engine.clone().with_features();
    let ds = dataset::load(&with_features, &valid, false).unwrap();
    let probs: Vec<f64> = ds
        .examples
        .iter()
        .map(|e| sigmoid(model.logit(&e.text, &e.dense)))
        .collect();
    let labels: Vec<bool> = ds.examples.iter().map(|e| e.fraud).collect();
    let again = haechi_train::metrics::metrics(&probs, &labels);
    assert!(
        (again.pr_auc - chosen.pr_auc).abs() < 1e-6,
        "{} vs {}",
        again.pr_auc,
        chosen.pr_auc
    );

    // The serving path (engine with the model, real store, event by event)
    // computes the very features the training path did.
    let serving = engine.clone().with_model(Some(std::sync::Arc::new(model)));
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let text = std::fs::read_to_string(&valid).unwrap();
    let mut examples = ds.examples.iter();
    for line in text.lines() {
        let l = decode_listing(line.as_bytes(), &Limits::default()).unwrap();
        let a = serving.analyze(&l);
        let snap = store.snapshot(&l, &a).unwrap();
        let (t, d) = serving.model_input(&l, &a, &snap);
        let v = serving.decide(&l, &a, &snap);
        store.record(&l, &a, &v).unwrap();
        if l.event == haechi_engine::EventKind::Deleted {
            continue;
        }
        let e = examples.next().unwrap();
        assert_eq!(
            (&t, &d),
            (&e.text, &e.dense),
            "features differ for {}",
            l.event_id
        );
        assert!(v
            .reasons
            .iter()
            .any(|r| r.source == haechi_engine::ReasonSource::Model));
    }
}

#[test]
fn feature_extraction_is_one_function_on_tricky_text() {
    let engine = load_engine(&root().join("rules"), None)
        .unwrap()
        .with_features();
    for (title, body) in [
        ("ㅋㅏㅌㅗㄱ 주세요", "공일공-일이삼사-오육칠팔 ⓪①⓪"),
        (
            "카\u{200B}톡 ＫＡＫＡＯ",
            "Теlеgrаm @deal 안.전.결.제 safe-pay (dot) com",
        ),
        ("", ""),
        ("😊😊😊", "\u{202E}abc\u{FEFF} 1:1 제작 ㄹㅍ"),
    ] {
        let line = serde_json::json!({"event_id":"x","listing_id":"x","seller_id":"x","title":title,"body":body,"price":1000,"created_at":"2026-11-01T00:00:00Z"});
        let l = decode_listing(line.to_string().as_bytes(), &Limits::default()).unwrap();
        let a = engine.analyze(&l);
        let rs = engine.rule_stage(&l);
        let direct = text_features(
            &rs.title,
            &rs.body,
            &rs.hits,
            &rs.facts,
            engine.rules(),
            &mut (),
        );
        let mut names = Vec::new();
        let named = text_features(
            &normalize(title),
            &normalize(body),
            &rs.hits,
            &rs.facts,
            engine.rules(),
            &mut names,
        );
        assert_eq!(a.text_features, direct, "{title} / {body}");
        assert_eq!(direct, named, "naming features must not change them");
        assert!(names.len() >= direct.len());
    }
}
