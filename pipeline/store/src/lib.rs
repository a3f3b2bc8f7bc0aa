//! # haechi-store
//!
//! Everything haechi remembers, in one sled database: per-seller history,
//! per-listing state (for edits), the cross-seller indexes (identifiers,
//! near-duplicate text), usual prices per product, the idempotency record of
//! every processed event, and the human-review queue ([`review`]).
//!
//! ## Atomicity and idempotency
//!
//! All keyspaces live in one sled tree, a one-byte prefix each. Writes go to
//! an in-memory overlay ([`overlay`]); [`Store::flush`] writes everything
//! pending as ONE fsynced log file, which a background thread then applies
//! to sled. An event's effects enter the overlay together (under one lock),
//! so every flush holds whole events: after a crash, an event is either
//! wholly in the store or not at all. Reprocessing it (a replay, a Kafka
//! redelivery) finds its idempotency record in its listing's record
//! ([`Store::seen`]), re-emits the original verdict and changes nothing. The Kafka loop commits an offset only after the flush
//! that made its events durable.
//!
//! The engine stays pure: [`Store::snapshot`] reads what it needs before the
//! decision, [`Store::record`] writes what the decision changed.
//!
//! ## Boundedness
//!
//! Windows are lists of recent times trimmed on every write; index entries
//! keep a bounded number of sellers; [`Store::compact`] drops idempotency
//! records and index entries older than the retention, and products not
//! listed within it. The event loops start it every
//! [`HistoryConfig::compact_every_days`] of event time, on its own thread
//! ([`Store::compact_if_due`]).

pub mod changelog;
mod compaction;
mod dict;
mod image;
mod migrate;
pub mod overlay;
pub mod records;
pub mod review;

use chrono::{DateTime, TimeZone, Utc};
use compaction::{day_start, listing_is_stale, price_is_stale, Compactor};
use haechi_engine::extract::IdentKind;
use haechi_engine::history::{PreviousVersion, SellerSnapshot, SharedIdent};
use haechi_engine::{Action, Analysis, EventKind, Listing, Verdict};
use overlay::Overlay;
use records::*;
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store at {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store: corrupt record under key {key:?}: {message}")]
    Corrupt { key: String, message: String },
    #[error("{0}")]
    Review(String),
    #[error("store log: {0}")]
    Wal(String),
    #[error("store at {path} has format {found}, this haechi reads format {STORE_FORMAT}: replay into a fresh --data-dir (or keep the older haechi for it)")]
    Format { path: String, found: String },
}

/// The layout of the records; a store written with another one is upgraded
/// at open when this haechi knows how (`migrate`), refused otherwise
/// rather than misread. 2: events' idempotency records moved into their
/// listing's record. 3: writes go through a log in `wal/` first. 4:
/// verdicts in postcard, band and price samples fixed-width. 5: verdicts'
/// shared strings in a dictionary (`dict`). 2 to 4 are upgraded in place.
pub const STORE_FORMAT: u32 = 5;

/// The keyspaces [`Store::track_keys`] keeps in memory with
/// [`HistoryConfig::resident_history`]: the history's records every event
/// reads. Listings (idempotency, edits), review cases and the rest stay in
/// sled behind the read cache.
const RESIDENT: &[u8] = &[keys::SELLER, keys::BAND, keys::PRICE, keys::IDENT];

/// The log's directory inside the store's directory.
const WAL_DIR: &str = "wal";
/// The history image of a store with resident keyspaces (see [`image`]).
const HISTORY_DIR: &str = "history";

/// The META key of the last day compacted.
const COMPACTED_DAY: &[u8] = b"mcompacted_day";

/// The META key of [`Store`]'s `first_event` bound.
const FIRST_EVENT: &[u8] = b"mfirst_event_ms";

pub type Result<T> = std::result::Result<T, StoreError>;

/// Keyspace prefixes. One byte each, followed by the key proper.
pub(crate) mod keys {
    pub const SELLER: u8 = b's';
    pub const LISTING: u8 = b'l';
    /// Moderator decisions applied (idempotency); events' records live in
    /// their listing's record.
    pub const EVENT: u8 = b'e';
    pub const IDENT: u8 = b'i';
    pub const BAND: u8 = b'b';
    pub const PRICE: u8 = b'p';
    pub const META: u8 = b'm';
    pub const CASE: u8 = b'c';
    pub const AUDIT: u8 = b'a';
    pub const QUEUE: u8 = b'q';
    /// The verdict dictionary (see [`crate::dict`]).
    pub const DICT: u8 = b'd';

    pub fn key(prefix: u8, id: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(id.len() + 1);
        k.push(prefix);
        k.extend_from_slice(id.as_bytes());
        k
    }

    pub fn key_bytes(prefix: u8, id: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(id.len() + 1);
        k.push(prefix);
        k.extend_from_slice(id);
        k
    }
}

/// Tunables of the history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryConfig {
    /// Idempotency records and identifier links older than this (by event
    /// time), and products not listed within it, are dropped by
    /// [`Store::compact`].
    pub retention_days: i64,
    /// Near-duplicate text counts only within this window.
    pub duplicate_window_days: i64,
    /// Identifier links count only within this window.
    pub ident_window_days: i64,
    /// Compaction runs when the event time has advanced this many days
    /// since the last one: the store holds at most this much beyond the
    /// retention. (Daily, a replay of a month spent most of its time
    /// compacting: 400k events, 2 workers, 18.2k → 11.8k events/s.)
    pub compact_every_days: i64,
    /// sled's page cache, in MB: memory for speed. On the 400k day set
    /// (2 workers, BENCHMARKS.md): 128 → 64 MB took peak RSS down by 45–65
    /// MB (442 → 397, 447 → 381) and throughput down 15–20%.
    pub cache_mb: u64,
    /// Keep the history's records that every event reads (sellers, text
    /// bands, prices, identifier links) wholly in memory during long runs:
    /// memory for speed, growing with the number of sellers and with the
    /// listings within the duplicate window (sellers are never dropped).
    /// On disk they then live in the history image (`<data-dir>/history/`,
    /// see [`image`]), not in sled: writes reach it by checkpoints, one
    /// delta file each, and a store with an image loads it at every open
    /// (one-off commands too: 2.2 s for 355k sellers). Turned off again, the
    /// next long run moves them back into sled. Measured (BENCHMARKS.md,
    /// 13th session, 2 workers): 400k-event replay 25.5k → 39.6k events/s
    /// for +6 MB peak RSS; 1M events (355k sellers) 18.1k → 30.9k for +125
    /// MB. Off: sled's page cache bounds that memory.
    pub resident_history: bool,
    /// With `resident_history`: distinct keys of held-back writes past
    /// which a checkpoint writes them into the history image (also after
    /// 256 flushes or 30 s). Smaller: less memory and less log to apply
    /// after a crash, more and smaller delta files (merged in the
    /// background). 250,000 → 64,000 took 40–45 MB off peak RSS at the same
    /// speed (BENCHMARKS.md, 12th session).
    pub checkpoint_keys: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            retention_days: 30,
            duplicate_window_days: 14,
            ident_window_days: 30,
            compact_every_days: 7,
            cache_mb: 128,
            resident_history: false,
            checkpoint_keys: 64_000,
        }
    }
}

const DAY_MS: i64 = 86_400_000;

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn time(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // postcard cannot fail on these plain structs; an empty value would
    // surface as Corrupt on read rather than be silently wrong.
    postcard::to_allocvec(v).unwrap_or_default()
}

/// [`encode`] straight into a stored value: serialized into a buffer the
/// thread keeps, then copied into the value's one allocation (a growing
/// vector took about six, and the value one more).
pub(crate) fn encode_value<T: Serialize>(v: &T) -> sled::IVec {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 16 << 10]);
    }
    SCRATCH.with_borrow_mut(|buf| match postcard::to_slice(v, buf) {
        Ok(bytes) => sled::IVec::from(&*bytes),
        // Larger than the buffer (a listing with thousands of events).
        Err(_) => sled::IVec::from(encode(v)),
    })
}

fn ident_key(kind: IdentKind, value: &str) -> Vec<u8> {
    let kind = kind.as_str();
    let mut k = Vec::with_capacity(2 + kind.len() + value.len());
    k.push(keys::IDENT);
    k.extend_from_slice(kind.as_bytes());
    k.push(b':');
    k.extend_from_slice(value.as_bytes());
    k
}

/// The records one event's history reads found (decoded), passed from
/// [`Store::snapshot_with`] before the decision to [`Store::record_with`]
/// after it, which would otherwise read and decode them all again. Only
/// used while the store's commit count is what it was when they were read
/// (a moderator's decision committed in between makes the record read
/// afresh). `None` at any level: not read.
#[derive(Debug, Default)]
pub struct EventReads {
    commits: Option<u64>,
    listing: Option<Option<ListingRecord>>,
    seller: Option<Option<SellerRecord>>,
    /// One per identifier of the analysis, in its order.
    idents: Option<Vec<Option<IdentRecord>>>,
    /// One per band of the analysis, in its order (read only where bands
    /// are not resident: there they stay decoded, see
    /// [`overlay::Overlay::read_typed`]).
    bands: Option<Vec<Option<BandRecord>>>,
    /// The product's price record (likewise).
    price: Option<Vec<Option<PriceRecord>>>,
    /// The keys of the listing, seller and price records as built by the
    /// reads (valid whatever was committed since: they name, not hold).
    keys: EventKeys,
}

/// See [`EventReads::keys`].
#[derive(Debug, Default)]
struct EventKeys {
    listing: Option<Vec<u8>>,
    seller: Option<Vec<u8>>,
    price: Option<Vec<u8>>,
    /// One per identifier of the analysis, in its order.
    idents: Option<smallvec::SmallVec<[Vec<u8>; 4]>>,
}

/// The key kept in `slot`, built there first if need be.
fn key_in<'k>(slot: &'k mut Option<Vec<u8>>, prefix: u8, id: &str) -> &'k Vec<u8> {
    slot.get_or_insert_with(|| keys::key(prefix, id))
}

/// The key kept in `slot` (taken: for a write), else built.
fn key_from(slot: &mut Option<Vec<u8>>, prefix: u8, id: &str) -> Vec<u8> {
    slot.take().unwrap_or_else(|| keys::key(prefix, id))
}

/// The store.
#[derive(Debug)]
pub struct Store {
    db: sled::Db,
    overlay: std::sync::Arc<Overlay>,
    config: HistoryConfig,
    /// The latest event time recorded, persisted at each flush.
    last_event: std::sync::atomic::AtomicI64,
    /// A lower bound of every time stamped in the history (the earliest
    /// event recorded), persisted with `last_event`: compaction skips a
    /// keyspace whose cut-off is not past it (nothing there can be old
    /// enough). `i64::MAX`: nothing recorded yet; `i64::MIN`: unknown (a
    /// store from before it was kept, or state restored from a changelog).
    first_event: std::sync::atomic::AtomicI64,
    /// The last day (of event time) compacted or being compacted (the
    /// stored "compacted_day" at open; the thread stores it when done).
    compacted_day: std::sync::atomic::AtomicI64,
    /// The compaction running on its own thread, if any.
    compacting: std::sync::Mutex<Option<std::thread::JoinHandle<Result<u64>>>>,
    /// Tells a running compaction to stop (the store is closing).
    stop_compaction: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The thread whose flushes make everything durable, if one claimed
    /// them ([`Store::own_flushes`]); the others wait for its flushes.
    flush_owner: std::sync::Mutex<Option<std::thread::ThreadId>>,
    /// Flushes of other threads waiting for the owner's.
    flush_waiters: std::sync::atomic::AtomicUsize,
    /// The verdict dictionary entries met so far.
    dict: dict::Dict,
}

/// How long a flush from another thread waits for the owner's flush.
const OWNER_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Drop for Store {
    /// Stops a running compaction and waits for it (its writes not yet
    /// flushed are dropped: the next one redoes them). Nothing else is
    /// flushed here: an event loop that stops on an error must not make its
    /// half-delivered batch durable.
    fn drop(&mut self) {
        self.stop_compaction
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = self.join_compaction() {
            tracing::warn!(error = %e, "compaction at close");
        }
    }
}

/// Opens a sled database, waiting up to [`LOCK_WAIT`] for its file lock:
/// sled releases the lock of a database this process just closed on a
/// background thread, a moment after the last handle is dropped (reopening
/// at once failed now and then on a loaded machine: "could not acquire
/// lock … Resource temporarily unavailable"). Another process holding it
/// still gets the error, after the wait.
pub fn open_db(config: sled::Config) -> sled::Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => return opened,
        }
    }
}

/// See [`open_db`].
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Store {
    /// Opens (or creates) the store in a directory. sled allows one process
    /// per database; a second one gets a clear error (after [`open_db`]'s
    /// wait for the lock).
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_with(path, HistoryConfig::default())
    }

    pub fn open_with(path: &Path, config: HistoryConfig) -> Result<Store> {
        let db = open_db(
            sled::Config::new()
                .path(path)
                .cache_capacity(config.cache_mb.max(1) << 20)
                .flush_every_ms(None),
        )
        .map_err(|source| StoreError::Open {
            path: format!(
                "{} (is another haechi process using it? sled allows one process per store)",
                path.display()
            ),
            source,
        })?;
        let upgrade_from = check_format(&db, path)?;
        // A format-3 log holds format-3 records: applied before the upgrade.
        let overlay = Overlay::open(
            db.clone(),
            &path.join(WAL_DIR),
            &path.join(HISTORY_DIR),
            RESIDENT,
            config.checkpoint_keys.max(1),
        )?;
        if let Some(from) = upgrade_from {
            migrate::upgrade(&db, from)?;
        }
        let compacted_day = decode::<i64>(COMPACTED_DAY, overlay.get(COMPACTED_DAY)?)?;
        let first_event = match decode::<i64>(FIRST_EVENT, overlay.get(FIRST_EVENT)?)? {
            Some(t) => t,
            // Events recorded before the bound was kept: unknown.
            None if overlay
                .get(&keys::key(keys::META, "last_event_ms"))?
                .is_some() =>
            {
                i64::MIN
            }
            None => i64::MAX,
        };
        Ok(Store {
            overlay: std::sync::Arc::new(overlay),
            db,
            config,
            last_event: std::sync::atomic::AtomicI64::new(i64::MIN),
            first_event: std::sync::atomic::AtomicI64::new(first_event),
            compacted_day: std::sync::atomic::AtomicI64::new(compacted_day.unwrap_or(i64::MIN)),
            compacting: std::sync::Mutex::new(None),
            stop_compaction: Default::default(),
            flush_owner: std::sync::Mutex::new(None),
            flush_waiters: Default::default(),
            dict: dict::Dict::default(),
        })
    }

    /// For long runs (replay, `haechi run`, training): reads every key once
    /// and keeps the keys in a filter, so that looking up a key the store
    /// never held (a new listing, seller, text band) skips sled; with
    /// [`HistoryConfig::resident_history`] the history's records (sellers,
    /// text bands, prices, identifiers) are kept in memory from then on
    /// (see [`overlay`]). One-off commands leave it.
    pub fn track_keys(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let (keys, resident) = self.overlay.track_keys(self.config.resident_history)?;
        tracing::info!(
            keys,
            resident,
            seconds = started.elapsed().as_secs_f64(),
            "store keys indexed"
        );
        Ok(())
    }

    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        decode(key, self.overlay.get(key)?)
    }

    /// The verdict already given to this event of this listing, if it was
    /// processed before.
    pub fn seen(&self, listing_id: &str, event_id: &str) -> Result<Option<Verdict>> {
        Ok(self.seen_json(listing_id, event_id)?.map(|(v, _)| v))
    }

    /// [`Store::seen`] with the verdict's JSON: the bytes first emitted.
    pub fn seen_json(&self, listing_id: &str, event_id: &str) -> Result<Option<(Verdict, String)>> {
        self.seen_json_with(listing_id, event_id, &mut EventReads::default())
    }

    /// The reads of one event, to pass through [`Store::seen_json_with`],
    /// [`Store::snapshot_with`] and [`Store::record_with`] in that order.
    pub fn event_reads(&self) -> EventReads {
        EventReads {
            commits: Some(self.overlay.commits()),
            ..EventReads::default()
        }
    }

    /// [`Store::seen_json`], keeping the listing's record in `reads`.
    pub fn seen_json_with(
        &self,
        listing_id: &str,
        event_id: &str,
        reads: &mut EventReads,
    ) -> Result<Option<(Verdict, String)>> {
        let key = key_in(&mut reads.keys.listing, keys::LISTING, listing_id);
        let Some(rec) = self.read(&mut reads.listing, key)? else {
            return Ok(None);
        };
        let Some(stored) = rec.event(event_id).and_then(|e| e.verdict.as_ref()) else {
            return Ok(None);
        };
        let verdict = self
            .dict
            .verdict(stored, event_id, listing_id, |k| self.overlay.get(k))?;
        serde_json::to_string(&verdict)
            .map(|json| Some((verdict, json)))
            .map_err(|e| StoreError::Corrupt {
                key: format!("listing {listing_id} event {event_id}"),
                message: e.to_string(),
            })
    }

    pub fn seller(&self, seller_id: &str) -> Result<Option<SellerRecord>> {
        self.get(&keys::key(keys::SELLER, seller_id))
    }

    pub fn listing(&self, listing_id: &str) -> Result<Option<ListingRecord>> {
        self.get(&keys::key(keys::LISTING, listing_id))
    }

    /// What the engine needs to know before deciding on `listing`.
    pub fn snapshot(&self, listing: &Listing, analysis: &Analysis) -> Result<SellerSnapshot> {
        self.snapshot_with(listing, analysis, &mut EventReads::default())
    }

    /// [`Store::snapshot`], keeping what it read in `reads` for
    /// [`Store::record_with`].
    pub fn snapshot_with(
        &self,
        listing: &Listing,
        analysis: &Analysis,
        reads: &mut EventReads,
    ) -> Result<SellerSnapshot> {
        let now = ms(listing.created_at);
        let seller_key = key_in(&mut reads.keys.seller, keys::SELLER, &listing.seller_id);
        let ident_keys = reads.keys.idents.get_or_insert_with(|| {
            analysis
                .facts
                .idents
                .iter()
                .map(|i| ident_key(i.kind, &i.value))
                .collect()
        });
        let price_key = (listing.price > 0)
            .then(|| key_in(&mut reads.keys.price, keys::PRICE, &analysis.product_key));
        // Resident records asked for together: their cache misses overlap
        // (with a million sellers and their text bands in memory, nearly
        // every read is one): +15% history cycles per second, +9% events
        // per second in a resident replay (BENCHMARKS.md, 15th session).
        if self.config.resident_history {
            let mut wanted: smallvec::SmallVec<[&[u8]; 6]> = smallvec::smallvec![&seller_key[..]];
            wanted.extend(ident_keys.iter().map(Vec::as_slice));
            wanted.extend(price_key.map(Vec::as_slice));
            self.overlay.prefetch(&wanted, &analysis.bands);
        }
        let mut snap = SellerSnapshot {
            joined_at: listing.seller_joined_at,
            ..SellerSnapshot::default()
        };
        if let Some(s) = self.read(&mut reads.seller, seller_key)? {
            let within = |w: i64| {
                s.recent
                    .iter()
                    .filter(|&&t| t <= now && now - t < w)
                    .count() as u32
            };
            snap.known = true;
            snap.first_seen = time(s.first_seen);
            snap.last_seen = time(s.last_seen);
            snap.joined_at = snap.joined_at.or(s.joined_at.and_then(time));
            snap.listings_1h = within(3_600_000);
            snap.listings_24h = within(DAY_MS);
            snap.listings_7d = within(7 * DAY_MS);
            snap.listings_total = s.total;
            snap.distinct_categories = s.categories.len() as u32;
            snap.reviewed = s.reviewed;
            snap.blocked = s.blocked;
            snap.confirmed_fraud = s.confirmed_fraud;
            snap.cleared = s.cleared;
            if let Some(fp) = analysis.fingerprint {
                snap.own_reposts_7d = s.reposts(fp, now);
            }
        }
        if listing.event != EventKind::Created {
            let retention = self.config.retention_days;
            let key = key_in(&mut reads.keys.listing, keys::LISTING, &listing.listing_id);
            if let Some(l) = self
                .read(&mut reads.listing, key)?
                .as_ref()
                .filter(|l| !listing_is_stale(l, now, retention))
            {
                snap.previous = Some(PreviousVersion {
                    had_contact: l.had_contact,
                    action: l.action,
                });
            }
        }
        let horizon = now - self.config.ident_window_days * DAY_MS;
        let idents = ident_keys
            .iter()
            .map(|k| self.get::<IdentRecord>(k))
            .collect::<Result<Vec<_>>>()?;
        for (ident, rec) in analysis.facts.idents.iter().zip(&idents) {
            let Some(rec) = rec else {
                continue;
            };
            let others = rec
                .sellers
                .iter()
                .filter(|(s, t)| s != &listing.seller_id && *t >= horizon)
                .count() as u32;
            snap.shared_idents.push(SharedIdent {
                kind: ident.kind,
                value: ident.value.clone(),
                other_sellers: others,
                fraud_sellers: rec.fraud_sellers.len() as u32,
            });
        }
        reads.idents = Some(idents);
        snap.duplicate_text_sellers =
            self.overlay
                .read_bands(&analysis.bands, &mut reads.bands, |recs| {
                    self.duplicate_sellers(listing, recs, now)
                })?;
        if let Some(key) = price_key {
            let retention = self.config.retention_days;
            if let Some((usual, samples)) = self.overlay.read_typed(
                std::slice::from_ref(key),
                &mut reads.price,
                |recs: &[Option<&PriceRecord>]| {
                    recs.first()
                        .copied()
                        .flatten()
                        .filter(|p| !price_is_stale(p, now, retention))
                        .map(|p| (p.median(), p.samples.len() as u32))
                },
            )? {
                snap.usual_price = usual;
                snap.price_samples = samples;
            }
        }
        Ok(snap)
    }

    /// `slot` if it was read already, else the record under `key`, kept in it.
    fn read<'r, T: DeserializeOwned>(
        &self,
        slot: &'r mut Option<Option<T>>,
        key: &[u8],
    ) -> Result<&'r Option<T>> {
        if slot.is_none() {
            *slot = Some(self.get(key)?);
        }
        Ok(slot.get_or_insert(None))
    }

    /// Other sellers who posted text sharing at least two MinHash bands with
    /// this one within the duplicate window (`bands`: the band records).
    fn duplicate_sellers(
        &self,
        listing: &Listing,
        bands: &[overlay::BandView<'_>],
        now: i64,
    ) -> u32 {
        let horizon = now - self.config.duplicate_window_days * DAY_MS;
        let me = seller_hash(&listing.seller_id);
        let others = bands.iter().flatten().map(|sellers| {
            sellers
                .iter()
                .filter(move |&&(s, t)| s != me && t >= horizon)
                .map(|&(s, _)| s)
        });
        records::sellers_in_two_buckets(others)
    }

    /// Records a decided event: its idempotency record, its seller's
    /// history, its listing's state, the cross-seller indexes, the usual
    /// price, and (for review and block verdicts) its review case — all as
    /// one unit. Recording an event a second time changes nothing.
    pub fn record(&self, listing: &Listing, analysis: &Analysis, verdict: &Verdict) -> Result<()> {
        self.record_with(listing, analysis, verdict, EventReads::default())
    }

    /// [`Store::record`] using what [`Store::seen_json_with`] and
    /// [`Store::snapshot_with`] read for the event, when nothing was
    /// committed since [`Store::event_reads`] (else it reads again).
    pub fn record_with(
        &self,
        listing: &Listing,
        analysis: &Analysis,
        verdict: &Verdict,
        mut reads: EventReads,
    ) -> Result<()> {
        let mut tx = self.overlay.begin();
        if reads.commits != Some(tx.commits()) {
            reads = EventReads {
                keys: reads.keys,
                ..EventReads::default()
            };
        }
        let listing_key = key_from(&mut reads.keys.listing, keys::LISTING, &listing.listing_id);
        let now = ms(listing.created_at);
        let previous: Option<ListingRecord> = tx.reuse(&listing_key, reads.listing)?;
        if previous
            .as_ref()
            .is_some_and(|l| l.event(&listing.event_id).is_some())
        {
            return Ok(());
        }
        // Past the retention the listing starts afresh, as if compacted.
        let previous = previous.filter(|p| !listing_is_stale(p, now, self.config.retention_days));

        // The seller.
        let seller_key = key_from(&mut reads.keys.seller, keys::SELLER, &listing.seller_id);
        let mut s: SellerRecord = tx
            .reuse(&seller_key, reads.seller)?
            .unwrap_or(SellerRecord {
                first_seen: now,
                last_seen: now,
                ..SellerRecord::default()
            });
        s.first_seen = s.first_seen.min(now);
        s.last_seen = s.last_seen.max(now);
        if let Some(j) = listing.seller_joined_at {
            s.joined_at = Some(ms(j));
        }
        if listing.event == EventKind::Created {
            s.total += 1;
            s.add_recent(now);
            if let Some(fp) = analysis.fingerprint {
                s.add_text(fp, now);
            }
            if let Some(c) = &listing.category {
                if !s.categories.contains(c) && s.categories.len() < 64 {
                    s.categories.push(c.clone());
                }
            }
        }
        match verdict.action {
            Action::Allow => {}
            Action::Review => s.reviewed += 1,
            Action::Block => s.blocked += 1,
        }
        tx.put(seller_key, encode_value(&s));

        // The listing.
        let idents: Vec<String> = analysis
            .facts
            .idents
            .iter()
            .map(|i| format!("{}:{}", i.kind.as_str(), i.value))
            .collect();
        // Its state, and the event's idempotency record with the verdict.
        let mut events = previous.map(|p| p.events).unwrap_or_default();
        let mut entries = dict::Entries::default();
        let capture = tx.captured();
        let stored = self
            .dict
            .store(verdict, capture, |k| tx.get(k), &mut entries)?;
        events.push(EventRecord {
            event_id: listing.event_id.clone(),
            at: now,
            verdict: Some(stored),
        });
        let listing_rec = ListingRecord {
            seller_id: listing.seller_id.clone(),
            had_contact: !idents.is_empty(),
            action: verdict.action,
            deleted: listing.event == EventKind::Deleted,
            last_event: listing.event_id.clone(),
            idents,
            events,
        };

        if listing.event != EventKind::Deleted {
            // Identifier index.
            let mut read_idents = reads.idents.unwrap_or_default().into_iter();
            let mut ident_keys = reads.keys.idents.take().unwrap_or_default().into_iter();
            for ident in &analysis.facts.idents {
                let k = ident_keys
                    .next()
                    .unwrap_or_else(|| ident_key(ident.kind, &ident.value));
                let mut rec: IdentRecord = tx.reuse(&k, read_idents.next())?.unwrap_or_default();
                rec.touch(&listing.seller_id, now);
                tx.put(k, encode_value(&rec));
            }
            // Near-duplicate text index.
            let mut read_bands = reads.bands.unwrap_or_default().into_iter();
            let seller = seller_hash(&listing.seller_id);
            for &b in &analysis.bands {
                tx.touch_band(b, read_bands.next(), seller, now)?;
            }
            // Usual price: learn from every priced listing, whatever its
            // verdict. The median of the last samples shrugs off the few scams
            // among them, and keeping the history independent of verdicts
            // means training (rules-only) and serving (with the model) see
            // the same features.
            if listing.price > 0 {
                let k = key_from(&mut reads.keys.price, keys::PRICE, &analysis.product_key);
                let (price, retention) = (listing.price, self.config.retention_days);
                let read = reads.price.and_then(|v| v.into_iter().next());
                tx.update(k, read, move |rec: &mut PriceRecord| {
                    if price_is_stale(rec, now, retention) {
                        *rec = PriceRecord::default();
                    }
                    rec.add(price, now);
                })?;
            }
        }

        // The review case.
        if verdict.action.is_flag() && listing.event != EventKind::Deleted {
            review::open_case(&mut tx, listing, analysis, verdict, &s)?;
        }

        tx.put(listing_key, encode_value(&listing_rec));
        for (k, v) in std::mem::take(&mut entries.writes) {
            tx.put(k, v);
        }
        tx.commit();
        self.dict.committed(entries);
        self.last_event
            .fetch_max(now, std::sync::atomic::Ordering::Relaxed);
        self.first_event
            .fetch_min(now, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// A moderator confirmed a listing fraudulent (`fraud = true`) or cleared
    /// it: the seller and (for fraud) every identifier it used are marked,
    /// so the next listing reaching the buyer through them is caught.
    pub fn apply_decision(&self, listing_id: &str, seller_id: &str, fraud: bool) -> Result<()> {
        let mut tx = self.overlay.begin();
        decision_writes(&mut tx, listing_id, seller_id, fraud)?;
        tx.commit();
        Ok(())
    }

    /// [`Store::apply_decision`] at most once per `decision_id` (a decision
    /// redelivered from Kafka after a crash is not counted twice). Returns
    /// whether it was applied now.
    pub fn apply_decision_once(
        &self,
        decision_id: &str,
        listing_id: &str,
        seller_id: &str,
        fraud: bool,
    ) -> Result<bool> {
        let key = keys::key(keys::EVENT, &format!("decision:{decision_id}"));
        let at = self.last_event.load(std::sync::atomic::Ordering::Relaxed);
        // Its record is stamped with the latest event time (compaction
        // drops it after the retention): the bound must cover it.
        self.first_event
            .fetch_min(at, std::sync::atomic::Ordering::Relaxed);
        let mut tx = self.overlay.begin();
        if tx.get(&key)?.is_some() {
            return Ok(false);
        }
        decision_writes(&mut tx, listing_id, seller_id, fraud)?;
        tx.put(
            key,
            encode(&EventRecord {
                event_id: decision_id.to_owned(),
                at,
                verdict: None,
            }),
        );
        tx.commit();
        Ok(true)
    }

    /// The latest event time recorded (drives retention in replays).
    pub fn last_event_time(&self) -> Result<Option<DateTime<Utc>>> {
        let mem = self.last_event.load(std::sync::atomic::Ordering::Relaxed);
        let k = keys::key(keys::META, "last_event_ms");
        let stored = self.get::<i64>(&k)?.unwrap_or(i64::MIN);
        Ok(Some(mem.max(stored))
            .filter(|&t| t > i64::MIN)
            .and_then(time))
    }

    /// Drops what is older than the retention, relative to the latest event
    /// time: idempotency records, identifier links, band entries, products
    /// not listed within it. Returns the number of records removed or
    /// rewritten.
    /// Synchronous, with everything in sled first (see [`compaction`]).
    pub fn compact(&self) -> Result<u64> {
        self.finish_compaction()?;
        self.overlay.settle()?;
        let changed = match self.last_event_time()? {
            Some(last) => self.compactor().compact_at(day_start(ms(last)))?,
            None => 0,
        };
        self.flush()?;
        Ok(changed)
    }

    fn compactor(&self) -> Compactor {
        Compactor {
            db: self.db.clone(),
            overlay: std::sync::Arc::clone(&self.overlay),
            config: self.config.clone(),
            stop: std::sync::Arc::clone(&self.stop_compaction),
            may_flush: !self.flushes_owned(),
            first_event: self.first_event.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Compaction every [`HistoryConfig::compact_every_days`] of event time,
    /// on its own thread: the event loops call this between events and go
    /// on. The first event of the day it is due starts it, with the
    /// retention counted from the start of that day
    /// (see [`compaction`] for why verdicts do not depend on when it runs).
    /// Returns whether one was started.
    pub fn compact_if_due(&self) -> Result<bool> {
        use std::sync::atomic::Ordering::Relaxed;
        let last = self.last_event.load(Relaxed);
        let every = self.config.compact_every_days.max(1);
        let due = |done: i64| done.saturating_add(every) <= last.div_euclid(DAY_MS);
        if last == i64::MIN || !due(self.compacted_day.load(Relaxed)) {
            return Ok(false);
        }
        let mut running = self.compacting.lock().unwrap_or_else(|p| p.into_inner());
        if running.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(false); // the next call starts it
        }
        if let Some(h) = running.take() {
            report_compaction(h)?;
        }
        let day = last.div_euclid(DAY_MS);
        self.compacted_day.store(day, Relaxed);
        let compactor = self.compactor();
        let handle = std::thread::Builder::new()
            .name("haechi-compact".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let changed = compactor.compact_at(day * DAY_MS)?;
                if compactor.stopped() {
                    return Ok(changed); // the day is not done
                }
                let mut tx = compactor.overlay.begin_unjournaled();
                tx.put(COMPACTED_DAY.to_vec(), encode(&day));
                tx.commit();
                tracing::info!(
                    day,
                    changed,
                    seconds = started.elapsed().as_secs_f64(),
                    "store compacted"
                );
                Ok(changed)
            })
            .map_err(|e| StoreError::Wal(format!("starting a compaction: {e}")))?;
        *running = Some(handle);
        Ok(true)
    }

    /// Waits for the running compaction, if any.
    fn join_compaction(&self) -> Result<()> {
        let running = self
            .compacting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        running.map_or(Ok(()), report_compaction)
    }

    /// Waits for a running compaction, then runs the one due, if any, here,
    /// and flushes: the end of a replay leaves the same store whatever the
    /// timing.
    pub fn finish_compaction(&self) -> Result<()> {
        self.join_compaction()?;
        // Everything in sled first: the scan then sees every record.
        self.flush()?;
        self.overlay.settle()?;
        if self.compact_if_due()? {
            self.join_compaction()?;
        }
        self.flush()
    }

    /// Makes every write so far durable: one log file, fsynced. With a
    /// flush owner (the Kafka loop), another thread's flush instead waits
    /// for the owner's next one: flushing itself would make the owner's
    /// half-delivered batch durable before its changelog is out.
    pub fn flush(&self) -> Result<()> {
        let owner = *self.flush_owner.lock().unwrap_or_else(|p| p.into_inner());
        if owner.is_some_and(|o| o != std::thread::current().id()) {
            use std::sync::atomic::Ordering::SeqCst;
            let point = self.overlay.durable_point();
            self.flush_waiters.fetch_add(1, SeqCst);
            let durable = self.overlay.wait_durable(point, OWNER_FLUSH_WAIT);
            self.flush_waiters.fetch_sub(1, SeqCst);
            if !durable? {
                return Err(StoreError::Wal(format!(
                    "not durable yet: the event loop has not flushed for {} s (the write \
                     stays pending and becomes durable with its next flush)",
                    OWNER_FLUSH_WAIT.as_secs()
                )));
            }
            return Ok(());
        }
        self.note_last_event();
        self.overlay.flush()
    }

    /// [`Store::flush`] without waiting for the log file, which the
    /// applier thread writes (see [`Overlay::flush_behind`]): for replays,
    /// whose periodic flushes bound memory and what a crash can undo. The
    /// next [`Store::flush`] makes it durable. With a flush owner (the Kafka
    /// loop), the same as [`Store::flush`].
    pub fn flush_behind(&self) -> Result<()> {
        if self
            .flush_owner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return self.flush();
        }
        self.note_last_event();
        self.overlay.flush_behind()
    }

    /// Sets the writes so far apart from those to come (see
    /// [`Store::flush_sealed`]). For the thread that owns the flushes.
    pub fn seal(&self) -> Result<()> {
        self.note_last_event();
        self.overlay.seal()
    }

    /// Makes the writes set apart by [`Store::seal`] durable, not those
    /// committed since: the Kafka loop judges the next batch while the last
    /// one's are flushed (by a helper of the thread owning the flushes; a
    /// flush of everything, [`Store::flush`], flushes these first).
    pub fn flush_sealed(&self) -> Result<()> {
        self.overlay.flush_sealed()
    }

    /// From now on only this thread's flushes write the log; other threads'
    /// [`Store::flush`] wait for them (the Kafka loop: a moderator's write
    /// must not make a batch durable before the batch's changelog is
    /// delivered). The owner must then also flush when idle with writes
    /// pending.
    pub fn own_flushes(&self) {
        *self.flush_owner.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(std::thread::current().id());
    }

    /// Undoes [`Store::own_flushes`].
    pub fn release_flushes(&self) {
        *self.flush_owner.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Whether another thread waits for the owner's flush.
    pub fn flush_wanted(&self) -> bool {
        self.flush_waiters.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    fn flushes_owned(&self) -> bool {
        self.flush_owner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The latest event time goes with the writes it covers.
    fn note_last_event(&self) {
        let last = self.last_event.load(std::sync::atomic::Ordering::Relaxed);
        if last > i64::MIN && self.overlay.pending() > 0 {
            let mut tx = self.overlay.begin();
            tx.put(keys::key(keys::META, "last_event_ms"), encode(&last));
            let first = self.first_event.load(std::sync::atomic::Ordering::Relaxed);
            tx.put(FIRST_EVENT.to_vec(), encode(&first));
            tx.commit();
        }
    }

    /// State came from elsewhere (a changelog restore): its times are not
    /// bounded by this store's events any more.
    pub(crate) fn forget_first_event(&self) {
        self.first_event
            .store(i64::MIN, std::sync::atomic::Ordering::Relaxed);
        let mut tx = self.overlay.begin_unjournaled();
        tx.put(FIRST_EVENT.to_vec(), encode(&i64::MIN));
        tx.commit();
    }

    /// Writes not yet flushed (a flush is due when this grows).
    pub fn pending(&self) -> usize {
        self.overlay.pending()
    }

    /// Bytes on disk (sled's files, the log not yet applied and the history
    /// image).
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()? + self.overlay.file_bytes())
    }

    /// Number of records per keyspace (for reports and tests).
    pub fn counts(&self) -> Result<std::collections::BTreeMap<char, u64>> {
        Ok(self
            .stats(|_| ())?
            .keyspaces
            .into_iter()
            .map(|k| (k.prefix, k.records))
            .collect())
    }

    /// What the store holds, keyspace by keyspace (`haechi store stats`):
    /// reads every record once, calling `progress` with the count every
    /// 100,000. Waits for a running compaction and the applier first.
    pub fn stats(&self, mut progress: impl FnMut(u64)) -> Result<StoreStats> {
        self.finish_compaction()?;
        self.overlay.settle()?;
        let mut spaces: std::collections::BTreeMap<u8, KeyspaceStats> = Default::default();
        let mut tally = |p: u8, records: u64, bytes: u64, largest: u64| {
            let space = spaces.entry(p).or_insert_with(|| KeyspaceStats {
                prefix: p as char,
                name: keyspace_name(p),
                ..Default::default()
            });
            space.records += records;
            space.bytes += bytes;
            space.largest = space.largest.max(largest);
        };
        let mut seen = 0u64;
        for item in self.db.iter() {
            let (k, v) = item?;
            let Some(&p) = k.first() else { continue };
            tally(p, 1, (k.len() + v.len()) as u64, v.len() as u64);
            seen += 1;
            if seen % 100_000 == 0 {
                progress(seen);
            }
        }
        // Resident keyspaces are in memory (and the history image), not sled.
        for (p, records, bytes, largest) in self.overlay.resident_stats() {
            tally(p, records, bytes, largest);
        }
        let meta = |key: &[u8]| -> Result<Option<String>> {
            Ok(decode::<i64>(key, self.overlay.get(key)?)?
                .filter(|&ms| ms != i64::MIN && ms != i64::MAX)
                .and_then(time)
                .map(|t| t.to_rfc3339()))
        };
        let compacted = decode::<i64>(COMPACTED_DAY, self.overlay.get(COMPACTED_DAY)?)?;
        Ok(StoreStats {
            format: STORE_FORMAT,
            size_on_disk: self.size_on_disk()?,
            first_event: meta(FIRST_EVENT)?,
            last_event: meta(&keys::key(keys::META, "last_event_ms"))?,
            compacted_day: compacted
                .and_then(|d| time(d.saturating_mul(DAY_MS)))
                .map(|t| t.date_naive().to_string()),
            keyspaces: spaces.into_values().collect(),
        })
    }
}

/// What one keyspace of the store holds (see [`Store::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KeyspaceStats {
    /// The key prefix.
    pub prefix: char,
    pub name: &'static str,
    pub records: u64,
    /// Keys and values, in bytes.
    pub bytes: u64,
    /// The largest value, in bytes.
    pub largest: u64,
}

/// The store's contents in figures (see [`Store::stats`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreStats {
    pub format: u32,
    /// sled's files and the log not yet applied, in bytes.
    pub size_on_disk: u64,
    /// The earliest and latest event time recorded (RFC 3339), if known.
    pub first_event: Option<String>,
    pub last_event: Option<String>,
    /// The day of event time the last compaction counted from.
    pub compacted_day: Option<String>,
    pub keyspaces: Vec<KeyspaceStats>,
}

/// The name of a keyspace, for reports.
fn keyspace_name(prefix: u8) -> &'static str {
    match prefix {
        keys::SELLER => "sellers",
        keys::LISTING => "listings (with their events' verdicts)",
        keys::EVENT => "moderator decisions applied",
        keys::IDENT => "identifier links",
        keys::BAND => "near-duplicate text bands",
        keys::PRICE => "usual prices",
        keys::META => "meta",
        keys::CASE => "review cases",
        keys::AUDIT => "review audit log",
        keys::QUEUE => "review queue",
        keys::DICT => "verdict dictionary",
        _ => "other",
    }
}

/// The outcome of a compaction thread.
fn report_compaction(h: std::thread::JoinHandle<Result<u64>>) -> Result<()> {
    match h.join() {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(StoreError::Wal("the compaction thread panicked".into())),
    }
}

/// Stamps a new store; refuses one written in a format this haechi cannot
/// upgrade. Returns the format to upgrade from, if the store needs it.
fn check_format(db: &sled::Db, path: &Path) -> Result<Option<u32>> {
    let key = keys::key(keys::META, "format");
    let found: Option<u32> = match db.get(&key)? {
        Some(v) => postcard::from_bytes(&v).ok(),
        None if db.is_empty() => {
            db.insert(&key, encode(&STORE_FORMAT))?;
            db.flush()?;
            return Ok(None);
        }
        None => None,
    };
    match found {
        Some(STORE_FORMAT) => Ok(None),
        Some(from @ (2..=4)) => Ok(Some(from)),
        // An upgrade a crash interrupted: resumed.
        Some(f) if (2..=4).contains(&f.wrapping_sub(migrate::UPGRADING)) => {
            Ok(Some(f - migrate::UPGRADING))
        }
        _ => Err(StoreError::Format {
            path: path.display().to_string(),
            found: found.map_or("1 (unstamped)".into(), |f| f.to_string()),
        }),
    }
}

pub(crate) fn decode<T: DeserializeOwned>(
    key: &[u8],
    bytes: Option<impl AsRef<[u8]>>,
) -> Result<Option<T>> {
    match bytes {
        None => Ok(None),
        Some(v) => postcard::from_bytes(v.as_ref())
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                message: e.to_string(),
            }),
    }
}

/// The history writes of a moderator's decision (see [`Store::apply_decision`]).
fn decision_writes(
    tx: &mut overlay::Tx<'_>,
    listing_id: &str,
    seller_id: &str,
    fraud: bool,
) -> Result<()> {
    let seller_key = keys::key(keys::SELLER, seller_id);
    let mut s: SellerRecord = decode(&seller_key, tx.get(&seller_key)?)?.unwrap_or_default();
    if fraud {
        s.confirmed_fraud += 1;
    } else {
        s.cleared += 1;
    }
    tx.put(seller_key, encode_value(&s));
    if fraud {
        let lk = keys::key(keys::LISTING, listing_id);
        if let Some(l) = decode::<ListingRecord>(&lk, tx.get(&lk)?)? {
            for ident in &l.idents {
                let k = keys::key(keys::IDENT, ident);
                let mut rec: IdentRecord = decode(&k, tx.get(&k)?)?.unwrap_or_default();
                if !rec.fraud_sellers.iter().any(|x| x == seller_id) {
                    rec.fraud_sellers.push(seller_id.to_owned());
                }
                tx.put(k, encode_value(&rec));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_value_is_encode_small_or_past_its_buffer() {
        // Empty, a record-sized value, and one larger than the thread's
        // 16-KB buffer (the fallback).
        for n in [0usize, 300, 40_000] {
            let v: Vec<u64> = (0..n as u64).map(|i| i.wrapping_mul(0x9E37_79B9)).collect();
            assert_eq!(encode_value(&v).as_ref(), &encode(&v)[..], "{n} numbers");
        }
    }
}
