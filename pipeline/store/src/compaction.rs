//! Retention: what left the windows is dropped, once per day of event time.
//!
//! The scan reads sled without holding the overlay; every record to change
//! is re-read through a transaction (its current value, pending writes
//! included) and written back like any other write, outside the Kafka
//! changelog (each instance compacts its own store); the event loop's
//! flushes make it durable. It runs on its own thread beside the event loop.
//!
//! Verdicts do not depend on WHEN it runs: it removes only what every later
//! snapshot ignores anyway. Identifier links and band entries are older than
//! the windows the snapshot counts in (cut-offs are counted from the start of
//! the day, never later than the event being judged), and a product record
//! goes only when all its samples are older than the retention, which the
//! snapshot and the record treat as no record ([`price_is_stale`]).

use crate::overlay::Overlay;
use crate::records::*;
use crate::{decode, encode, keys, HistoryConfig, Result, DAY_MS};
use serde::{de::DeserializeOwned, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What [`Store::compact`] does to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prune {
    Keep,
    Rewrite,
    Remove,
}

impl Prune {
    /// After entries were dropped from a record's list (`before` → `after`
    /// entries): removed when nothing worth keeping is left, else rewritten
    /// if the list changed.
    fn after(before: usize, after: usize, nothing_left: bool) -> Prune {
        if nothing_left {
            Prune::Remove
        } else if after != before {
            Prune::Rewrite
        } else {
            Prune::Keep
        }
    }
}

/// Everything a compaction needs, shareable with its thread.
#[derive(Debug, Clone)]
pub(crate) struct Compactor {
    pub(crate) db: sled::Db,
    pub(crate) overlay: Arc<Overlay>,
    pub(crate) config: HistoryConfig,
    /// Set when the store closes: a running compaction stops at the next
    /// record (what it wrote stays valid; the next one finishes the job).
    pub(crate) stop: Arc<AtomicBool>,
    /// Whether it may flush pending writes itself when the loop is idle
    /// (not when a Kafka loop owns the flushes: see `Store::own_flushes`).
    pub(crate) may_flush: bool,
    /// No time in the history is earlier (see `Store::first_event`): a
    /// keyspace whose cut-off is not past it has nothing to drop, and is
    /// not scanned.
    pub(crate) first_event: i64,
}

/// The start of the day (of event time) `t` falls in.
pub(crate) fn day_start(t: i64) -> i64 {
    t.div_euclid(DAY_MS) * DAY_MS
}

/// A product's price record nobody refreshed within the retention (as of the
/// day of `now`): compaction removes it, so the snapshot must ignore it and a
/// new listing must start it afresh, whether compaction ran yet or not.
pub(crate) fn price_is_stale(rec: &PriceRecord, now: i64, retention_days: i64) -> bool {
    let cutoff = day_start(now) - retention_days * DAY_MS;
    rec.samples.iter().all(|(_, t)| *t < cutoff)
}

/// A listing none of whose events is within the retention (as of the day of
/// `now`): compaction removes its record, so snapshot and record treat it as
/// never seen whether compaction ran yet or not (an edit after the retention
/// has no previous version; without this, every listing ever posted would
/// keep a record forever).
pub(crate) fn listing_is_stale(rec: &ListingRecord, now: i64, retention_days: i64) -> bool {
    let cutoff = day_start(now) - retention_days * DAY_MS;
    rec.events.iter().all(|e| e.at < cutoff)
}

impl Compactor {
    /// Compacts as of the start of a day (`now`, see [`day_start`]); what
    /// is still above sled is left for the next day.
    pub(crate) fn compact_at(&self, now: i64) -> Result<u64> {
        // The scans below read sled: what is durable goes in first (the
        // writes of resident keyspaces wait for a checkpoint otherwise).
        self.overlay.settle()?;
        let cutoff = now - self.config.retention_days * DAY_MS;
        let ident_cut = now - self.config.ident_window_days * DAY_MS;
        let band_cut = now - self.config.duplicate_window_days * DAY_MS;
        // Nothing in a keyspace is older than the earliest time the history
        // holds: one whose cut-off is not past it is not scanned (a young
        // store, a replay of a month — a scan of every key changing none).
        let due = |cut: i64| cut > self.first_event;
        let mut changed = 0u64;
        if due(cutoff) {
            // Idempotency records older than the retention: decisions', and
            // the events kept in each listing's record.
            changed += self.compact_keyspace(keys::EVENT, |r: &mut EventRecord| {
                if r.at < cutoff {
                    Prune::Remove
                } else {
                    Prune::Keep
                }
            })?;
            // A listing with no event left goes whole (see [`listing_is_stale`]).
            changed += self.compact_keyspace(keys::LISTING, |r: &mut ListingRecord| {
                let before = r.events.len();
                r.events.retain(|e| e.at >= cutoff);
                Prune::after(before, r.events.len(), r.events.is_empty())
            })?;
        }
        if due(ident_cut) {
            changed += self.compact_keyspace(keys::IDENT, |r: &mut IdentRecord| {
                let before = r.sellers.len();
                r.sellers.retain(|(_, t)| *t >= ident_cut);
                let nothing_left = r.sellers.is_empty() && r.fraud_sellers.is_empty();
                Prune::after(before, r.sellers.len(), nothing_left)
            })?;
        }
        if due(band_cut) {
            changed += self.compact_keyspace(keys::BAND, |r: &mut BandRecord| {
                let before = r.sellers.len();
                r.sellers.retain(|(_, t)| *t >= band_cut);
                Prune::after(before, r.sellers.len(), r.sellers.is_empty())
            })?;
        }
        // A product's price sample is already bounded (the last
        // PRICE_SAMPLES); pruning it by age would only lose the reference of
        // rare products (measured: a too-cheap LV bag on the test split,
        // 7 samples, went unflagged). A product nobody listed within the
        // retention goes.
        if due(cutoff) {
            let retention = self.config.retention_days;
            changed += self.compact_keyspace(keys::PRICE, |r: &mut PriceRecord| {
                if price_is_stale(r, now, retention) {
                    Prune::Remove
                } else {
                    Prune::Keep
                }
            })?;
        }
        Ok(changed)
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Compaction's writes are made durable by the event loop's own flushes
    /// (in Kafka, a flush must not overtake the changelog of the batch being
    /// judged; that loop also flushes when idle). Past `PENDING_CAP` pending
    /// writes it waits for one; a replay that stopped feeding events gets a
    /// second, then compaction flushes itself.
    fn let_the_loop_flush(&self) -> Result<()> {
        const PENDING_CAP: usize = 100_000;
        let since = std::time::Instant::now();
        while self.overlay.pending() >= PENDING_CAP {
            if self.may_flush && since.elapsed() >= std::time::Duration::from_secs(1) {
                return self.overlay.flush();
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(())
    }

    /// One keyspace of a compaction: the keys `prune` changes, found by a
    /// scan of sled, re-read and written through the overlay in small
    /// transactions — each holds the overlay (and so the event loop) only
    /// while it re-reads a few records (10,000 at once held it ~1 s: Kafka
    /// p99 at 450 events/s 43 ms → 933 ms).
    fn compact_keyspace<T: Serialize + DeserializeOwned>(
        &self,
        prefix: u8,
        prune: impl Fn(&mut T) -> Prune,
    ) -> Result<u64> {
        const TX_RECORDS: usize = 64;
        let mut changed = 0u64;
        // A resident keyspace is not in sled: its keys are read from memory
        // and every record is checked by `rewrite`, a few at a time.
        if let Some(keys) = self.overlay.resident_keys(prefix) {
            for chunk in keys.chunks(TX_RECORDS) {
                if self.stopped() {
                    break;
                }
                changed += self.rewrite(chunk, &prune)?;
                self.let_the_loop_flush()?;
            }
            return Ok(changed);
        }
        let mut due: Vec<sled::IVec> = Vec::with_capacity(TX_RECORDS);
        for item in self.db.scan_prefix([prefix]) {
            if self.stopped() {
                break;
            }
            let (k, v) = item?;
            if decode::<T>(&k, Some(&v))?.is_some_and(|mut r| prune(&mut r) != Prune::Keep) {
                due.push(k);
            }
            if due.len() == TX_RECORDS {
                changed += self.rewrite(&due, &prune)?;
                due.clear();
                self.let_the_loop_flush()?;
            }
        }
        changed += self.rewrite(&due, &prune)?;
        Ok(changed)
    }

    /// Prunes the records of `due` as they are now (pending writes included), in one
    /// transaction outside the changelog (each instance compacts its own
    /// store). Returns the records changed.
    fn rewrite<T: Serialize + DeserializeOwned>(
        &self,
        due: &[sled::IVec],
        prune: &impl Fn(&mut T) -> Prune,
    ) -> Result<u64> {
        let mut changed = 0u64;
        let mut tx = self.overlay.begin_unjournaled();
        for k in due {
            let Some(mut rec) = decode::<T>(k, tx.get(k)?)? else {
                continue;
            };
            match prune(&mut rec) {
                Prune::Keep => continue,
                Prune::Rewrite => tx.put(k.to_vec(), encode(&rec)),
                Prune::Remove => tx.remove(k.to_vec()),
            }
            changed += 1;
        }
        tx.commit();
        Ok(changed)
    }
}
