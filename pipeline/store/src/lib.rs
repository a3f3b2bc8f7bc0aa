//! # haechi-store
//!
//! Everything haechi remembers, in one sled database: per-seller history,
//! per-listing state (for edits) and the idempotency record of every processed
//! event.
//!
//! One sled tree, with a one-byte prefix per keyspace, so that everything one
//! event changes — its idempotency record, its seller, its listing — is written in ONE atomic `apply_batch`: after a crash either
//! all of an event's effects are there or none are, and reprocessing it (a
//! replay, a Kafka redelivery) finds its record and changes nothing. That is
//! the whole idempotency story: [`Store::seen`] before, [`Store::record`] after.
//!
//! The engine stays pure: [`Store::snapshot`] reads what the engine needs
//! before the decision, [`Store::record`] writes what the decision changed.
//! Only this crate knows sled.

use chrono::{DateTime, TimeZone, Utc};
use haechi_engine::history::{PreviousVersion, SellerSnapshot};
use haechi_engine::{Action, Analysis, EventKind, Listing, Verdict};
use serde::{Deserialize, Serialize};
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
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Keyspace prefixes. One byte each, followed by the key proper.
mod keys {
    pub const SELLER: u8 = b's';
    pub const LISTING: u8 = b'l';
    pub const EVENT: u8 = b'e';

    pub fn key(prefix: u8, id: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(id.len() + 1);
        k.push(prefix);
        k.extend_from_slice(id.as_bytes());
        k
    }
}

/// The longest list of recent listing times kept per seller: enough to count
/// any window up to 7 days exactly unless a seller posts more than this in a
/// week, when the counts saturate (they are burst signals, not bookkeeping).
const RECENT_CAP: usize = 256;
const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;

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
}

/// Per-listing state: what the previous version carried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListingRecord {
    pub seller_id: String,
    pub had_contact: bool,
    pub action: Action,
    pub deleted: bool,
    pub last_event: String,
}

/// What a processed event left behind: its verdict, to answer a redelivery
/// with the very same bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EventRecord {
    at: i64,
    verdict_json: String,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    /// Opens (or creates) the store in a directory. sled allows one process
    /// per database; a second one gets a clear error.
    pub fn open(path: &Path) -> Result<Store> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(64 << 20)
            .open()
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Store { db })
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>> {
        match self.db.get(key)? {
            None => Ok(None),
            Some(v) => postcard::from_bytes(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    key: String::from_utf8_lossy(key).into_owned(),
                    message: e.to_string(),
                }),
        }
    }

    /// The verdict already given to this event, if it was processed before.
    pub fn seen(&self, event_id: &str) -> Result<Option<Verdict>> {
        let key = keys::key(keys::EVENT, event_id);
        let Some(rec) = self.get::<EventRecord>(&key)? else {
            return Ok(None);
        };
        serde_json::from_str(&rec.verdict_json)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                key: String::from_utf8_lossy(&key).into_owned(),
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
    pub fn snapshot(&self, listing: &Listing, _analysis: &Analysis) -> Result<SellerSnapshot> {
        let mut snap = SellerSnapshot {
            joined_at: listing.seller_joined_at,
            ..SellerSnapshot::default()
        };
        if let Some(s) = self.seller(&listing.seller_id)? {
            let now = ms(listing.created_at);
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
            snap.listings_1h = within(3600 * 1000);
            snap.listings_24h = within(24 * 3600 * 1000);
            snap.listings_7d = within(WEEK_MS);
            snap.listings_total = s.total;
            snap.distinct_categories = s.categories.len() as u32;
            snap.reviewed = s.reviewed;
            snap.blocked = s.blocked;
            snap.confirmed_fraud = s.confirmed_fraud;
            snap.cleared = s.cleared;
        }
        if listing.event != EventKind::Created {
            if let Some(l) = self.listing(&listing.listing_id)? {
                snap.previous = Some(PreviousVersion {
                    had_contact: l.had_contact,
                    action: l.action,
                });
            }
        }
        Ok(snap)
    }

    /// Records a decided event: its idempotency record, its seller's history
    /// and its listing's state, in one atomic batch. Recording an event a
    /// second time changes nothing.
    pub fn record(&self, listing: &Listing, analysis: &Analysis, verdict: &Verdict) -> Result<()> {
        let event_key = keys::key(keys::EVENT, &listing.event_id);
        if self.db.contains_key(&event_key)? {
            return Ok(());
        }
        let now = ms(listing.created_at);
        let mut batch = sled::Batch::default();

        let seller_key = keys::key(keys::SELLER, &listing.seller_id);
        let mut s: SellerRecord = self.get(&seller_key)?.unwrap_or(SellerRecord {
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
            let pos = s.recent.partition_point(|&t| t <= now);
            s.recent.insert(pos, now);
            let horizon = s.last_seen - WEEK_MS;
            s.recent.retain(|&t| t > horizon);
            if s.recent.len() > RECENT_CAP {
                let excess = s.recent.len() - RECENT_CAP;
                s.recent.drain(..excess);
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
        batch.insert(seller_key, encode(&s));

        let listing_rec = ListingRecord {
            seller_id: listing.seller_id.clone(),
            had_contact: !analysis.facts.idents.is_empty(),
            action: verdict.action,
            deleted: listing.event == EventKind::Deleted,
            last_event: listing.event_id.clone(),
        };
        batch.insert(
            keys::key(keys::LISTING, &listing.listing_id),
            encode(&listing_rec),
        );

        let verdict_json = serde_json::to_string(verdict).map_err(|e| StoreError::Corrupt {
            key: listing.event_id.clone(),
            message: e.to_string(),
        })?;
        batch.insert(
            event_key,
            encode(&EventRecord {
                at: now,
                verdict_json,
            }),
        );
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Bytes on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // postcard cannot fail on these plain structs (no maps with non-string
    // keys, no unsupported types); an empty value would surface as Corrupt on read.
    postcard::to_allocvec(v).unwrap_or_default()
}
