//! Table-driven history: event sequences in testdata/history.toml, each with
//! the snapshot the store must produce for its last event; plus idempotency.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{Duration, TimeZone, Utc};
use haechi_engine::rules::Source;
use haechi_engine::{Engine, EventKind, Listing, ReasonSource, RuleSources};
use haechi_store::Store;
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
struct Ev {
    seller: String,
    listing: Option<String>,
    event: Option<String>,
    title: String,
    body: String,
    price: u64,
    at: i64,
    category: Option<String>,
    joined: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Expect {
    known: Option<bool>,
    listings_1h: Option<u32>,
    listings_24h: Option<u32>,
    listings_7d: Option<u32>,
    listings_total: Option<u32>,
    shared_ident_max: Option<u32>,
    duplicate_text_sellers: Option<u32>,
    own_reposts_7d: Option<u32>,
    usual_price: Option<u64>,
    price_samples: Option<u32>,
    previous_had_contact: Option<bool>,
    account_age_days_min: Option<f64>,
    account_age_days_max: Option<f64>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    events: Vec<Ev>,
    expect: Expect,
}

fn engine() -> Engine {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
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
}

fn listing(i: usize, e: &Ev, first_at: i64) -> Listing {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    Listing {
        event_id: format!("e{i}"),
        listing_id: e.listing.clone().unwrap_or_else(|| format!("l{i}")),
        seller_id: e.seller.clone(),
        event: e
            .event
            .as_deref()
            .and_then(EventKind::parse)
            .unwrap_or(EventKind::Created),
        title: e.title.clone(),
        body: e.body.clone(),
        price: e.price,
        category: e.category.clone(),
        region: None,
        created_at: t0 + Duration::minutes(e.at),
        seller_joined_at: e
            .joined
            .map(|d| t0 + Duration::minutes(first_at) - Duration::days(d)),
        image_count: None,
        label: None,
    }
}

/// A plain phone listing of `seller` at minute `at`.
fn phone_ad(seller: &str, listing: Option<&str>, at: i64) -> Ev {
    Ev {
        seller: seller.into(),
        listing: listing.map(str::to_owned),
        event: None,
        title: "아이폰 14".into(),
        body: "직거래 원해요".into(),
        price: 500000,
        at,
        category: None,
        joined: None,
    }
}

#[test]
fn event_sequences_give_the_expected_snapshots() {
    #[derive(Deserialize)]
    struct File {
        case: Vec<Case>,
    }
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/history.toml"),
    )
    .unwrap();
    let cases = toml::from_str::<File>(&text).unwrap().case;
    assert!(cases.len() >= 8);
    let engine = engine();
    let mut failures = Vec::new();
    // Each case three ways: snapshot then record on a store as one-off
    // commands open it, and as the event loops do it (keys tracked, the
    // history's records resident in memory or not, the record reusing the
    // idempotency check's and snapshot's reads).
    let ways = [(false, false), (true, false), (true, true)];
    for (c, (reuse, resident_history)) in cases.iter().flat_map(|c| ways.map(|w| (c, w))) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(
            dir.path(),
            haechi_store::HistoryConfig {
                resident_history,
                ..Default::default()
            },
        )
        .unwrap();
        if reuse {
            store.track_keys().unwrap();
        }
        let first = c.events.first().map_or(0, |e| e.at);
        let n = c.events.len();
        for (i, e) in c.events.iter().enumerate() {
            let l = listing(i, e, first);
            let a = engine.analyze(&l);
            let mut reads = store.event_reads();
            let snap = if reuse {
                assert!(store
                    .seen_json_with(&l.listing_id, &l.event_id, &mut reads)
                    .unwrap()
                    .is_none());
                store.snapshot_with(&l, &a, &mut reads).unwrap()
            } else {
                store.snapshot(&l, &a).unwrap()
            };
            if i + 1 == n {
                let x = &c.expect;
                let mut check = |what: &str, ok: bool, got: String| {
                    if !ok {
                        failures.push(format!(
                            "{} (reads reused: {reuse}, resident: {resident_history}): {what} = {got}",
                            c.name
                        ));
                    }
                };
                let shared = snap
                    .shared_idents
                    .iter()
                    .map(|s| s.other_sellers)
                    .max()
                    .unwrap_or(0);
                let age = snap.account_age_days(l.created_at);
                check(
                    "known",
                    x.known.is_none_or(|v| v == snap.known),
                    format!("{}", snap.known),
                );
                check(
                    "listings_1h",
                    x.listings_1h.is_none_or(|v| v == snap.listings_1h),
                    format!("{}", snap.listings_1h),
                );
                check(
                    "listings_24h",
                    x.listings_24h.is_none_or(|v| v == snap.listings_24h),
                    format!("{}", snap.listings_24h),
                );
                check(
                    "listings_7d",
                    x.listings_7d.is_none_or(|v| v == snap.listings_7d),
                    format!("{}", snap.listings_7d),
                );
                check(
                    "listings_total",
                    x.listings_total.is_none_or(|v| v == snap.listings_total),
                    format!("{}", snap.listings_total),
                );
                check(
                    "shared_ident_max",
                    x.shared_ident_max.is_none_or(|v| v == shared),
                    format!("{shared}"),
                );
                check(
                    "duplicate_text_sellers",
                    x.duplicate_text_sellers
                        .is_none_or(|v| v == snap.duplicate_text_sellers),
                    format!("{}", snap.duplicate_text_sellers),
                );
                check(
                    "own_reposts_7d",
                    x.own_reposts_7d.is_none_or(|v| v == snap.own_reposts_7d),
                    format!("{}", snap.own_reposts_7d),
                );
                check(
                    "usual_price",
                    x.usual_price.is_none_or(|v| Some(v) == snap.usual_price),
                    format!("{:?}", snap.usual_price),
                );
                check(
                    "price_samples",
                    x.price_samples.is_none_or(|v| v == snap.price_samples),
                    format!("{}", snap.price_samples),
                );
                check(
                    "previous_had_contact",
                    x.previous_had_contact
                        .is_none_or(|v| Some(v) == snap.previous.as_ref().map(|p| p.had_contact)),
                    format!("{:?}", snap.previous),
                );
                check(
                    "account_age_days_min",
                    x.account_age_days_min
                        .is_none_or(|v| age.is_some_and(|a| a >= v)),
                    format!("{age:?}"),
                );
                check(
                    "account_age_days_max",
                    x.account_age_days_max
                        .is_none_or(|v| age.is_some_and(|a| a <= v)),
                    format!("{age:?}"),
                );
            }
            let v = engine.decide(&l, &a, &snap);
            if reuse {
                store.record_with(&l, &a, &v, reads).unwrap();
            } else {
                store.record(&l, &a, &v).unwrap();
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The record after a decision reuses what the snapshot read — unless
/// something was committed in between (here a moderator's decision on the
/// same seller), which it must not overwrite with the stale copy.
#[test]
fn a_record_does_not_reuse_reads_made_stale_by_a_commit_in_between() {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ev = |at: i64| phone_ad("s", None, at);
    let first = listing(0, &ev(0), 0);
    let a = engine.analyze(&first);
    let v = engine.decide(&first, &a, &store.snapshot(&first, &a).unwrap());
    store.record(&first, &a, &v).unwrap();

    let second = listing(1, &ev(10), 0);
    let a = engine.analyze(&second);
    let mut reads = store.event_reads();
    assert!(store
        .seen_json_with(&second.listing_id, &second.event_id, &mut reads)
        .unwrap()
        .is_none());
    let snap = store.snapshot_with(&second, &a, &mut reads).unwrap();
    assert_eq!(snap.listings_total, 1);
    // Between the snapshot and the record: a moderator confirms fraud.
    store.apply_decision(&first.listing_id, "s", true).unwrap();
    let v = engine.decide(&second, &a, &snap);
    store.record_with(&second, &a, &v, reads).unwrap();

    let s = store.seller("s").unwrap().unwrap();
    assert_eq!(s.total, 2, "the second listing is counted");
    assert_eq!(s.confirmed_fraud, 1, "the moderator's decision survives");
}

#[test]
fn recording_an_event_twice_counts_it_once() {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let e = Ev {
        seller: "s".into(),
        listing: None,
        event: None,
        title: "아이폰".into(),
        body: "카톡 abc123 주세요 010-1111-2222".into(),
        price: 500000,
        at: 0,
        category: None,
        joined: None,
    };
    let l = listing(0, &e, 0);
    for _ in 0..3 {
        let a = engine.analyze(&l);
        let snap = store.snapshot(&l, &a).unwrap();
        let v = engine.decide(&l, &a, &snap);
        store.record(&l, &a, &v).unwrap();
        store.flush().unwrap();
    }
    let s = store.seller("s").unwrap().unwrap();
    assert_eq!(s.total, 1);
    assert_eq!(s.recent.len(), 1);
    let counts = store.counts().unwrap();
    assert_eq!(counts.get(&'l'), Some(&1));
    let listing = store.listing(&l.listing_id).unwrap().unwrap();
    assert_eq!(listing.events.len(), 1, "one idempotency record");
    assert!(store.seen(&l.listing_id, "e0").unwrap().is_some());
    // Reopened, it is all still there.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.seller("s").unwrap().unwrap().total, 1);
}

#[test]
fn a_store_of_another_format_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    // Reopening our own format is fine.
    drop(Store::open(dir.path()).unwrap());
    // A store written by another layout (here: stamped as format 1).
    {
        let db = haechi_store::open_db(sled::Config::new().path(dir.path())).unwrap();
        db.insert(b"mformat", postcard::to_allocvec(&1u32).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("format 1") && err.contains("fresh --data-dir"),
        "{err}"
    );
}

/// A listing record of formats 2 to 4: they differ in their events' layout.
#[derive(serde::Serialize)]
struct OldListingRecord<E> {
    seller_id: String,
    had_contact: bool,
    action: haechi_engine::Action,
    deleted: bool,
    last_event: String,
    idents: Vec<String>,
    events: Vec<E>,
}

/// The layout of format 4's listing records (verdicts with every string
/// inline), written here independently of the store's own upgrade code.
mod format4 {
    #[derive(serde::Serialize)]
    pub struct EventRecord {
        pub event_id: String,
        pub at: i64,
        pub verdict: Option<StoredVerdict>,
    }

    #[derive(serde::Serialize)]
    pub struct StoredVerdict {
        pub seller_id: String,
        pub action: haechi_engine::Action,
        pub score: f64,
        pub reasons: Vec<Reason>,
        pub versions: haechi_engine::Versions,
    }

    /// Spans always written (the contract's JSON skips empty ones).
    #[derive(serde::Serialize)]
    pub struct Reason {
        pub source: haechi_engine::ReasonSource,
        pub id: String,
        pub detail: String,
        pub weight: f64,
        pub spans: Vec<haechi_engine::Span>,
    }

    pub type ListingRecord = super::OldListingRecord<EventRecord>;
}

/// The layout of format 3 (and 2), written here independently of the store's
/// own upgrade code.
mod format3 {
    #[derive(serde::Serialize)]
    pub struct EventRecord {
        pub event_id: String,
        pub at: i64,
        pub verdict_json: String,
    }

    #[derive(serde::Serialize)]
    pub struct SellerRecord {
        pub first_seen: i64,
        pub last_seen: i64,
        pub joined_at: Option<i64>,
        pub recent: Vec<i64>,
        pub total: u32,
        pub categories: Vec<String>,
        pub reviewed: u32,
        pub blocked: u32,
        pub confirmed_fraud: u32,
        pub cleared: u32,
    }

    pub type ListingRecord = super::OldListingRecord<EventRecord>;
}

#[test]
fn a_format_3_store_is_upgraded_at_open_and_answers_as_before() {
    an_older_store_is_upgraded_at_open_and_answers_as_before(3);
}

#[test]
fn a_format_4_store_is_upgraded_at_open_and_answers_as_before() {
    an_older_store_is_upgraded_at_open_and_answers_as_before(4);
}

fn an_older_store_is_upgraded_at_open_and_answers_as_before(format: u32) {
    use haechi_store::records::{BandRecord, ListingRecord, PriceRecord, SellerRecord};
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let text = |seller: &str, at: i64| Ev {
        seller: seller.into(),
        listing: None,
        event: None,
        title: "아이폰 15 프로 급처".into(),
        body: "선입금 주시면 바로 보내드려요 카톡 abc123 으로 연락 주세요".into(),
        price: 900_000,
        at,
        category: Some("phones".into()),
        joined: None,
    };
    let events: Vec<Listing> = [text("a", 0), text("b", 10), text("c", 20), text("d", 30)]
        .iter()
        .enumerate()
        .map(|(i, e)| listing(i, e, 0))
        .collect();
    // The reference: the current format from the start.
    let (jsons, reference) = {
        let store = Store::open(dir.path()).unwrap();
        let mut jsons = Vec::new();
        for l in &events[..3] {
            let a = engine.analyze(l);
            let v = engine.decide(l, &a, &store.snapshot(l, &a).unwrap());
            store.record(l, &a, &v).unwrap();
            jsons.push(serde_json::to_string(&v).unwrap());
        }
        let last = &events[3];
        let snap = store.snapshot(last, &engine.analyze(last)).unwrap();
        store.flush().unwrap();
        store.counts().unwrap(); // settles: everything in sled
        (jsons, snap)
    };
    assert!(reference.duplicate_text_sellers >= 2 && reference.usual_price.is_some());
    // Rewritten by hand as format 3 (verdicts as JSON text, samples as
    // varints) or 4 (verdicts with their strings inline, no dictionary).
    let json_of = |event_id: &str| {
        jsons
            .iter()
            .find(|j| j.contains(&format!("\"{event_id}\"")))
            .unwrap()
            .clone()
    };
    {
        let db = haechi_store::open_db(sled::Config::new().path(dir.path())).unwrap();
        let entries = db.scan_prefix(b"d").count();
        assert!(entries >= 4, "the verdicts' shared strings: {entries}");
        for item in db.iter() {
            let (k, v) = item.unwrap();
            if k[0] == b'd' {
                db.remove(k).unwrap();
                continue;
            }
            if format == 4 && k[0] != b'l' {
                continue;
            }
            let old = match k[0] {
                b'l' if format == 4 => {
                    let r: ListingRecord = postcard::from_bytes(&v).unwrap();
                    let events = r
                        .events
                        .iter()
                        .map(|e| {
                            let v: haechi_engine::Verdict =
                                serde_json::from_str(&json_of(&e.event_id)).unwrap();
                            format4::EventRecord {
                                event_id: e.event_id.clone(),
                                at: e.at,
                                verdict: Some(format4::StoredVerdict {
                                    seller_id: v.seller_id,
                                    action: v.action,
                                    score: v.score,
                                    reasons: v
                                        .reasons
                                        .into_iter()
                                        .map(|r| format4::Reason {
                                            source: r.source,
                                            id: r.id,
                                            detail: r.detail,
                                            weight: r.weight,
                                            spans: r.spans,
                                        })
                                        .collect(),
                                    versions: v.versions,
                                }),
                            }
                        })
                        .collect();
                    postcard::to_allocvec(&format4::ListingRecord {
                        seller_id: r.seller_id,
                        had_contact: r.had_contact,
                        action: r.action,
                        deleted: r.deleted,
                        last_event: r.last_event,
                        idents: r.idents,
                        events,
                    })
                }
                b'l' => {
                    let r: ListingRecord = postcard::from_bytes(&v).unwrap();
                    let events = r
                        .events
                        .iter()
                        .map(|e| format3::EventRecord {
                            event_id: e.event_id.clone(),
                            at: e.at,
                            verdict_json: json_of(&e.event_id),
                        })
                        .collect();
                    postcard::to_allocvec(&format3::ListingRecord {
                        seller_id: r.seller_id,
                        had_contact: r.had_contact,
                        action: r.action,
                        deleted: r.deleted,
                        last_event: r.last_event,
                        idents: r.idents,
                        events,
                    })
                }
                b's' => {
                    let r: SellerRecord = postcard::from_bytes(&v).unwrap();
                    postcard::to_allocvec(&format3::SellerRecord {
                        first_seen: r.first_seen,
                        last_seen: r.last_seen,
                        joined_at: r.joined_at,
                        recent: r.recent,
                        total: r.total,
                        categories: r.categories,
                        reviewed: r.reviewed,
                        blocked: r.blocked,
                        confirmed_fraud: r.confirmed_fraud,
                        cleared: r.cleared,
                    })
                }
                b'b' => {
                    let r: BandRecord = postcard::from_bytes(&v).unwrap();
                    postcard::to_allocvec(&r.sellers.to_vec())
                }
                b'p' => {
                    let r: PriceRecord = postcard::from_bytes(&v).unwrap();
                    postcard::to_allocvec(&r.samples.0)
                }
                _ => continue,
            };
            db.insert(k, old.unwrap()).unwrap();
        }
        db.insert(b"mformat", postcard::to_allocvec(&format).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    for (l, json) in events.iter().zip(&jsons) {
        let (_, again) = store
            .seen_json(&l.listing_id, &l.event_id)
            .unwrap()
            .unwrap();
        assert_eq!(&again, json, "the very same verdict bytes");
    }
    let last = &events[3];
    assert_eq!(
        store.snapshot(last, &engine.analyze(last)).unwrap(),
        reference
    );
    // Stamped: the next open does not upgrade again.
    drop(store);
    let db = haechi_store::open_db(sled::Config::new().path(dir.path())).unwrap();
    let format: u32 = postcard::from_bytes(&db.get(b"mformat").unwrap().unwrap()).unwrap();
    assert_eq!(format, haechi_store::STORE_FORMAT);
    assert!(db.scan_prefix(b"d").count() >= 4, "the dictionary written");
}

#[test]
fn each_events_changes_carry_the_dictionary_entries_its_verdict_needs() {
    // Two partitions' events with the same scam text: the second event's
    // verdict refers to the entries the first one wrote. An instance that
    // restores only the second partition must still answer its redelivery.
    let engine = engine();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Store::open(a_dir.path()).unwrap();
    a.enable_changelog();
    let ev = |seller: &str, at: i64| Ev {
        seller: seller.into(),
        listing: None,
        event: None,
        title: "아이폰 15 프로 급처".into(),
        body: "선입금 주시면 바로 보내드려요 카톡 abc123 으로 연락 주세요".into(),
        price: 900_000,
        at,
        category: Some("phones".into()),
        joined: None,
    };
    let mut out = Vec::new();
    for (i, e) in [ev("a", 0), ev("b", 10)].iter().enumerate() {
        let l = listing(i, e, 0);
        let an = engine.analyze(&l);
        let v = engine.decide(&l, &an, &a.snapshot(&l, &an).unwrap());
        assert!(v.reasons.iter().any(|r| r.source == ReasonSource::Rule));
        a.record(&l, &an, &v).unwrap();
        out.push((l, serde_json::to_string(&v).unwrap(), a.take_changes().own));
    }
    let (l, json, changes) = &out[1];
    let entries = changes.iter().filter(|(k, _)| k[0] == b'd').count();
    assert!(entries >= 4, "{entries} dictionary entries");
    let b = Store::open(b_dir.path()).unwrap();
    b.restore(changes, 1, 0).unwrap();
    let (_, again) = b.seen_json(&l.listing_id, &l.event_id).unwrap().unwrap();
    assert_eq!(&again, json);
    // An entry that differs from ours is refused, not taken.
    let (k, v) = changes.iter().find(|(k, _)| k[0] == b'd').unwrap();
    let mut other = v.clone().unwrap();
    other.push(b'!');
    let err = b
        .restore(&[(k.clone(), Some(other))], 1, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("dictionary entry differs"), "{err}");
    assert_eq!(
        b.seen_json(&l.listing_id, &l.event_id).unwrap().unwrap().1,
        *json
    );
}

#[test]
fn daily_compaction_drops_what_left_the_retention_and_keeps_the_rest() {
    // The history in sled, and resident (in memory and the history image,
    // where compaction finds its keys another way).
    for resident_history in [false, true] {
        compaction_keeps_the_retention(resident_history);
    }
}

fn compaction_keeps_the_retention(resident_history: bool) {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let config = haechi_store::HistoryConfig {
        compact_every_days: 1,
        resident_history,
        ..Default::default()
    };
    let store = Store::open_with(dir.path(), config.clone()).unwrap();
    store.track_keys().unwrap();
    let ev = |seller: &str, title: &str, body: &str, day: i64| Ev {
        seller: seller.into(),
        listing: None,
        event: None,
        title: title.into(),
        body: body.into(),
        price: 500_000,
        at: day * 24 * 60,
        category: None,
        joined: None,
    };
    let events = [
        ev(
            "a",
            "아이폰 14",
            "급처 010-1111-2222 문자주세요 케이스 포함",
            0,
        ),
        ev("a", "갤럭시 버즈", "한번 썼어요 박스 있음 직거래 선호", 0),
        ev(
            "b",
            "아이폰 14",
            "연락은 010-1111-2222 로 주세요 상태 좋아요",
            20,
        ),
        ev("c", "맥북 에어", "배터리 사이클 적어요 충전기 포함", 40),
    ];
    let mut bands = Vec::new();
    let mut compactions = Vec::new();
    for (i, e) in events.iter().enumerate() {
        // As the replay loop does: before each event.
        compactions.push(store.compact_if_due().unwrap());
        store.finish_compaction().unwrap();
        let l = listing(i, e, 0);
        let a = engine.analyze(&l);
        bands.push(a.bands.clone());
        let snap = store.snapshot(&l, &a).unwrap();
        let v = engine.decide(&l, &a, &snap);
        store.record(&l, &a, &v).unwrap();
    }
    // First event ever: nothing recorded yet; then days 0 and 20 once each.
    assert_eq!(compactions, vec![false, true, false, true]);
    // Verdicts must not depend on when compaction runs: before it has run
    // for day 40, the earbuds' price record (nobody listed them for 40 days)
    // is already ignored, the iPhone's is not.
    let probe = |title: &str| {
        let l = listing(9, &ev("c", title, "새 상품", 40), 0);
        store.snapshot(&l, &engine.analyze(&l)).unwrap()
    };
    assert_eq!(probe("갤럭시 버즈").price_samples, 0);
    assert_eq!(probe("아이폰 14").price_samples, 2);
    // An edit on day 40 of a listing last seen on day 0 (past the retention)
    // has no previous version, whether compaction removed its record yet
    // or not; day 20's listing has one.
    let edit = |id: &str| {
        let mut e = ev("a", "아이폰 14", "수정했어요", 40);
        e.listing = Some(id.into());
        e.event = Some("updated".into());
        let l = listing(8, &e, 0);
        store.snapshot(&l, &engine.analyze(&l)).unwrap().previous
    };
    assert!(store.listing("l0").unwrap().is_some(), "not compacted yet");
    assert_eq!(edit("l0"), None);
    assert!(edit("l2").is_some());
    // Day 40 is due: the end of a replay runs it.
    store.finish_compaction().unwrap();
    assert!(!store.compact_if_due().unwrap(), "once a day");
    let after = store.counts().unwrap();

    // Retention 30 days as of day 40: day 0's idempotency records are
    // gone, day 20's stays.
    assert!(store.seen("l0", "e0").unwrap().is_none());
    assert!(store.seen("l1", "e1").unwrap().is_none());
    assert!(store.seen("l2", "e2").unwrap().is_some());
    // Band buckets are kept 14 days: only day 40's are left.
    let live: std::collections::HashSet<u64> = bands[3].iter().copied().collect();
    assert_eq!(after.get(&'b'), Some(&(live.len() as u64)));
    // The shared phone number's record stays (b used it on day 20).
    assert_eq!(after.get(&'i'), Some(&1));
    // The iPhone keeps both price samples, day 0's too (a rare product's
    // reference must not thin out); the earbuds' record is gone.
    assert_eq!(probe("아이폰 14").price_samples, 2);
    assert_eq!(after.get(&'p'), Some(&2));
    // Listings with no event within the retention are gone (their state
    // would otherwise stay forever); day 20's is kept.
    assert!(store.listing("l0").unwrap().is_none());
    assert!(store.listing("l2").unwrap().is_some());
    assert_eq!(edit("l0"), None);
    // Compacting again changes nothing.
    assert_eq!(store.compact().unwrap(), 0);
    // The day compacted is remembered across a restart.
    drop(store);
    let store = Store::open_with(dir.path(), config).unwrap();
    // (Reopened, the compacted history is still what it was.)
    assert_eq!(store.counts().unwrap(), after);
    let l = listing(5, &ev("b", "아이폰 14", "다시 올려요", 40), 0);
    let a = engine.analyze(&l);
    let v = engine.decide(&l, &a, &store.snapshot(&l, &a).unwrap());
    store.record(&l, &a, &v).unwrap();
    assert!(!store.compact_if_due().unwrap());
}

/// Compaction skips keyspaces that cannot hold anything older than the
/// earliest event this store recorded — which says nothing of state restored
/// from another instance's changelog: that must still be compacted.
#[test]
fn state_restored_from_a_changelog_is_compacted_like_our_own() {
    let engine = engine();
    let ev = |seller: &str, listing: &str, at: i64| phone_ad(seller, Some(listing), at);
    let judge = |store: &Store, i: usize, e: &Ev| {
        let l = listing(i, e, 0);
        let a = engine.analyze(&l);
        let v = engine.decide(&l, &a, &store.snapshot(&l, &a).unwrap());
        store.record(&l, &a, &v).unwrap();
    };
    let day = 24 * 60;
    // Instance A judged an old listing; its changes went to the changelog.
    let dir_a = tempfile::tempdir().unwrap();
    let a = Store::open(dir_a.path()).unwrap();
    a.enable_changelog();
    judge(&a, 0, &ev("s-old", "l-old", 0));
    let changes = a.take_changes().own;
    assert!(!changes.is_empty());
    // Instance B only ever judged recent events, then restores A's.
    let dir_b = tempfile::tempdir().unwrap();
    let b = Store::open(dir_b.path()).unwrap();
    judge(&b, 1, &ev("s-new", "l-new", 35 * day));
    b.restore(&changes, 0, 0).unwrap();
    assert!(b.listing("l-old").unwrap().is_some());
    // 35 days on, A's listing is past the 30-day retention.
    b.compact().unwrap();
    assert!(
        b.listing("l-old").unwrap().is_none(),
        "restored state compacted"
    );
    assert!(b.listing("l-new").unwrap().is_some());
    // And what B judged itself stays bounded by its own events after a
    // reopen (the bound is persisted): nothing recent is dropped.
    drop(b);
    let b = Store::open(dir_b.path()).unwrap();
    b.compact().unwrap();
    assert!(b.listing("l-new").unwrap().is_some());
}

#[test]
fn a_store_in_use_is_refused_with_a_clear_error_and_free_again_once_closed() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path()).unwrap();
    // sled's lock is per open file: a second open, here or in another
    // process, waits for it a moment, then says why it cannot.
    let Err(e) = Store::open(dir.path()) else {
        panic!("a store already open was opened again");
    };
    assert!(e.to_string().contains("another haechi process"), "{e}");
    // Closed, the store opens again at once (sled lets go of the lock on a
    // background thread; `open_db` waits for it).
    drop(first);
    for _ in 0..20 {
        drop(Store::open(dir.path()).unwrap());
    }
}
