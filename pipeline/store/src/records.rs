//! The records the store keeps, encoded with postcard.

use haechi_engine::{Action, ReasonSource, Span};
use serde::{Deserialize, Serialize};

/// The longest list of recent listing times kept per seller: enough to count
/// any window up to 7 days exactly unless a seller posts more than this in a
/// week, when the counts saturate (they are burst signals, not bookkeeping).
pub const RECENT_CAP: usize = 256;
const WEEK_MS: i64 = 7 * 86_400_000;

/// Per-seller history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SellerRecord {
    pub first_seen: i64,
    pub last_seen: i64,
    pub joined_at: Option<i64>,
    /// Times (ms) of listings in the last 7 days, oldest first.
    pub recent: Vec<i64>,
    pub total: u32,
    pub categories: Vec<String>,
    pub reviewed: u32,
    pub blocked: u32,
    pub confirmed_fraud: u32,
    pub cleared: u32,
    /// (text fingerprint, time) of listings in the last 7 days, oldest
    /// first, at most [`RECENT_TEXTS_CAP`].
    pub texts: Pairs,
}

/// The most recent listing fingerprints kept per seller.
pub const RECENT_TEXTS_CAP: usize = 64;

impl SellerRecord {
    /// Adds a listing's text fingerprint (time order kept) and drops what
    /// left the 7-day window or the cap.
    pub fn add_text(&mut self, fingerprint: u64, t: i64) {
        let last_seen = self.last_seen;
        keep_recent(
            &mut self.texts,
            (fingerprint, t),
            |e| e.1,
            last_seen,
            RECENT_TEXTS_CAP,
        );
    }

    /// The seller's listings with this fingerprint within the 7 days
    /// before `now`.
    pub fn reposts(&self, fingerprint: u64, now: i64) -> u32 {
        self.texts
            .iter()
            .filter(|&&(f, t)| f == fingerprint && t <= now && now - t < WEEK_MS)
            .count() as u32
    }

    /// Adds a listing time (events may arrive slightly out of order) and
    /// drops what left the 7-day window.
    pub fn add_recent(&mut self, t: i64) {
        let last_seen = self.last_seen;
        keep_recent(&mut self.recent, t, |&x| x, last_seen, RECENT_CAP);
    }
}

/// Inserts `item` into a time-ordered list (events may arrive slightly out
/// of order), then drops what is a week older than `last_seen` and the
/// oldest past `cap`.
fn keep_recent<T>(
    list: &mut Vec<T>,
    item: T,
    time: impl Fn(&T) -> i64,
    last_seen: i64,
    cap: usize,
) {
    let t = time(&item);
    let pos = list.partition_point(|x| time(x) <= t);
    list.insert(pos, item);
    let horizon = last_seen - WEEK_MS;
    list.retain(|x| time(x) > horizon);
    if list.len() > cap {
        let excess = list.len() - cap;
        list.drain(..excess);
    }
}

/// Per-listing state: what the latest version carried, and every event of
/// the listing processed so far (the idempotency records live here: one key
/// written per event instead of two).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListingRecord {
    pub seller_id: String,
    pub had_contact: bool,
    pub action: Action,
    pub deleted: bool,
    pub last_event: String,
    /// `kind:value` of every identifier it carried.
    pub idents: Vec<String>,
    /// The listing's processed events, oldest first (dropped past the
    /// retention by [`crate::Store::compact`]).
    pub events: Vec<EventRecord>,
}

impl ListingRecord {
    /// The record of an event of this listing, if it was processed.
    pub fn event(&self, event_id: &str) -> Option<&EventRecord> {
        self.events.iter().find(|e| e.event_id == event_id)
    }
}

/// What a processed event left behind: its verdict, to answer a redelivery
/// with the very same bytes. (Moderator decisions keep one too, without a
/// verdict, under their own key.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub event_id: String,
    pub at: i64,
    pub verdict: Option<StoredVerdict>,
}

/// A verdict as its listing's record keeps it: without the event and
/// listing ids the record already holds, in postcard rather than JSON (a
/// third of the bytes; the verdict JSON was 75% of the store on the 400k
/// day set), and the strings every verdict repeats — reason ids, the rule
/// and policy explanations, the rules and model versions — as references
/// to the store's dictionary (format 5; they were two thirds of a stored
/// verdict). `store::dict::Dict` makes one and gives back the very same
/// [`haechi_engine::Verdict`], so its JSON is byte for byte the one first
/// emitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredVerdict {
    pub seller_id: String,
    pub action: Action,
    #[serde(with = "decimal")]
    pub score: f64,
    pub reasons: Vec<StoredReason>,
    pub rules: Text,
    pub model: Text,
}

/// A [`haechi_engine::Reason`] for postcard, which cannot skip empty fields
/// as the JSON does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredReason {
    pub source: ReasonSource,
    pub id: Text,
    pub detail: Text,
    #[serde(with = "decimal")]
    pub weight: f64,
    pub spans: Vec<Span>,
}

/// A string of a stored verdict: in the record itself, or the id of a
/// dictionary entry (8 bytes of the string's stable hash) holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Text {
    Inline(String),
    Ref([u8; 8]),
}

/// An f64 as a stored verdict keeps it: in ten-thousandths (a varint of
/// one to three bytes instead of eight) when that gives back the very same
/// bits — the engine rounds scores to 4 decimals and weights to 3 — else
/// whole.
mod decimal {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    enum Wire {
        Scaled(i64),
        Raw(f64),
    }

    const SCALE: f64 = 1e4;

    fn wire(x: f64) -> Wire {
        // What reading it back gives, checked bit for bit (-0.0 and
        // anything unrounded stay whole; `as` saturates NaN and infinities).
        let scaled = (x * SCALE).round() as i64;
        if (scaled as f64 / SCALE).to_bits() == x.to_bits() {
            Wire::Scaled(scaled)
        } else {
            Wire::Raw(x)
        }
    }

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        wire(*x).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(match Wire::deserialize(d)? {
            Wire::Scaled(i) => i as f64 / SCALE,
            Wire::Raw(x) => x,
        })
    }

    #[cfg(test)]
    mod tests {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct F(#[serde(with = "super")] f64);

        #[test]
        fn every_f64_comes_back_with_the_same_bits_and_rounded_ones_are_short() {
            let round = |x: f64, scale: f64| (x * scale).round() / scale;
            let mut rounded = vec![0.0, -3.0, 0.5, 1.0, 0.0006, 0.9999];
            for i in -5000..5000 {
                let x = f64::from(i) * 0.001_37;
                rounded.extend([round(x, 1e3), round(x.abs() / 7.0, 1e4)]);
            }
            for x in rounded {
                let b = postcard::to_allocvec(&F(x)).unwrap();
                assert!(b.len() <= 4, "{x}: {} bytes", b.len());
                let y: F = postcard::from_bytes(&b).unwrap();
                assert_eq!(y.0.to_bits(), x.to_bits(), "{x}");
            }
            for x in [
                0.1 + 0.2,
                -0.0,
                f64::NAN,
                f64::INFINITY,
                1e300,
                1e-300,
                0.00005,
            ] {
                let b = postcard::to_allocvec(&F(x)).unwrap();
                let y: F = postcard::from_bytes(&b).unwrap();
                assert_eq!(y.0.to_bits(), x.to_bits(), "{x}");
            }
        }
    }
}

/// (u64, i64) pairs — (seller hash, time), (price, time) — as ONE byte
/// string of 16-byte little-endian entries: band and price records are read
/// for every listing, and postcard's per-number varints cost a quarter of a
/// history cycle (`cargo bench -p haechi-store --bench history`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pairs(pub Vec<(u64, i64)>);

impl std::ops::Deref for Pairs {
    type Target = Vec<(u64, i64)>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Pairs {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Serialize for Pairs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        pair_bytes::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Pairs, D::Error> {
        pair_bytes::deserialize(d).map(Pairs)
    }
}

/// The encoding of [`Pairs`], for any collection of pairs (serde `with`).
pub(crate) mod pair_bytes {
    pub fn serialize<S: serde::Serializer>(pairs: &[(u64, i64)], s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(pairs.len() * 16);
        for (a, b) in pairs {
            bytes.extend_from_slice(&a.to_le_bytes());
            bytes.extend_from_slice(&b.to_le_bytes());
        }
        s.serialize_bytes(&bytes)
    }

    pub fn deserialize<'de, D, C>(d: D) -> Result<C, D::Error>
    where
        D: serde::Deserializer<'de>,
        C: FromIterator<(u64, i64)>,
    {
        struct V<C>(std::marker::PhantomData<C>);
        impl<C: FromIterator<(u64, i64)>> serde::de::Visitor<'_> for V<C> {
            type Value = C;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("16-byte (u64, i64) entries")
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<C, E> {
                if b.len() % 16 != 0 {
                    return Err(E::invalid_length(b.len(), &self));
                }
                let word = |c: &[u8]| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(c);
                    w
                };
                Ok(b.chunks_exact(16)
                    .map(|c| {
                        (
                            u64::from_le_bytes(word(&c[..8])),
                            i64::from_le_bytes(word(&c[8..])),
                        )
                    })
                    .collect())
            }
        }
        d.deserialize_bytes(V(std::marker::PhantomData))
    }
}

/// Sellers seen with a value, newest last, at most `cap`.
fn touch(list: &mut Vec<(String, i64)>, seller: &str, t: i64, cap: usize) {
    if let Some(e) = list.iter_mut().find(|(s, _)| s == seller) {
        e.1 = e.1.max(t);
    } else {
        list.push((seller.to_owned(), t));
    }
    if list.len() > cap {
        list.sort_by_key(|e| std::cmp::Reverse(e.1));
        list.truncate(cap);
    }
}

/// The sellers who used an identifier, and those confirmed fraudulent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IdentRecord {
    pub sellers: Vec<(String, i64)>,
    pub fraud_sellers: Vec<String>,
}

impl IdentRecord {
    pub fn touch(&mut self, seller: &str, t: i64) {
        touch(&mut self.sellers, seller, t, 64);
    }
}

/// The sellers (by hash: buckets are read for every listing, and this
/// keeps them allocation-free) whose text fell in a MinHash band bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BandRecord {
    /// Encoded as [`Pairs`] are.
    #[serde(with = "pair_bytes")]
    pub sellers: BandSellers,
}

/// The newest sellers a text band keeps.
pub const BAND_SELLERS: usize = 32;

/// A band's (seller hash, last time) entries: most bands have one seller,
/// held inline (the resident band index keeps millions of them).
pub type BandSellers = smallvec::SmallVec<[(u64, i64); 1]>;

impl BandRecord {
    pub fn touch(&mut self, seller: u64, t: i64) {
        Self::touch_sellers(&mut self.sellers, seller, t);
    }

    /// [`BandRecord::touch`] of a band's sellers, wherever they are kept.
    pub fn touch_sellers(sellers: &mut BandSellers, seller: u64, t: i64) {
        if let Some(e) = sellers.iter_mut().find(|(s, _)| *s == seller) {
            e.1 = e.1.max(t);
        } else if sellers.len() == BAND_SELLERS && sellers.windows(2).all(|w| w[0].1 >= w[1].1) {
            // A full band in order (as the last overflow left it): the new
            // entry goes after every entry as new as it is, the oldest one
            // goes out — what the sort below gives, without moving the
            // new entry (usually the newest) one place at a time.
            let at = sellers.partition_point(|e| e.1 >= t);
            if at < BAND_SELLERS {
                sellers.pop();
                sellers.insert(at, (seller, t));
            }
            return;
        } else {
            sellers.push((seller, t));
        }
        if sellers.len() > BAND_SELLERS {
            // Newest first, stable: by insertion, as the entries are nearly
            // in that order already (sorted at the last overflow, then only
            // one appended or moved); a stable sort's result is unique, so
            // this orders them exactly as `sort_by_key` did (3% of the
            // history thread, on full bands of template texts).
            for i in 1..sellers.len() {
                let mut j = i;
                while j > 0 && sellers[j - 1].1 < sellers[j].1 {
                    sellers.swap(j - 1, j);
                    j -= 1;
                }
            }
            sellers.truncate(BAND_SELLERS);
        }
    }
}

/// How many sellers appear in at least two of `buckets` (each bucket lists
/// a seller at most once, as [`BandRecord::touch`] keeps it). Runs for
/// every listing over up to 6 × 32 sellers: counted in a small table on
/// the stack instead of sorting them (a sort was 10% of a history cycle).
pub fn sellers_in_two_buckets<B, S>(buckets: B) -> u32
where
    B: IntoIterator<Item = S>,
    S: IntoIterator<Item = u64>,
{
    const SLOTS: usize = 512;
    // Gathered first: the buckets' loads (cache misses, mostly) then
    // overlap, instead of waiting behind the table's mispredicted probes.
    let all: smallvec::SmallVec<[u64; 256]> = buckets.into_iter().flatten().collect();
    let mut keys = [0u64; SLOTS];
    let mut counts = [0u8; SLOTS];
    let mut used = 0;
    let mut twice = 0;
    let mut spill: Vec<u64> = Vec::new();
    for &seller in &all {
        if used >= SLOTS / 2 {
            // Past half full the probes get long: the rest sorted.
            spill.push(seller);
            continue;
        }
        // Fibonacci hashing spreads even close hashes over the slots.
        let mut i = (seller.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 55) as usize;
        loop {
            if counts[i] == 0 {
                keys[i] = seller;
                counts[i] = 1;
                used += 1;
                break;
            }
            if keys[i] == seller {
                if counts[i] == 1 {
                    twice += 1;
                }
                counts[i] = counts[i].saturating_add(1);
                break;
            }
            i = (i + 1) % SLOTS;
        }
    }
    if spill.is_empty() {
        return twice;
    }
    // Rare (more than 256 distinct sellers): count the spilled ones with
    // what the table holds.
    spill.extend(
        keys.iter()
            .zip(&counts)
            .filter(|(_, &c)| c > 0)
            .flat_map(|(&k, &c)| std::iter::repeat_n(k, c as usize)),
    );
    spill.sort_unstable();
    spill
        .chunk_by(|a, b| a == b)
        .filter(|run| run.len() >= 2)
        .count() as u32
}

/// The hash a seller is known by in band buckets.
pub fn seller_hash(seller: &str) -> u64 {
    haechi_engine::history::fxhash64(seller.as_bytes())
}

/// The last prices of a product (a rolling sample): the median of it is the
/// usual price. Robust to the odd outlier, bounded, and it follows the
/// market as prices drift.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PriceRecord {
    pub samples: Pairs,
}

pub const PRICE_SAMPLES: usize = 64;

impl PriceRecord {
    pub fn add(&mut self, price: u64, t: i64) {
        self.samples.push((price, t));
        if self.samples.len() > PRICE_SAMPLES {
            self.samples.remove(0);
        }
    }

    /// The middle price (the upper one of an even count). Read for every
    /// priced listing: selected on the stack instead of sorting a copy (3%
    /// of a replay's history thread).
    pub fn median(&self) -> Option<u64> {
        let n = self.samples.len();
        let mut stack = [0u64; PRICE_SAMPLES];
        // (More than `add` keeps only from a damaged or foreign record.)
        let mut heap = Vec::new();
        let p: &mut [u64] = if n <= PRICE_SAMPLES {
            &mut stack[..n]
        } else {
            heap.resize(n, 0);
            &mut heap
        };
        for (slot, s) in p.iter_mut().zip(self.samples.iter()) {
            *slot = s.0;
        }
        if p.is_empty() {
            return None;
        }
        let (_, &mut mid, _) = p.select_nth_unstable(n / 2);
        Some(mid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious count: every seller once per bucket, sorted, runs of two.
    fn by_sorting(buckets: &[Vec<u64>]) -> u32 {
        let mut all: Vec<u64> = buckets.concat();
        all.sort_unstable();
        all.chunk_by(|a, b| a == b).filter(|r| r.len() >= 2).count() as u32
    }

    #[test]
    fn a_band_keeps_its_newest_sellers_in_the_order_a_stable_sort_gives() {
        // The reference: what `touch` did before the insertion sort.
        fn reference(v: &mut Vec<(u64, i64)>, seller: u64, t: i64) {
            if let Some(e) = v.iter_mut().find(|(s, _)| *s == seller) {
                e.1 = e.1.max(t);
            } else {
                v.push((seller, t));
            }
            if v.len() > 32 {
                v.sort_by_key(|e| std::cmp::Reverse(e.1));
                v.truncate(32);
            }
        }
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Few distinct times (ties decide who goes) and many, old times
        // coming late (entries far from their place).
        // Then as events come: times rising (ties among them), now and then
        // a late one.
        for (sellers, times) in [(60, 4), (200, 30), (45, 1_000), (200, 0), (40, 0)] {
            let (mut band, mut want) = (BandRecord::default(), Vec::new());
            for i in 0..3_000 {
                let t = match times {
                    0 if next() % 10 == 0 => i / 3 - (next() % 50) as i64,
                    0 => i / 3,
                    _ => (next() % times) as i64,
                };
                let s = next() % sellers;
                band.touch(s, t);
                reference(&mut want, s, t);
                assert_eq!(band.sellers.as_slice(), want.as_slice());
            }
        }
    }

    #[test]
    fn the_median_is_the_middle_of_the_sorted_samples() {
        let mut x = 0x9e37_79b9_u64;
        for n in 0..=PRICE_SAMPLES + 3 {
            let mut r = PriceRecord::default();
            for i in 0..n {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                r.add((x >> 40) % 1_000, i as i64);
            }
            if n == PRICE_SAMPLES + 3 {
                // Past the cap (only a record `add` did not build).
                r.samples.push((7, 0));
                r.samples.push((7, 0));
            }
            let mut sorted: Vec<u64> = r.samples.iter().map(|s| s.0).collect();
            sorted.sort_unstable();
            assert_eq!(
                r.median(),
                sorted.get(sorted.len() / 2).copied(),
                "{n} samples"
            );
        }
    }

    #[test]
    fn sellers_in_two_buckets_counts_like_sorting_them() {
        // xorshift: deterministic buckets of sellers from a small or a large
        // pool (many shared / few shared), up to past the table's half.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for case in 0..400 {
            let pool = [3, 40, 200, 100_000][case % 4];
            let n_buckets = 1 + (next() % 12) as usize;
            let per = [0, 1, 5, 32, 90][(case / 4) % 5];
            let buckets: Vec<Vec<u64>> = (0..n_buckets)
                .map(|_| {
                    let mut b: Vec<u64> = (0..per).map(|_| next() % pool).collect();
                    b.sort_unstable();
                    b.dedup();
                    b
                })
                .collect();
            assert_eq!(
                sellers_in_two_buckets(buckets.iter().map(|b| b.iter().copied())),
                by_sorting(&buckets),
                "case {case}: {buckets:?}"
            );
        }
        // Seller hash 0 is a seller like any other.
        assert_eq!(sellers_in_two_buckets([vec![0u64, 7], vec![0, 8]]), 1);
    }
}
