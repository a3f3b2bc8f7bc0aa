//! Feature extraction for the classifier: ONE code path for training and
//! inference, so the two cannot drift.
//!
//! A listing becomes a sparse vector in a space of `2^HASH_BITS` hashed
//! buckets plus a few dense numeric features after them:
//!
//! * character 2- and 3-grams of the compact view of the title and the body
//!   (separate namespaces): Korean needs no tokenizer this way, and the
//!   compact view already undid the obfuscation;
//! * word unigrams and bigrams of the folded view (words split at spaces and
//!   where the script changes: 아이폰14 → 아이폰, 14);
//! * the rules that fired and their kinds, and the extracted facts;
//! * numbers: price, images, text length, account age, listing windows,
//!   identifiers shared with other sellers, near-duplicate text, the price
//!   relative to the product's usual price, whether an edit added contact
//!   details, dormancy.
//!
//! Text features are counts scaled by 1/sqrt(number of grams); numeric features are
//! scaled to roughly 0..1. Extraction happens in two halves to fit the
//! engine's split: [`text_features`] needs only the listing (computed in
//! `analyze`, on any thread), [`dense_features`] needs the history snapshot
//! (computed in `decide`).
//!
//! Any change to what is extracted must change [`FEATURE_CONFIG`]: a model
//! trained under another configuration is refused at load.

use crate::contract::{EventKind, Listing};
use crate::extract::Facts;
use crate::history::{tokens, SellerSnapshot};
use crate::normalize::Normalized;
use crate::rules::{RuleHit, RuleSet};

/// Bits of the hashed feature space.
pub const HASH_BITS: u32 = 18;
/// Number of hashed buckets; dense features follow them.
pub const BUCKETS: u32 = 1 << HASH_BITS;

/// The dense numeric features, in index order after the buckets.
pub const DENSE: &[&str] = &[
    "log_price",
    "free",
    "images",
    "no_images",
    "title_length",
    "body_length",
    "has_phone",
    "has_messenger_id",
    "has_url",
    "has_foreign_url",
    "has_bank_account",
    "listed_identifier",
    "price_in_text",
    "account_age",
    "fresh_account",
    "account_age_unknown",
    "listings_1h",
    "listings_24h",
    "listings_7d",
    "known_seller",
    "shared_identifier",
    "duplicate_text",
    "price_below_usual",
    "price_below_half",
    "usual_price_known",
    "edit_adds_contact",
    "is_edit",
    "dormant_gap",
    "own_reposts",
];

/// Total dimension: buckets then dense features.
pub const DIM: usize = BUCKETS as usize + DENSE.len();

/// Describes the extractor. Bump it with every change to this module.
pub const FEATURE_CONFIG: &str = "haechi-features/4: hash_bits=18 fxhash64; bigrams as mixed word hashes; \
    char 2,3-grams of compact title (ns T) and body (ns B); word 1,2-grams of folded title+body (ns W,V); \
    rule ids (ns R) and kinds (ns K); facts (ns F); text counts scaled by 1/sqrt(n); dense v2 (29 features: \
    + own_reposts)";

/// A short hash of [`FEATURE_CONFIG`], stored in every model manifest.
pub fn feature_config_hash() -> String {
    let h = blake3::hash(FEATURE_CONFIG.as_bytes()).to_hex();
    format!("f-{}", &h[..12])
}

/// A sparse feature vector. Text indices may repeat (a gram seen twice);
/// dense indices come after all text indices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features {
    pub idx: Vec<u32>,
    pub val: Vec<f32>,
}

impl Features {
    pub fn len(&self) -> usize {
        self.idx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.idx.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, f32)> + '_ {
        self.idx.iter().copied().zip(self.val.iter().copied())
    }

    /// Appends `other`'s entries (indices must be larger than ours).
    pub fn extend(&mut self, other: &Features) {
        self.idx.extend_from_slice(&other.idx);
        self.val.extend_from_slice(&other.val);
    }
}

/// Where feature names go when they are wanted (explanations, debugging).
pub trait NameSink {
    fn name(&mut self, bucket: u32, name: impl FnOnce() -> String);
}

/// No names: the hot path.
impl NameSink for () {
    #[inline]
    fn name(&mut self, _: u32, _: impl FnOnce() -> String) {}
}

/// Collect (bucket, name) pairs.
impl NameSink for Vec<(u32, String)> {
    fn name(&mut self, bucket: u32, name: impl FnOnce() -> String) {
        self.push((bucket, name()));
    }
}

/// Names only the wanted buckets, each with the first name it gets: a
/// flagged listing's explanation names its top five features without
/// formatting a name for every gram of its text (that was 44% of a flagged
/// decision: `cargo bench -p haechi-engine --bench model -- flagged`).
#[derive(Debug)]
pub struct NamesOf<'a> {
    wanted: &'a [u32],
    pub names: Vec<(u32, String)>,
}

impl<'a> NamesOf<'a> {
    pub fn new(wanted: &'a [u32]) -> NamesOf<'a> {
        NamesOf {
            wanted,
            names: Vec::with_capacity(wanted.len()),
        }
    }
}

impl NameSink for NamesOf<'_> {
    fn name(&mut self, bucket: u32, name: impl FnOnce() -> String) {
        if self.wanted.contains(&bucket) && !self.names.iter().any(|(b, _)| *b == bucket) {
            self.names.push((bucket, name()));
        }
    }
}

#[inline]
fn bucket(ns: u8, packed: u64) -> u32 {
    (crate::history::fxhash64_u64(packed ^ (u64::from(ns) << 56)) & u64::from(BUCKETS - 1)) as u32
}

/// FNV-1a over the namespace byte and the string, then the finalizer: the
/// same value as `fxhash64(&[ns, s...])`, without building the buffer.
fn hash_str(ns: u8, s: &str) -> u64 {
    crate::history::fxhash64_bytes(std::iter::once(ns).chain(s.bytes()))
}

fn bucket_str(ns: u8, s: &str) -> u32 {
    (hash_str(ns, s) & u64::from(BUCKETS - 1)) as u32
}

fn char_grams<N: NameSink>(ns: u8, text: &str, out: &mut Vec<u32>, names: &mut N) {
    // A sliding window of the last two characters: no buffer.
    let (ns2, ns3) = (ns ^ 2 << 4, ns ^ 3 << 4);
    let (mut a, mut b): (Option<char>, Option<char>) = (None, None);
    for c in text.chars() {
        if let Some(pb) = b {
            let g2 = bucket(ns2, u64::from(pb as u32) << 21 | u64::from(c as u32));
            out.push(g2);
            names.name(g2, || gram_name(ns, &[pb, c]));
            if let Some(pa) = a {
                let g3 = bucket(
                    ns3,
                    (u64::from(pa as u32) << 21 | u64::from(pb as u32)) << 21 | u64::from(c as u32),
                );
                out.push(g3);
                names.name(g3, || gram_name(ns, &[pa, pb, c]));
            }
        }
        a = b;
        b = Some(c);
    }
}

fn gram_name(ns: u8, chars: &[char]) -> String {
    format!(
        "{}:{}",
        if ns == b'T' { "title" } else { "body" },
        chars.iter().collect::<String>()
    )
}

/// The features that depend on the listing alone.
pub fn text_features<N: NameSink>(
    title: &Normalized,
    body: &Normalized,
    hits: &[RuleHit],
    facts: &Facts,
    rules: &RuleSet,
    names: &mut N,
) -> Features {
    let mut b: Vec<u32> = Vec::with_capacity(512);
    char_grams(b'T', title.compact.as_str(), &mut b, names);
    char_grams(b'B', body.compact.as_str(), &mut b, names);
    for text in [title.folded.as_str(), body.folded.as_str()] {
        let mut prev: Option<(&str, u64)> = None;
        for tok in tokens(text) {
            let h = hash_str(b'W', tok);
            let w = (h & u64::from(BUCKETS - 1)) as u32;
            b.push(w);
            names.name(w, || format!("word:{tok}"));
            if let Some((p, ph)) = prev {
                // A bigram is the pair of its word hashes, mixed.
                let v = bucket(b'V', ph.rotate_left(23) ^ h);
                b.push(v);
                names.name(v, || format!("words:{p} {tok}"));
            }
            prev = Some((tok, h));
        }
    }
    for h in hits {
        if let Some(r) = rules.rule(h.rule) {
            let x = bucket_str(b'R', &r.id);
            b.push(x);
            names.name(x, || format!("rule:{}", r.id));
            let k = bucket_str(b'K', &r.kind);
            b.push(k);
            names.name(k, || format!("kind:{}", r.kind));
        }
    }
    for fact in crate::extract::FACTS {
        if facts.has(fact) {
            let f = bucket_str(b'F', fact);
            b.push(f);
            names.name(f, || format!("fact:{fact}"));
        }
    }
    // Counts, not presence: a gram seen twice weighs twice. No sort, no
    // dedup on the hot path; the vector is scaled by 1/sqrt(grams).
    let v = if b.is_empty() {
        0.0
    } else {
        1.0 / (b.len() as f32).sqrt()
    };
    Features {
        val: vec![v; b.len()],
        idx: b,
    }
}

fn clip01(x: f64) -> f32 {
    x.clamp(0.0, 1.0) as f32
}

/// The features that need the seller's history.
pub fn dense_features(listing: &Listing, facts: &Facts, snap: &SellerSnapshot) -> Features {
    let mut d = [0f32; DENSE.len()];
    let has = |f: &str| f32::from(u8::from(facts.has(f)));
    d[0] = clip01((listing.price as f64).ln_1p() / 17.0);
    d[1] = f32::from(u8::from(listing.price == 0));
    d[2] = clip01(f64::from(listing.image_count.unwrap_or(0)) / 10.0);
    d[3] = f32::from(u8::from(listing.image_count.unwrap_or(0) == 0));
    d[4] = clip01(listing.title.chars().count() as f64 / 100.0);
    d[5] = clip01((listing.body.chars().count() as f64).ln_1p() / 8.0);
    d[6] = has("phone");
    d[7] = has("messenger_id");
    d[8] = has("url");
    d[9] = has("foreign_url");
    d[10] = has("bank_account");
    d[11] = has("listed");
    d[12] = has("price_mention");
    match snap.account_age_days(listing.created_at) {
        Some(age) => {
            d[13] = clip01(age.ln_1p() / 8.0);
            d[14] = f32::from(u8::from(age < 7.0));
        }
        None => d[15] = 1.0,
    }
    d[16] = clip01(f64::from(snap.listings_1h).ln_1p() / 4.0);
    d[17] = clip01(f64::from(snap.listings_24h).ln_1p() / 4.0);
    d[18] = clip01(f64::from(snap.listings_7d).ln_1p() / 5.0);
    d[19] = f32::from(u8::from(snap.known));
    let shared = snap
        .shared_idents
        .iter()
        .map(|s| s.other_sellers)
        .max()
        .unwrap_or(0);
    d[20] = clip01(f64::from(shared).ln_1p() / 3.0);
    d[21] = clip01(f64::from(snap.duplicate_text_sellers).ln_1p() / 3.0);
    if let (Some(usual), true) = (snap.usual_price, snap.price_samples >= 5) {
        if listing.price > 0 && usual > 0 {
            let ratio = listing.price as f64 / usual as f64;
            d[22] = clip01(-ratio.ln() / 2.5);
            d[23] = f32::from(u8::from(ratio < 0.5));
            d[24] = 1.0;
        }
    }
    let contact = !facts.idents.is_empty();
    if let Some(prev) = &snap.previous {
        d[25] = f32::from(u8::from(
            contact && !prev.had_contact && listing.event == EventKind::Updated,
        ));
    }
    d[26] = f32::from(u8::from(listing.event == EventKind::Updated));
    if let (Some(last), true) = (snap.last_seen, snap.known) {
        let idle = (listing.created_at - last).num_days().max(0) as f64;
        d[27] = clip01(idle.ln_1p() / 6.0);
    }
    d[28] = clip01(f64::from(snap.own_reposts_7d).ln_1p() / 3.0);
    let mut f = Features::default();
    for (i, v) in d.iter().enumerate() {
        if *v != 0.0 {
            f.idx.push(BUCKETS + i as u32);
            f.val.push(*v);
        }
    }
    f
}

/// The name of a feature index, for dense ones (hashed ones need a
/// [`NameSink`] at extraction time).
pub fn dense_name(index: u32) -> Option<&'static str> {
    index
        .checked_sub(BUCKETS)
        .and_then(|i| DENSE.get(i as usize).copied())
}
