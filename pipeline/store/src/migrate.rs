//! Stores written by earlier haechi versions, upgraded at open.
//!
//! Formats 2 and 3 kept each event's verdict as its JSON text and band and
//! price samples as postcard varints, and no text fingerprints per seller;
//! format 4 keeps a [`StoredVerdict`], fixed-width [`Pairs`] and
//! `SellerRecord::texts` (empty after an upgrade: it fills within a week);
//! format 5 keeps the strings verdicts share in the verdict dictionary
//! ([`crate::dict`]). The records are rewritten in ONE sled batch with the
//! new format stamp (and the dictionary entries they need): a crash during
//! the upgrade leaves the old store, which the next open upgrades again.

use crate::dict::{Dict, Entries};
use crate::records::*;
use crate::{decode, encode, keys, Result, StoreError, STORE_FORMAT};
use haechi_engine::{Action, ReasonSource, Span, Verdict, Versions};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The stored verdict of format 4: its strings inline.
#[derive(Deserialize)]
struct Format4Verdict {
    seller_id: String,
    action: Action,
    score: f64,
    reasons: Vec<Format4Reason>,
    versions: Versions,
}

#[derive(Deserialize)]
struct Format4Reason {
    source: ReasonSource,
    id: String,
    detail: String,
    weight: f64,
    spans: Vec<Span>,
}

#[derive(Deserialize)]
struct Format4Event {
    event_id: String,
    at: i64,
    verdict: Option<Format4Verdict>,
}

#[derive(Deserialize)]
struct Format4Listing {
    seller_id: String,
    had_contact: bool,
    action: Action,
    deleted: bool,
    last_event: String,
    idents: Vec<String>,
    events: Vec<Format4Event>,
}

impl Format4Verdict {
    fn verdict(self, event_id: &str) -> Verdict {
        Verdict {
            event_id: event_id.to_owned(),
            listing_id: String::new(),
            seller_id: self.seller_id,
            action: self.action,
            score: self.score,
            reasons: self
                .reasons
                .into_iter()
                .map(|r| haechi_engine::Reason {
                    source: r.source,
                    id: r.id,
                    detail: r.detail,
                    weight: r.weight,
                    spans: r.spans,
                })
                .collect(),
            versions: self.versions,
        }
    }
}

/// Stores verdicts for the upgrade: new dictionary entries go into the
/// batch with the records that refer to them.
struct Verdicts<'a> {
    db: &'a sled::Db,
    dict: Dict,
}

impl Verdicts<'_> {
    fn store(&self, v: &Verdict, batch: &mut sled::Batch) -> Result<StoredVerdict> {
        let mut entries = Entries::default();
        let stored = self
            .dict
            .store(v, false, |k| Ok(self.db.get(k)?), &mut entries)?;
        for (k, v) in std::mem::take(&mut entries.writes) {
            batch.insert(k, v);
        }
        // In the batch: known from now on (a failed upgrade drops both).
        self.dict.committed(entries);
        Ok(stored)
    }

    fn event(&self, e: Format4Event, batch: &mut sled::Batch) -> Result<EventRecord> {
        let verdict = match e.verdict {
            Some(v) => Some(self.store(&v.verdict(&e.event_id), batch)?),
            None => None,
        };
        Ok(EventRecord {
            event_id: e.event_id,
            at: e.at,
            verdict,
        })
    }
}

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
    fn upgrade(
        self,
        key: &[u8],
        verdicts: &Verdicts<'_>,
        batch: &mut sled::Batch,
    ) -> Result<EventRecord> {
        let verdict = if self.verdict_json.is_empty() {
            None
        } else {
            let v: Verdict =
                serde_json::from_str(&self.verdict_json).map_err(|e| StoreError::Corrupt {
                    key: String::from_utf8_lossy(key).into_owned(),
                    message: format!("verdict of {}: {e}", self.event_id),
                })?;
            Some(verdicts.store(&v, batch)?)
        };
        Ok(EventRecord {
            event_id: self.event_id,
            at: self.at,
            verdict,
        })
    }
}

/// Rewrites a format-2, -3 or -4 store's records as the current format
/// (the caller has checked `from`). Returns the number of records rewritten.
pub(crate) fn upgrade(db: &sled::Db, from: u32) -> Result<u64> {
    let started = std::time::Instant::now();
    let mut batch = sled::Batch::default();
    let verdicts = Verdicts {
        db,
        dict: Dict::default(),
    };
    let n = if from == 4 {
        upgrade_4(db, &mut batch, &verdicts)?
    } else {
        upgrade_3(db, &mut batch, &verdicts)?
    };
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

/// Format 4: only the verdicts changed.
fn upgrade_4(db: &sled::Db, batch: &mut sled::Batch, verdicts: &Verdicts<'_>) -> Result<u64> {
    let mut n = rewrite(db, batch, keys::LISTING, |_, old: Format4Listing, batch| {
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
                .map(|e| verdicts.event(e, batch))
                .collect::<Result<_>>()?,
        })
    })?;
    n += rewrite(db, batch, keys::EVENT, |_, old: Format4Event, batch| {
        verdicts.event(old, batch)
    })?;
    Ok(n)
}

/// Formats 2 and 3.
fn upgrade_3(db: &sled::Db, batch: &mut sled::Batch, verdicts: &Verdicts<'_>) -> Result<u64> {
    let mut n = 0u64;
    n += rewrite(
        db,
        batch,
        keys::LISTING,
        |k, old: OldListingRecord, batch| {
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
                    .map(|e| e.upgrade(k, verdicts, batch))
                    .collect::<Result<_>>()?,
            })
        },
    )?;
    n += rewrite(db, batch, keys::SELLER, |_, old: OldSellerRecord, _| {
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
    n += rewrite(db, batch, keys::EVENT, |k, old: OldEventRecord, batch| {
        old.upgrade(k, verdicts, batch)
    })?;
    n += rewrite(db, batch, keys::BAND, |_, old: OldPairs, _| {
        Ok(BandRecord {
            sellers: old.pairs.into_iter().collect(),
        })
    })?;
    n += rewrite(db, batch, keys::PRICE, |_, old: OldPairs, _| {
        Ok(PriceRecord {
            samples: Pairs(old.pairs),
        })
    })?;
    Ok(n)
}

fn rewrite<Old: DeserializeOwned, New: Serialize>(
    db: &sled::Db,
    batch: &mut sled::Batch,
    prefix: u8,
    mut convert: impl FnMut(&[u8], Old, &mut sled::Batch) -> Result<New>,
) -> Result<u64> {
    let mut n = 0;
    for item in db.scan_prefix([prefix]) {
        let (k, v) = item?;
        if let Some(old) = decode::<Old>(&k, Some(&v))? {
            let new = convert(&k, old, batch)?;
            batch.insert(k.to_vec(), encode(&new));
            n += 1;
        }
    }
    Ok(n)
}
