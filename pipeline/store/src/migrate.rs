//! Stores written by earlier haechi versions, upgraded at open.
//!
//! Formats 2 and 3 kept each event's verdict as its JSON text and band and
//! price samples as postcard varints, and no text fingerprints per seller;
//! format 4 keeps a [`StoredVerdict`], fixed-width [`Pairs`] and
//! `SellerRecord::texts` (empty after an upgrade: it fills within a week). The records are rewritten in ONE sled batch with
//! the new format stamp: a crash during the upgrade leaves the old store,
//! which the next open upgrades again.

use crate::records::*;
use crate::{decode, encode, keys, Result, StoreError, STORE_FORMAT};
use haechi_engine::{Action, Verdict};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

#[derive(Deserialize)]
struct OldEventRecord {
    event_id: String,
    at: i64,
    verdict_json: String,
}

#[derive(Deserialize)]
struct OldListingRecord {
    seller_id: String,
    had_contact: bool,
    action: Action,
    deleted: bool,
    last_event: String,
    idents: Vec<String>,
    events: Vec<OldEventRecord>,
}

#[derive(Deserialize)]
struct OldSellerRecord {
    first_seen: i64,
    last_seen: i64,
    joined_at: Option<i64>,
    recent: Vec<i64>,
    total: u32,
    categories: Vec<String>,
    reviewed: u32,
    blocked: u32,
    confirmed_fraud: u32,
    cleared: u32,
}

#[derive(Deserialize)]
struct OldPairs {
    pairs: Vec<(u64, i64)>,
}

impl OldEventRecord {
    fn upgrade(self, key: &[u8]) -> Result<EventRecord> {
        let verdict = if self.verdict_json.is_empty() {
            None
        } else {
            let v: Verdict =
                serde_json::from_str(&self.verdict_json).map_err(|e| StoreError::Corrupt {
                    key: String::from_utf8_lossy(key).into_owned(),
                    message: format!("verdict of {}: {e}", self.event_id),
                })?;
            Some(StoredVerdict::new(&v))
        };
        Ok(EventRecord {
            event_id: self.event_id,
            at: self.at,
            verdict,
        })
    }
}

/// Rewrites a format-2 or -3 store's records as format 4 (the caller has
/// checked `from`). Returns the number of records rewritten.
pub(crate) fn upgrade(db: &sled::Db, from: u32) -> Result<u64> {
    let started = std::time::Instant::now();
    let mut batch = sled::Batch::default();
    let mut n = 0u64;
    n += rewrite(db, &mut batch, keys::LISTING, |k, old: OldListingRecord| {
        Ok(ListingRecord {
            seller_id: old.seller_id,
            had_contact: old.had_contact,
            action: old.action,
            deleted: old.deleted,
            last_event: old.last_event,
            idents: old.idents,
            events: old
                .events
                .into_iter()
                .map(|e| e.upgrade(k))
                .collect::<Result<_>>()?,
        })
    })?;
    n += rewrite(db, &mut batch, keys::SELLER, |_, old: OldSellerRecord| {
        Ok(SellerRecord {
            first_seen: old.first_seen,
            last_seen: old.last_seen,
            joined_at: old.joined_at,
            recent: old.recent,
            total: old.total,
            categories: old.categories,
            reviewed: old.reviewed,
            blocked: old.blocked,
            confirmed_fraud: old.confirmed_fraud,
            cleared: old.cleared,
            texts: Pairs::default(),
        })
    })?;
    n += rewrite(db, &mut batch, keys::EVENT, |k, old: OldEventRecord| {
        old.upgrade(k)
    })?;
    n += rewrite(db, &mut batch, keys::BAND, |_, old: OldPairs| {
        Ok(BandRecord {
            sellers: old.pairs.into_iter().collect(),
        })
    })?;
    n += rewrite(db, &mut batch, keys::PRICE, |_, old: OldPairs| {
        Ok(PriceRecord {
            samples: Pairs(old.pairs),
        })
    })?;
    batch.insert(keys::key(keys::META, "format"), encode(&STORE_FORMAT));
    db.apply_batch(batch)?;
    db.flush()?;
    tracing::info!(
        from,
        to = STORE_FORMAT,
        records = n,
        seconds = started.elapsed().as_secs_f64(),
        "store upgraded"
    );
    Ok(n)
}

fn rewrite<Old: DeserializeOwned, New: Serialize>(
    db: &sled::Db,
    batch: &mut sled::Batch,
    prefix: u8,
    convert: impl Fn(&[u8], Old) -> Result<New>,
) -> Result<u64> {
    let mut n = 0;
    for item in db.scan_prefix([prefix]) {
        let (k, v) = item?;
        if let Some(old) = decode::<Old>(&k, Some(&v))? {
            batch.insert(k.to_vec(), encode(&convert(&k, old)?));
            n += 1;
        }
    }
    Ok(n)
}
