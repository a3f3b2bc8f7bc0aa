//! Data-driven tests: the cases live in `testdata/*.toml`, one table per
//! concern (normalization families, rule exceptions, extractors), so adding a
//! case is adding four lines of data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use haechi_engine::extract::{extract, IdentKind};
use haechi_engine::normalize::normalize;
use haechi_engine::rules::Source;
use haechi_engine::{Engine, RuleSources};
use serde::Deserialize;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

fn table<T: for<'de> Deserialize<'de>>(name: &str) -> Vec<T> {
    #[derive(Deserialize)]
    struct File<T> {
        case: Vec<T>,
    }
    let text = std::fs::read_to_string(root().join("testdata").join(name)).unwrap();
    toml::from_str::<File<T>>(&text).unwrap().case
}

#[derive(Deserialize)]
struct NormCase {
    family: String,
    input: String,
    compact: Option<String>,
    folded: Option<String>,
}

#[test]
fn normalization_families() {
    let cases: Vec<NormCase> = table("normalize.toml");
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for c in &cases {
        let n = normalize(&c.input);
        if let Some(want) = &c.compact {
            if n.compact.as_str() != want {
                failures.push(format!(
                    "{}: compact {:?} != {want:?}",
                    c.family,
                    n.compact.as_str()
                ));
            }
        }
        if let Some(want) = &c.folded {
            if n.folded.as_str() != want {
                failures.push(format!(
                    "{}: folded {:?} != {want:?}",
                    c.family,
                    n.folded.as_str()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn real_engine() -> Engine {
    let rules = root().join("../../rules");
    let mut sources = RuleSources::default();
    for dir in ["ko", "en"] {
        for e in std::fs::read_dir(rules.join(dir)).unwrap() {
            let p = e.unwrap().path();
            sources.packs.push(Source {
                path: p.display().to_string(),
                text: std::fs::read_to_string(&p).unwrap(),
            });
        }
    }
    for e in std::fs::read_dir(rules.join("lists")).unwrap() {
        let p = e.unwrap().path();
        sources.lists.push(Source {
            path: p.display().to_string(),
            text: std::fs::read_to_string(&p).unwrap(),
        });
    }
    Engine::from_sources(&sources).unwrap()
}

#[derive(Deserialize)]
struct RuleCase {
    text: String,
    #[serde(default)]
    fires: Vec<String>,
    #[serde(default)]
    silent: Vec<String>,
}

#[test]
fn rules_fire_and_exceptions_hold() {
    let engine = real_engine();
    let cases: Vec<RuleCase> = table("rules.toml");
    let mut failures = Vec::new();
    for c in &cases {
        let listing = haechi_engine::decode_listing(
            serde_json::json!({
                "event_id": "t", "listing_id": "t", "seller_id": "t", "title": "", "body": c.text,
                "price": 10000, "created_at": "2026-11-01T00:00:00Z"
            })
            .to_string()
            .as_bytes(),
            &Default::default(),
        )
        .unwrap();
        let a = engine.analyze(&listing);
        let fired: Vec<&str> = a
            .hits
            .iter()
            .filter_map(|h| engine.rules().rule(h.rule))
            .map(|r| r.id.as_str())
            .collect();
        for id in &c.fires {
            assert!(
                engine
                    .rules()
                    .rules()
                    .iter()
                    .chain(engine.rules().composites().iter().map(|c| &c.rule))
                    .any(|r| &r.id == id),
                "unknown rule {id}"
            );
            if !fired.contains(&id.as_str()) {
                failures.push(format!("{:?}: {id} should fire (fired: {fired:?})", c.text));
            }
        }
        for id in &c.silent {
            if fired.contains(&id.as_str()) {
                failures.push(format!("{:?}: {id} should stay silent", c.text));
            }
        }
        // Every span lands inside the original text and shows what matched.
        for h in &a.hits {
            for s in &h.spans {
                assert!(s.start < s.end && s.end as usize <= c.text.chars().count());
                assert!(!s.text.is_empty());
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[derive(Deserialize)]
struct ExtractCase {
    text: String,
    phone: Option<Vec<String>>,
    messenger_id: Option<Vec<String>>,
    domain: Option<Vec<String>>,
    bank_account: Option<Vec<String>>,
}

#[test]
fn extractors_canonicalize() {
    let cases: Vec<ExtractCase> = table("extract.toml");
    let mut failures = Vec::new();
    for c in &cases {
        let f = extract(&normalize(""), &normalize(&c.text));
        for (kind, want) in [
            (IdentKind::Phone, &c.phone),
            (IdentKind::MessengerId, &c.messenger_id),
            (IdentKind::Domain, &c.domain),
            (IdentKind::BankAccount, &c.bank_account),
        ] {
            let Some(want) = want else { continue };
            let mut got: Vec<String> = f.of(kind).map(|i| i.value.clone()).collect();
            got.sort();
            let mut want = want.clone();
            want.sort();
            if got != want {
                failures.push(format!(
                    "{:?}: {} {got:?} != {want:?}",
                    c.text,
                    kind.as_str()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The model's text half is scored with the analysis (off the history
/// thread); the decision adds the dense half. Same sums in the same order:
/// the same bits, and the same verdicts as scoring it all at decision time —
/// and a score from another model is not used.
#[test]
fn the_text_score_computed_with_the_analysis_changes_no_verdict() {
    use haechi_engine::model::Model;
    use std::sync::Arc;
    let model_json =
        std::fs::read_to_string(root().join("../../models/default/model.json")).unwrap();
    let model = Arc::new(Model::from_json(&model_json).unwrap());
    let engine = real_engine().with_model(Some(Arc::clone(&model)));
    let text = std::fs::read_to_string(root().join("../../fixtures/handpicked.jsonl")).unwrap();
    let mut checked = 0;
    for line in text.lines() {
        let Ok(l) = haechi_engine::decode_listing(line.as_bytes(), &Default::default()) else {
            continue;
        };
        let snap = haechi_engine::SellerSnapshot::default();
        let a = engine.analyze(&l);
        let (id, part) = a.text_score.expect("scored with the analysis");
        assert_eq!(id, model.id);
        let (text_f, dense) = engine.model_input(&l, &a, &snap);
        assert_eq!(
            model.with_dense(part, &dense).to_bits(),
            model.logit(&text_f, &dense).to_bits(),
            "{}",
            l.event_id
        );
        let late = haechi_engine::Analysis {
            text_score: None,
            ..a.clone()
        };
        let other = haechi_engine::Analysis {
            text_score: Some((model.id ^ 1, part + 5.0)),
            ..a.clone()
        };
        let want = serde_json::to_string(&engine.decide(&l, &late, &snap)).unwrap();
        assert_eq!(
            serde_json::to_string(&engine.decide(&l, &a, &snap)).unwrap(),
            want
        );
        assert_eq!(
            serde_json::to_string(&engine.decide(&l, &other, &snap)).unwrap(),
            want
        );
        checked += 1;
    }
    assert!(checked >= 200, "{checked}");
}

/// The text features of a rule stage's output (as serving computes them),
/// each bucket's name reported to `names`.
fn stage_features<N: haechi_engine::features::NameSink>(
    engine: &Engine,
    rs: &haechi_engine::engine::RuleStage,
    names: &mut N,
) -> haechi_engine::features::Features {
    haechi_engine::features::text_features(
        &rs.title,
        &rs.body,
        &rs.hits,
        &rs.facts,
        engine.rules(),
        names,
    )
}

/// Naming only the wanted buckets gives each the name the full naming pass
/// finds first for it, and names nothing else.
#[test]
fn names_of_the_wanted_buckets_equal_the_first_of_the_full_naming() {
    use haechi_engine::features::NamesOf;
    let engine = real_engine();
    let text = std::fs::read_to_string(root().join("../../fixtures/handpicked.jsonl")).unwrap();
    let mut compared = 0;
    for line in text.lines() {
        let Ok(l) = haechi_engine::decode_listing(line.as_bytes(), &Default::default()) else {
            continue;
        };
        let rs = engine.rule_stage(&l);
        let mut all: Vec<(u32, String)> = Vec::new();
        let f = stage_features(&engine, &rs, &mut all);
        // Every third bucket of the listing, and one it does not have.
        let mut wanted: Vec<u32> = f.idx.iter().copied().step_by(3).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let absent = (0..u32::MAX).find(|b| !f.idx.contains(b)).unwrap();
        wanted.push(absent);
        let mut some = NamesOf::new(&wanted);
        let g = stage_features(&engine, &rs, &mut some);
        assert_eq!(f, g, "naming must not change the features");
        for &b in &wanted {
            let first = all.iter().find(|(x, _)| *x == b).map(|(_, n)| n);
            let got = some.names.iter().find(|(x, _)| *x == b).map(|(_, n)| n);
            assert_eq!(got, first, "{}: bucket {b}", l.event_id);
            compared += 1;
        }
        assert_eq!(some.names.len(), wanted.len() - 1, "{}", l.event_id);
    }
    assert!(compared > 1_000, "{compared}");
}

/// The model's explanation (flagged listings) names features from the
/// analysis's hits and facts and the text normalized again, instead of a
/// second rule stage: the same features and the same names.
#[test]
fn the_analysis_names_the_features_as_the_rule_stage_does() {
    use haechi_engine::features::text_features;
    use haechi_engine::normalize::normalize;
    let engine = real_engine();
    let text = std::fs::read_to_string(root().join("../../fixtures/handpicked.jsonl")).unwrap();
    let (mut compared, mut with_hits) = (0, 0);
    for line in text.lines() {
        let Ok(l) = haechi_engine::decode_listing(line.as_bytes(), &Default::default()) else {
            continue;
        };
        let rs = engine.rule_stage(&l);
        let mut want: Vec<(u32, String)> = Vec::new();
        let f = stage_features(&engine, &rs, &mut want);
        let a = engine.analyze(&l);
        let (title, body) = (normalize(&l.title), normalize(&l.body));
        let mut got: Vec<(u32, String)> = Vec::new();
        let g = text_features(&title, &body, &a.hits, &a.facts, engine.rules(), &mut got);
        assert_eq!((f, want), (g, got), "{}", l.event_id);
        compared += 1;
        with_hits += usize::from(!a.hits.is_empty());
    }
    assert!(
        compared >= 200 && with_hits >= 100,
        "{compared} / {with_hits}"
    );
}
