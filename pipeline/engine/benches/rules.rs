//! The rule stage (normalize + keyword automaton + RegexSet + extractors +
//! lists + composites) on realistic listings: the committed test split,
//! under the real rule packs plus a generated pack that brings the total to
//! at least 2,000 keywords and 100 regexes.
//!
//! `cargo bench -p haechi-engine --bench rules`

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The allocator the `haechi` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use haechi_engine::rules::Source;
use haechi_engine::{decode_listing, Engine, Limits, Listing, RuleSources};
use std::path::Path;

fn read_dir(dir: &Path, ext: &str, out: &mut Vec<Source>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            read_dir(&p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(Source {
                path: p.display().to_string(),
                text: std::fs::read_to_string(&p).unwrap(),
            });
        }
    }
}

/// A pack of plausible extra keywords (syllable pairs and triples, as a large
/// prohibited-items or brand list would be) and regexes, so that the
/// automaton and the set are production-sized.
fn big_pack(keywords: usize, regexes: usize) -> Source {
    let syll: Vec<char> = "가나다라마바사아자차카타파하거너더러머버서어저처커터퍼허고노도로모보소오조초코토포호구누두루무부수우주추쿠투푸후".chars().collect();
    let mut text = String::from("[pack]\nid = \"bench.extra\"\n");
    let per_rule = 50;
    for r in 0..keywords.div_ceil(per_rule) {
        text.push_str(&format!(
            "\n[[rule]]\nid = \"bench.kw{r}\"\nkind = \"prohibited\"\nweight = 1.0\nkeywords = ["
        ));
        for k in 0..per_rule {
            let i = r * per_rule + k;
            let w: String = [
                syll[i % syll.len()],
                syll[(i / syll.len() + 7) % syll.len()],
                syll[(i * 7 + 3) % syll.len()],
                '품',
            ]
            .iter()
            .collect();
            text.push_str(&format!("\"{w}\", "));
        }
        text.push_str("]\n");
    }
    for r in 0..regexes {
        text.push_str(&format!(
            "\n[[rule]]\nid = \"bench.re{r}\"\nkind = \"prohibited\"\nweight = 1.0\nregex = ['\\bcode{r}[a-z]{{2,4}}\\d{{{}}}\\b']\n",
            r % 5 + 2
        ));
    }
    Source {
        path: "bench/extra.toml".into(),
        text,
    }
}

fn load() -> (Engine, Vec<Listing>, Vec<String>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut packs = Vec::new();
    read_dir(&root.join("rules/ko"), "toml", &mut packs);
    read_dir(&root.join("rules/en"), "toml", &mut packs);
    let mut lists = Vec::new();
    read_dir(&root.join("rules/lists"), "txt", &mut lists);
    packs.push(big_pack(2_000, 100));
    let sources = RuleSources {
        root: String::new(),
        packs,
        lists,
        policy: None,
    };
    let engine = Engine::from_sources(&sources).unwrap();
    let text = std::fs::read_to_string(root.join("fixtures/test.jsonl")).unwrap();
    let lines: Vec<String> = text.lines().take(5_000).map(str::to_owned).collect();
    let listings = lines
        .iter()
        .map(|l| decode_listing(l.as_bytes(), &Limits::default()).unwrap())
        .collect();
    (engine, listings, lines)
}

fn bench(c: &mut Criterion) {
    let (engine, listings, lines) = load();
    eprintln!(
        "rule set: {} rules, {} keywords, {} regexes; {} listings",
        engine.rules().rules().len(),
        engine.rules().keyword_count(),
        engine.rules().regex_count(),
        listings.len()
    );
    let mut g = c.benchmark_group("rule_stage");
    g.throughput(Throughput::Elements(listings.len() as u64));
    g.sample_size(10);
    g.bench_function("rule_stage_5000_listings", |b| {
        b.iter(|| {
            let mut hits = 0usize;
            for l in &listings {
                hits += engine.rule_stage(l).hits.len();
            }
            hits
        })
    });
    g.bench_function("analyze_5000_listings", |b| {
        b.iter(|| {
            let mut hits = 0usize;
            for l in &listings {
                hits += engine.analyze(l).hits.len();
            }
            hits
        })
    });
    // Decoding and validating the events' JSON (the first stage).
    g.bench_function("decode_5000_listings", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for l in &lines {
                n += decode_listing(l.as_bytes(), &Limits::default()).map_or(0, |l| l.body.len());
            }
            n
        })
    });
    g.bench_function("normalize_5000_listings", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for l in &listings {
                n += haechi_engine::normalize::normalize(&l.title)
                    .compact
                    .char_len();
                n += haechi_engine::normalize::normalize(&l.body)
                    .compact
                    .char_len();
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
