//! The review queue under concurrent moderators: no case is ever claimed
//! twice, leases expire, decisions conflict properly and are audited.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{TimeZone, Utc};
use haechi_engine::{Action, Analysis, EventKind, Listing, Verdict, Versions};
use haechi_store::review::CaseFilter;
use haechi_store::Store;
use std::collections::HashSet;
use std::sync::Arc;

fn flagged(store: &Store, n: usize) {
    for i in 0..n {
        let l = Listing {
            event_id: format!("ev-{i:04}"),
            listing_id: format!("l-{i}"),
            seller_id: format!("s-{}", i % 17),
            event: EventKind::Created,
            title: format!("listing {i}"),
            body: "카톡 주세요".into(),
            price: 10_000 + i as u64,
            category: None,
            region: None,
            created_at: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
                + chrono::Duration::minutes(i as i64),
            seller_joined_at: None,
            image_count: None,
            label: None,
        };
        let a = Analysis {
            hits: vec![],
            facts: Default::default(),
            list_hits: vec![],
            bands: vec![],
            fingerprint: None,
            product_key: "-".into(),
            text_features: Default::default(),
            text_score: None,
        };
        let v = Verdict {
            event_id: l.event_id.clone(),
            listing_id: l.listing_id.clone(),
            seller_id: l.seller_id.clone(),
            action: if i % 3 == 0 {
                Action::Block
            } else {
                Action::Review
            },
            score: 0.5 + (i % 50) as f64 / 100.0,
            reasons: vec![],
            versions: Versions::default(),
        };
        store.record(&l, &a, &v).unwrap();
        // Recording twice never opens a second case.
        store.record(&l, &a, &v).unwrap();
    }
    store.flush().unwrap();
}

#[test]
fn concurrent_claimers_never_share_a_case() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    flagged(&store, 300);
    assert_eq!(store.cases(&CaseFilter::default(), 0).unwrap().len(), 300);
    let now = Utc::now().timestamp_millis();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                while let Some(c) = store.claim_next(&format!("mod-{t}"), 600_000, now).unwrap() {
                    mine.push(c.id);
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().unwrap());
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 300, "every case claimed");
    assert_eq!(distinct.len(), 300, "no case claimed twice");
    // Blocks come first.
    let first = store.cases(&CaseFilter::default(), now).unwrap();
    assert_eq!(first[0].action, Action::Block);
}

#[test]
fn leases_expire_and_decisions_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    flagged(&store, 3);
    let t = 1_000_000i64;
    let a = store.claim_next("kim", 1_000, t).unwrap().unwrap();
    // Within the lease, lee gets another case, not kim's.
    let b = store.claim_next("lee", 1_000, t + 500).unwrap().unwrap();
    assert_ne!(a.id, b.id);
    let c = store.claim_next("lee", 1_000, t + 500).unwrap().unwrap();
    assert!(store.claim_next("lee", 1_000, t + 500).unwrap().is_none());
    // kim walked away: after the lease, the case returns to the queue.
    let again = store.claim_next("park", 1_000, t + 1_500).unwrap().unwrap();
    assert!([a.id.as_str(), b.id.as_str(), c.id.as_str()].contains(&again.id.as_str()));

    // Deciding someone else's held case is refused; twice is refused.
    let err = store
        .decide(&again.id, "kim", "remove", "prepayment", None, t + 1_600)
        .unwrap_err();
    assert!(err.to_string().contains("claimed by park"), "{err}");
    store
        .decide(
            &again.id,
            "park",
            "remove",
            "prepayment",
            Some("account on the list".into()),
            t + 1_700,
        )
        .unwrap();
    let err = store
        .decide(&again.id, "park", "approve", "legit", None, t + 1_800)
        .unwrap_err();
    assert!(err.to_string().contains("already decided"), "{err}");
    assert!(store
        .decide("nope", "park", "approve", "legit", None, t)
        .unwrap_err()
        .to_string()
        .contains("no case"));
    assert!(store
        .decide(&b.id, "lee", "delete", "legit", None, t + 600)
        .is_err());
    assert!(store
        .decide(&b.id, "lee", "approve", "whatever", None, t + 600)
        .is_err());

    // The decision fed the history: the seller is marked.
    let s = store.seller(&again.seller_id).unwrap().unwrap();
    assert_eq!(s.confirmed_fraud, 1);

    // Everything is in the audit log, with who and what.
    let log = store.audit_log(0).unwrap();
    assert!(log.iter().any(|e| e.what == "decide"
        && e.moderator == "park"
        && e.decision.as_ref().unwrap().reason == "prepayment"));
    assert_eq!(log.iter().filter(|e| e.what == "claim").count(), 4);
    let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));

    // Stats and export see the one decision.
    let st = store.review_stats(t + 2_000).unwrap();
    assert_eq!(st.decided, 1);
    assert_eq!(st.decisions["park"]["remove"], 1);
    let mut out = Vec::new();
    assert_eq!(store.export_labels(&mut out).unwrap(), 1);
    let line: serde_json::Value =
        serde_json::from_slice(out.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["label"]["fraud"], true);
    assert_eq!(line["label"]["source"], "moderator");
    assert!(haechi_engine::decode_listing(&out[..out.len() - 1], &Default::default()).is_ok());
}

#[test]
fn every_fraud_kind_is_a_reason_code() {
    // A moderator must be able to confirm any kind the rules flag; a kind
    // added to the rules without a reason code would be undecidable.
    let codes: HashSet<&str> = haechi_store::review::REASON_CODES.iter().copied().collect();
    for kind in haechi_engine::rules::KINDS {
        if *kind != "legit_signal" {
            assert!(codes.contains(kind), "fraud kind {kind} has no reason code");
        }
    }
}
