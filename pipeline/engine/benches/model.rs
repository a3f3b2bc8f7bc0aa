//! The model stage: feature extraction (text and dense) and the sparse dot
//! product with the committed default model, on listings whose rule stage
//! already ran (it is benchmarked on its own in `rules`); and the decision
//! on the listings it flags (reasons, score, the model's explanation).
//!
//! `cargo bench -p haechi-engine --bench model`

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The allocator the `haechi` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use haechi_engine::features::{dense_features, text_features};
use haechi_engine::model::{Model, ModelFile};
use haechi_engine::rules::Source;
use haechi_engine::{decode_listing, Engine, Limits, RuleSources, SellerSnapshot};
use std::path::Path;

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut sources = RuleSources::default();
    for dir in ["ko", "en"] {
        for e in std::fs::read_dir(root.join("rules").join(dir)).unwrap() {
            let p = e.unwrap().path();
            sources.packs.push(Source {
                path: p.display().to_string(),
                text: std::fs::read_to_string(&p).unwrap(),
            });
        }
    }
    let engine = Engine::from_sources(&sources).unwrap();
    // The committed model's weights; the feature-config check is the
    // pipeline's business, the bench only needs a model of realistic size.
    let mut file: ModelFile = serde_json::from_str(
        &std::fs::read_to_string(root.join("models/default/model.json")).unwrap(),
    )
    .unwrap();
    file.feature_config = haechi_engine::features::feature_config_hash();
    let model = Model::from_json(&serde_json::to_string(&file).unwrap()).unwrap();
    let text = std::fs::read_to_string(root.join("fixtures/test.jsonl")).unwrap();
    let listings: Vec<_> = text
        .lines()
        .take(5_000)
        .map(|l| decode_listing(l.as_bytes(), &Limits::default()).unwrap())
        .collect();
    let stages: Vec<_> = listings.iter().map(|l| engine.rule_stage(l)).collect();
    let snap = SellerSnapshot::default();
    let mut g = c.benchmark_group("model_stage");
    g.throughput(Throughput::Elements(listings.len() as u64));
    g.sample_size(20);
    g.bench_function("features_and_score_5000_listings", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for (l, s) in listings.iter().zip(&stages) {
                let t = text_features(
                    &s.title,
                    &s.body,
                    &s.hits,
                    &s.facts,
                    engine.rules(),
                    &mut (),
                );
                let d = dense_features(l, &s.facts, &snap);
                sum += model.logit(&t, &d);
            }
            sum
        })
    });
    g.finish();

    // The decision on the listings the policy flags: with a model, each
    // explains its top features for the moderator.
    let engine = engine.with_model(Some(std::sync::Arc::new(model)));
    let analyses: Vec<_> = listings.iter().map(|l| engine.analyze(l)).collect();
    let flagged: Vec<usize> = (0..listings.len())
        .filter(|&i| {
            engine
                .decide(&listings[i], &analyses[i], &snap)
                .action
                .is_flag()
        })
        .collect();
    eprintln!("{} of {} listings flagged", flagged.len(), listings.len());
    let mut g = c.benchmark_group("decision");
    g.sample_size(20);
    // Every listing: the serial part of each event after its analysis.
    g.throughput(Throughput::Elements(listings.len() as u64));
    g.bench_function("decide_5000_listings", |b| {
        b.iter(|| {
            let mut reasons = 0usize;
            for (l, a) in listings.iter().zip(&analyses) {
                reasons += engine.decide(l, a, &snap).reasons.len();
            }
            reasons
        })
    });
    g.throughput(Throughput::Elements(flagged.len() as u64));
    g.bench_function("decide_flagged_listings", |b| {
        b.iter(|| {
            let mut reasons = 0usize;
            for &i in &flagged {
                reasons += engine
                    .decide(&listings[i], &analyses[i], &snap)
                    .reasons
                    .len();
            }
            reasons
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
