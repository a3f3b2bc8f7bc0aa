//! normalize + the real rule packs + extractors + the whole decision, on any
//! text: nothing may panic and every span must land inside the original.
#![no_main]

use haechi_engine::rules::Source;
use haechi_engine::{Engine, EventKind, Listing, RuleSources, SellerSnapshot};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let mut sources = RuleSources::default();
    for dir in ["ko", "en"] {
        for e in std::fs::read_dir(rules.join(dir)).expect("rules dir") {
            let p = e.expect("entry").path();
            let text = std::fs::read_to_string(&p).expect("pack");
            sources.packs.push(Source { path: p.display().to_string(), text });
        }
    }
    Engine::from_sources(&sources).expect("rules compile")
});

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (title, body) = text.split_at(text.char_indices().nth(text.chars().count() / 3).map_or(0, |(i, _)| i));
    let listing = Listing {
        event_id: "f".into(),
        listing_id: "f".into(),
        seller_id: "f".into(),
        event: EventKind::Created,
        title: title.into(),
        body: body.into(),
        price: data.len() as u64 * 1000,
        category: None,
        region: None,
        created_at: chrono_epoch(),
        seller_joined_at: None,
        image_count: None,
        label: None,
    };
    let v = ENGINE.evaluate(&listing, &SellerSnapshot::default());
    assert!((0.0..=1.0).contains(&v.score));
    for r in &v.reasons {
        for s in &r.spans {
            let len = match s.field {
                haechi_engine::TextField::Title => title.chars().count(),
                haechi_engine::TextField::Body => body.chars().count(),
            };
            assert!(s.start < s.end && s.end as usize <= len);
        }
    }
});

fn chrono_epoch() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_790_000_000, 0).expect("valid")
}
