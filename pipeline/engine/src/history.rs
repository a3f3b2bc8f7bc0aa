//! Seller history as the engine sees it: a snapshot, read by the caller
//! before the decision, and the pure functions that turn it into reasons.
//!
//! The store (`haechi-store`, sled) keeps the history and builds a
//! [`SellerSnapshot`] for each event from the [`crate::Analysis`] (the
//! identifiers, the text fingerprint, the product key); the engine never
//! reads or writes the store itself. Also here: the two pure functions the
//! store indexes by, [`simhash`] (near-duplicate text) and [`product_key`]
//! (the usual price of "the same thing").

use crate::contract::{Action, Listing, Reason, ReasonSource};
use crate::extract::IdentKind;
use crate::policy::HistoryWeights;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An identifier of this listing as seen across sellers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedIdent {
    pub kind: IdentKind,
    pub value: String,
    /// Other sellers that used it (within retention).
    pub other_sellers: u32,
    /// Of those (or this seller), how many a moderator confirmed fraudulent.
    pub fraud_sellers: u32,
}

/// What the listing looked like before this event (for `updated` events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousVersion {
    /// The previous version carried a phone, messenger ID, link or account.
    pub had_contact: bool,
    pub action: Action,
}

/// Everything the store knows about the seller and the listing's links,
/// taken before the decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SellerSnapshot {
    /// The seller has been seen before this event.
    pub known: bool,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub joined_at: Option<DateTime<Utc>>,
    pub listings_1h: u32,
    pub listings_24h: u32,
    pub listings_7d: u32,
    pub listings_total: u32,
    pub distinct_categories: u32,
    /// Verdicts so far by action.
    pub reviewed: u32,
    pub blocked: u32,
    /// Frauds confirmed by moderators / listings they approved.
    pub confirmed_fraud: u32,
    pub cleared: u32,
    pub shared_idents: Vec<SharedIdent>,
    /// Other sellers who recently posted near-identical text.
    pub duplicate_text_sellers: u32,
    /// The seller's own other listings of the last 7 days with this text
    /// (the same [`text_fingerprint`]): the same ad posted again and again.
    pub own_reposts_7d: u32,
    /// The usual price of this product (median estimate) and its sample count.
    pub usual_price: Option<u64>,
    pub price_samples: u32,
    pub previous: Option<PreviousVersion>,
}

impl SellerSnapshot {
    /// Account age in days at `now`, from the platform's join time or, failing
    /// that, the first time we saw the seller.
    pub fn account_age_days(&self, now: DateTime<Utc>) -> Option<f64> {
        let since = self.joined_at.or(self.first_seen)?;
        Some(((now - since).num_seconds() as f64 / 86_400.0).max(0.0))
    }
}

/// One number for a listing's text: a hash of its MinHash bands, so the
/// same text (after normalization) gives the same fingerprint; `None` for
/// text too short to have bands.
pub fn text_fingerprint(bands: &[u64]) -> Option<u64> {
    if bands.is_empty() {
        return None;
    }
    let mut sorted = bands.to_vec();
    sorted.sort_unstable();
    let bytes: Vec<u8> = sorted.iter().flat_map(|b| b.to_le_bytes()).collect();
    Some(fxhash64(&bytes))
}

/// Does the analysis carry a way to reach the seller or pay them off-platform?
pub fn has_contact(idents: &[crate::extract::Ident]) -> bool {
    !idents.is_empty()
}

/// The history reasons for one event.
pub fn signals(
    listing: &Listing,
    contact: bool,
    snap: &SellerSnapshot,
    w: &HistoryWeights,
) -> Vec<Reason> {
    let mut out = Vec::new();
    let mut add = |id: &str, weight: f64, detail: String| {
        if weight != 0.0 {
            out.push(Reason {
                source: ReasonSource::History,
                id: id.to_owned(),
                detail,
                weight,
                spans: Vec::new(),
            });
        }
    };
    if snap.confirmed_fraud > 0 {
        add(
            "history.confirmed_fraud",
            w.confirmed_fraud,
            format!(
                "seller has {} listing(s) confirmed as fraud by moderators",
                snap.confirmed_fraud
            ),
        );
    }
    if let Some(s) = snap.shared_idents.iter().find(|s| s.fraud_sellers > 0) {
        add(
            "history.linked_to_fraud",
            w.linked_to_fraud,
            format!(
                "{} {} was used by {} seller(s) confirmed fraudulent",
                s.kind.as_str(),
                s.value,
                s.fraud_sellers
            ),
        );
    }
    if let Some(s) = snap
        .shared_idents
        .iter()
        .filter(|s| s.other_sellers >= w.shared_ident_min)
        .max_by_key(|s| s.other_sellers)
    {
        add(
            "history.shared_identifier",
            w.shared_ident,
            format!(
                "{} {} is also used by {} other seller(s)",
                s.kind.as_str(),
                s.value,
                s.other_sellers
            ),
        );
    }
    if snap.duplicate_text_sellers >= w.duplicate_text_min {
        add(
            "history.duplicate_text",
            w.duplicate_text,
            format!(
                "near-identical text posted by {} other seller(s)",
                snap.duplicate_text_sellers
            ),
        );
    }
    if snap.listings_1h + 1 >= w.burst_min {
        add(
            "history.burst",
            w.burst,
            format!("{} listings within the hour", snap.listings_1h + 1),
        );
    }
    let age = snap.account_age_days(listing.created_at);
    if contact && age.is_none_or(|a| a < w.fresh_days) {
        add(
            "history.fresh_account_with_contact",
            w.fresh_with_contact,
            match age {
                Some(a) => format!("account {a:.1} days old posts contact details"),
                None => "first listing of an unknown account posts contact details".into(),
            },
        );
    }
    if let (Some(usual), true) = (snap.usual_price, snap.price_samples >= w.price_min_samples) {
        let ratio = listing.price as f64 / usual.max(1) as f64;
        if listing.price > 0 && ratio < w.too_cheap_ratio {
            add(
                "history.too_cheap",
                w.too_cheap,
                format!(
                    "price {} KRW is {:.0}% of the usual {} KRW ({} listings)",
                    listing.price,
                    ratio * 100.0,
                    usual,
                    snap.price_samples
                ),
            );
        }
    }
    if let Some(prev) = &snap.previous {
        if contact && !prev.had_contact && listing.event == crate::contract::EventKind::Updated {
            add(
                "history.edit_adds_contact",
                w.edit_adds_contact,
                format!(
                    "an edit added contact or payment details to a listing judged `{}`",
                    prev.action
                ),
            );
        }
    }
    if let (Some(last), true) = (snap.last_seen, snap.known) {
        let idle = (listing.created_at - last).num_days() as f64;
        if idle >= w.dormant_days {
            add(
                "history.dormant_reactivated",
                w.dormant_reactivated,
                format!("first listing after {idle:.0} days of silence"),
            );
        }
    }
    out
}

/// MinHash rows per band and bands per text: 6 bands of 2 rows. Two texts
/// with Jaccard similarity J (over character trigrams) share a given band
/// with probability J², so near-identical reposts (J ≥ 0.7) share two or more
/// of the six bands almost always, and unrelated listings rarely share one.
pub const BANDS: usize = 6;
const ROWS: usize = 2;

/// Locality-sensitive keys of a text for near-duplicate detection: the store
/// indexes sellers by these, and counts other sellers sharing >= 2 of them.
/// Empty for texts too short to say anything.
pub fn minhash_bands(compact: &str) -> Vec<u64> {
    let chars: Vec<char> = compact.chars().collect();
    if chars.len() < 8 {
        return Vec::new();
    }
    let mins = shingle_mins(&chars);
    (0..BANDS)
        .map(|b| {
            fxhash64_u64(mins[b * ROWS] ^ mins[b * ROWS + 1].rotate_left(29) ^ (b as u64) << 58)
        })
        .collect()
}

/// The smallest hash of the text's 3-char shingles under each of the
/// [`SEEDS`]. Compiled also for AVX-512 and AVX2 and picked at run time
/// (the twelve mixes of a shingle are one vector operation there: 64-bit
/// multiplies need AVX-512); the same numbers on every path.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512dq+avx512vl", "x86_64+avx2"))]
fn shingle_mins(chars: &[char]) -> [u64; BANDS * ROWS] {
    let mut mins = [u64::MAX; BANDS * ROWS];
    for w in chars.windows(3) {
        let h = fxhash64_u64(
            u64::from(w[0] as u32) | u64::from(w[1] as u32) << 21 | u64::from(w[2] as u32) << 42,
        );
        for (m, seed) in mins.iter_mut().zip(&SEEDS) {
            // (Branch-free: lets the compiler vectorize the loop.)
            *m = (*m).min(fxhash64_u64(h ^ seed));
        }
    }
    mins
}

const SEEDS: [u64; BANDS * ROWS] = [
    0x9E37_79B9_7F4A_7C15,
    0xC2B2_AE3D_27D4_EB4F,
    0x1656_67B1_9E37_79F9,
    0x85EB_CA77_C2B2_AE63,
    0x27D4_EB2F_1656_67C5,
    0xFF51_AFD7_ED55_8CCD,
    0xC4CE_B9FE_1A85_EC53,
    0x2127_599B_F432_5C37,
    0x880F_7A41_5A8A_DB1D,
    0x5851_F42D_4C95_7F2D,
    0x1405_7B7E_F767_814F,
    0xD6E8_FEB8_6659_FD93,
];

/// [`fxhash64`]'s finalizer applied to one integer (three chars packed).
pub fn fxhash64_u64(x: u64) -> u64 {
    let mut h = x ^ 0xcbf2_9ce4_8422_2325;
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A small, fast, stable 64-bit hash (FNV-1a with a final mix). Stable across
/// platforms and releases: fingerprints and feature buckets are stored.
pub fn fxhash64(bytes: &[u8]) -> u64 {
    fxhash64_bytes(bytes.iter().copied())
}

/// [`fxhash64`] of bytes that need not sit in one buffer.
pub fn fxhash64_bytes(bytes: impl Iterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64 finalizer: FNV's low bits are weak.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The product a listing sells, for its usual price: the category and the
/// first two meaningful title tokens (brand/model words), so "아이폰 14 프로
/// 256 팝니다" and "아이폰14 프로 급처" share `digital|아이폰|14`.
pub fn product_key(folded_title: &str, category: Option<&str>) -> String {
    const NOISE: &[&str] = &[
        "팝니다",
        "판매",
        "판매합니다",
        "급처",
        "급매",
        "급처분",
        "새상품",
        "미개봉",
        "중고",
        "정품",
        "s급",
        "a급",
        "거의",
        "새것",
        "팔아요",
        "처분",
        "택포",
        "무료배송",
        "최저가",
        "sale",
        "used",
        "new",
        "for",
        "selling",
        "sell",
        "like",
        "mint",
        "the",
        "a",
    ];
    let mut key = category.unwrap_or("-").to_owned();
    let mut n = 0;
    for tok in tokens(folded_title) {
        if NOISE.contains(&tok) {
            continue;
        }
        key.push('|');
        key.push_str(tok);
        n += 1;
        if n == 2 {
            break;
        }
    }
    key
}

/// Splits text into words, and words where the script changes (아이폰14 ->
/// 아이폰, 14), since Korean listings glue model numbers to names.
pub fn tokens(text: &str) -> impl Iterator<Item = &str> {
    fn class(c: char) -> u8 {
        if c.is_ascii_digit() {
            1
        } else if c.is_ascii_alphabetic() {
            2
        } else if c.is_ascii() {
            0
        } else if ('\u{AC00}'..='\u{D7A3}').contains(&c) || c.is_alphanumeric() {
            3
        } else {
            0
        }
    }
    let mut rest = text;
    std::iter::from_fn(move || {
        let start = rest.find(|c: char| class(c) != 0)?;
        rest = &rest[start..];
        let first = class(rest.chars().next()?);
        let end = rest.find(|c: char| class(c) != first).unwrap_or(rest.len());
        let (tok, tail) = rest.split_at(end);
        rest = tail;
        Some(tok)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_split_at_script_changes() {
        let t: Vec<_> = tokens("아이폰14 프로, galaxy-s23!").collect();
        assert_eq!(t, ["아이폰", "14", "프로", "galaxy", "s", "23"]);
    }

    #[test]
    fn shingle_mins_are_those_of_the_plain_loop_on_every_cpu_path() {
        // The reference: one shingle, one seed at a time, no vectors. The
        // run-time pick (AVX-512, AVX2 or neither) must give the same mins.
        fn reference(chars: &[char]) -> [u64; BANDS * ROWS] {
            let mut mins = [u64::MAX; BANDS * ROWS];
            for w in chars.windows(3) {
                let h = fxhash64_u64(
                    u64::from(w[0] as u32)
                        | u64::from(w[1] as u32) << 21
                        | u64::from(w[2] as u32) << 42,
                );
                for (k, m) in mins.iter_mut().enumerate() {
                    let v = fxhash64_u64(h ^ SEEDS[k]);
                    if v < *m {
                        *m = v;
                    }
                }
            }
            mins
        }
        let alphabet: Vec<char> = "가나다라마바사아자차카타파하급처카톡선입금abcxyz0123456789~!"
            .chars()
            .collect();
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..200 {
            let chars: Vec<char> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            assert_eq!(shingle_mins(&chars), reference(&chars), "{len} chars");
        }
    }

    #[test]
    fn near_duplicates_share_bands_and_strangers_do_not() {
        let shared = |x: &[u64], y: &[u64]| x.iter().zip(y).filter(|(a, b)| a == b).count();
        let a = minhash_bands("급처합니다아이폰14프로맥스256기가카톡abc123으로연락주세요선입금시바로발송합니다상태최상");
        let b = minhash_bands("급처합니다아이폰14프로맥스256기가카톡abc124으로연락주세요선입금시바로발송합니다상태최상😊");
        let c = minhash_bands(
            "캠핑의자두개팝니다직거래만원하고상태좋아요사용감조금있어요주말에거래가능합니다",
        );
        assert_eq!(a.len(), BANDS);
        assert!(shared(&a, &b) >= 2, "{}", shared(&a, &b));
        assert_eq!(shared(&a, &c), 0);
        assert!(minhash_bands("짧음").is_empty());
    }

    #[test]
    fn product_keys_ignore_sales_words() {
        assert_eq!(
            product_key("급처 아이폰 14 프로 256", Some("digital")),
            "digital|아이폰|14"
        );
        assert_eq!(
            product_key("아이폰14 프로 팝니다", Some("digital")),
            "digital|아이폰|14"
        );
        assert_eq!(product_key("", None), "-");
    }
}
