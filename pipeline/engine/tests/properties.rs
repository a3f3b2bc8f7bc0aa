//! Properties that must hold for ANY text: normalization and the whole
//! engine never panic, and every offset lands inside the original.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use haechi_engine::normalize::{normalize, View};
use haechi_engine::rules::Source;
use haechi_engine::{Engine, RuleSources, SellerSnapshot};
use proptest::prelude::*;
use std::sync::LazyLock;

/// Characters from every range normalization treats specially.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        proptest::char::range(' ', '~'),
        proptest::char::range('가', '힣'),
        proptest::char::range('\u{3131}', '\u{318E}'),
        proptest::char::range('\u{1100}', '\u{11FF}'),
        proptest::char::range('\u{FF01}', '\u{FF5E}'),
        proptest::char::range('\u{2460}', '\u{24FF}'),
        proptest::char::range('\u{2776}', '\u{2793}'),
        proptest::char::range('\u{200B}', '\u{206F}'),
        proptest::char::range('\u{0300}', '\u{036F}'),
        proptest::char::range('\u{0400}', '\u{04FF}'),
        proptest::char::range('\u{FE00}', '\u{FE0F}'),
        Just('\u{20E3}'),
        Just('。'),
        Just('ー'),
        Just('♡'),
        Just('😊'),
        any::<char>(),
    ]
}

fn tricky_string() -> impl Strategy<Value = String> {
    proptest::collection::vec(tricky_char(), 0..200).prop_map(|v| v.into_iter().collect())
}

fn check_view(v: &View, original_len: u32) {
    let text = v.as_str();
    for (b, _) in text.char_indices() {
        let end = b + text[b..].chars().next().unwrap().len_utf8();
        let (s, e) = v.original_span(b, end).expect("every character maps back");
        assert!(
            s < e && e <= original_len,
            "{s}..{e} outside 0..{original_len}"
        );
    }
    if !text.is_empty() {
        let (s, e) = v.original_span(0, text.len()).unwrap();
        assert!(s < e && e <= original_len);
    }
}

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
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
    Engine::from_sources(&sources).unwrap()
});

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn normalization_never_panics_and_offsets_stay_inside(s in tricky_string()) {
        let n = normalize(&s);
        let len = s.chars().count() as u32;
        check_view(&n.folded, len);
        check_view(&n.compact, len);
    }

    #[test]
    fn the_engine_never_panics_and_spans_stay_inside(title in tricky_string(), body in tricky_string(), price in 0u64..10_000_000) {
        let listing = haechi_engine::Listing {
            event_id: "p".into(),
            listing_id: "p".into(),
            seller_id: "p".into(),
            event: haechi_engine::EventKind::Created,
            title: title.clone(),
            body: body.clone(),
            price,
            category: None,
            region: None,
            created_at: chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
            seller_joined_at: None,
            image_count: None,
            label: None,
        };
        let v = ENGINE.evaluate(&listing, &SellerSnapshot::default());
        prop_assert!((0.0..=1.0).contains(&v.score));
        for r in &v.reasons {
            for sp in &r.spans {
                let len = match sp.field {
                    haechi_engine::TextField::Title => title.chars().count(),
                    haechi_engine::TextField::Body => body.chars().count(),
                } as u32;
                prop_assert!(sp.start < sp.end && sp.end <= len);
            }
        }
    }
}
