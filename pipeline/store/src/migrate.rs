//! Stores written by earlier haechi versions, upgraded at open.
//!
//! Formats 2 and 3 kept each event's verdict as its JSON text and band and
//! price samples as postcard varints, and no text fingerprints per seller;
//! format 4 keeps a [`StoredVerdict`], fixed-width [`Pairs`] and
//! `SellerRecord::texts` (empty after an upgrade: it fills within a week);
//! format 5 keeps the strings verdicts share in the verdict dictionary
//! ([`crate::dict`]). The records are rewritten in sled batches of
//! [`CHUNK`] (with the dictionary entries they need and the progress they
//! make); the store is stamped `UPGRADING + from` meanwhile, so a crash
//! leaves a store the next open resumes (and an older haechi refuses)
//! rather than one half read as its old format.

use crate::dict::{Dict, Entries};
use crate::records::*;
use crate::{decode, encode, keys, Result, StoreError, STORE_FORMAT};
use haechi_engine::{Action, ReasonSource, Span, Verdict, Versions};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The stored verdict of format 4: its strings inline.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct Format4Verdict {
    seller_id: String,
    action: Action,
    score: f64,
    reasons: Vec<Format4Reason>,
    versions: Versions,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct Format4Reason {
    source: ReasonSource,
    id: String,
    detail: String,
    weight: f64,
    spans: Vec<Span>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct Format4Event {
    event_id: String,
    at: i64,
    verdict: Option<Format4Verdict>,
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

/// A listing record of formats 2 to 4 (events of format 2 and 3: `E` =
/// [`OldEventRecord`], of format 4: [`Format4Event`]).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct OldListingRecord<E> {
    seller_id: String,
    had_contact: bool,
    action: Action,
    deleted: bool,
    last_event: String,
    idents: Vec<String>,
    events: Vec<E>,
}

impl<E> OldListingRecord<E> {
    fn upgrade(self, event: impl FnMut(E) -> Result<EventRecord>) -> Result<ListingRecord> {
        Ok(ListingRecord {
            seller_id: self.seller_id,
            had_contact: self.had_contact,
            action: self.action,
            deleted: self.deleted,
            last_event: self.last_event,
            idents: self.idents,
            events: self.events.into_iter().map(event).collect::<Result<_>>()?,
        })
    }
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

/// The format stamp of a store whose upgrade from format `f` is under way
/// is `UPGRADING + f`: this haechi resumes it, an older one refuses it.
pub(crate) const UPGRADING: u32 = 1000;

/// Records rewritten per sled batch: the upgrade's memory does not grow
/// with the store (one batch for a whole 400k-event store peaked at 2 GB).
const CHUNK: usize = 20_000;

/// Rewrites a format-2, -3 or -4 store's records as the current format
/// (the caller has checked `from`), resuming an upgrade a crash
/// interrupted. Returns the number of records rewritten.
pub(crate) fn upgrade(db: &sled::Db, from: u32) -> Result<u64> {
    Upgrade::new(db, from, CHUNK)?.run()
}

/// Where an upgrade is: keyspaces before `step` are done, and within it
/// the records up to `after`.
#[derive(Serialize, Deserialize, Default)]
struct Progress {
    step: u32,
    after: Option<Vec<u8>>,
}

/// An upgrade in sled batches of `chunk` records, each carrying the
/// progress it makes (and the dictionary entries its records need).
struct Upgrade<'a> {
    db: &'a sled::Db,
    from: u32,
    resume: Progress,
    /// The keyspace being rewritten (its index in the upgrade's order).
    step: u32,
    chunk: usize,
    batch: sled::Batch,
    in_batch: usize,
    rewritten: u64,
    batches: usize,
    /// Stop (as a crash would) after this many batches.
    #[cfg(test)]
    stop_after: Option<usize>,
}

fn progress_key() -> Vec<u8> {
    keys::key(keys::META, "upgrade")
}

fn format_key() -> Vec<u8> {
    keys::key(keys::META, "format")
}

impl<'a> Upgrade<'a> {
    fn new(db: &'a sled::Db, from: u32, chunk: usize) -> Result<Upgrade<'a>> {
        let resume = decode::<Progress>(b"upgrade progress", db.get(progress_key())?)?;
        let resume = match resume {
            Some(p) => p,
            None => {
                // Stamped first: a store half upgraded is never taken for
                // one of format `from`.
                let mut b = sled::Batch::default();
                b.insert(format_key(), encode(&(UPGRADING + from)));
                b.insert(progress_key(), encode(&Progress::default()));
                db.apply_batch(b)?;
                Progress::default()
            }
        };
        Ok(Upgrade {
            db,
            from,
            resume,
            step: 0,
            chunk: chunk.max(1),
            batch: sled::Batch::default(),
            in_batch: 0,
            rewritten: 0,
            batches: 0,
            #[cfg(test)]
            stop_after: None,
        })
    }

    fn run(mut self) -> Result<u64> {
        let started = std::time::Instant::now();
        let resumed = self.resume.step > 0 || self.resume.after.is_some();
        let verdicts = Verdicts {
            db: self.db,
            dict: Dict::default(),
        };
        if self.from == 4 {
            self.upgrade_4(&verdicts)?;
        } else {
            self.upgrade_3(&verdicts)?;
        }
        let mut b = std::mem::take(&mut self.batch);
        b.insert(format_key(), encode(&STORE_FORMAT));
        b.remove(progress_key());
        self.db.apply_batch(b)?;
        self.db.flush()?;
        tracing::info!(
            from = self.from,
            to = STORE_FORMAT,
            records = self.rewritten,
            resumed,
            seconds = started.elapsed().as_secs_f64(),
            "store upgraded"
        );
        Ok(self.rewritten)
    }

    /// Format 4: only the verdicts changed.
    fn upgrade_4(&mut self, verdicts: &Verdicts<'_>) -> Result<()> {
        self.rewrite(
            keys::LISTING,
            |_, old: OldListingRecord<Format4Event>, batch| {
                old.upgrade(|e| verdicts.event(e, batch))
            },
        )?;
        self.rewrite(keys::EVENT, |_, old: Format4Event, batch| {
            verdicts.event(old, batch)
        })
    }

    /// Formats 2 and 3.
    fn upgrade_3(&mut self, verdicts: &Verdicts<'_>) -> Result<()> {
        self.rewrite(
            keys::LISTING,
            |k, old: OldListingRecord<OldEventRecord>, batch| {
                old.upgrade(|e| e.upgrade(k, verdicts, batch))
            },
        )?;
        self.rewrite(keys::SELLER, |_, old: OldSellerRecord, _| {
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
        self.rewrite(keys::EVENT, |k, old: OldEventRecord, batch| {
            old.upgrade(k, verdicts, batch)
        })?;
        self.rewrite(keys::BAND, |_, old: OldPairs, _| {
            Ok(BandRecord {
                sellers: old.pairs.into_iter().collect(),
            })
        })?;
        self.rewrite(keys::PRICE, |_, old: OldPairs, _| {
            Ok(PriceRecord {
                samples: Pairs(old.pairs),
            })
        })
    }

    /// Rewrites the records of one keyspace (from where an interrupted
    /// upgrade left it), `chunk` to a batch.
    fn rewrite<Old: DeserializeOwned, New: Serialize>(
        &mut self,
        prefix: u8,
        mut convert: impl FnMut(&[u8], Old, &mut sled::Batch) -> Result<New>,
    ) -> Result<()> {
        use std::ops::Bound;
        let step = self.step;
        self.step += 1;
        if step < self.resume.step {
            return Ok(());
        }
        let from = match self
            .resume
            .after
            .take()
            .filter(|_| step == self.resume.step)
        {
            Some(k) => Bound::Excluded(k),
            None => Bound::Included(vec![prefix]),
        };
        for item in self.db.range((from, Bound::Excluded(vec![prefix + 1]))) {
            let (k, v) = item?;
            if let Some(old) = decode::<Old>(&k, Some(&v))? {
                let new = convert(&k, old, &mut self.batch)?;
                self.batch.insert(k.to_vec(), encode(&new));
                self.in_batch += 1;
                self.rewritten += 1;
            }
            if self.in_batch >= self.chunk {
                self.commit(Progress {
                    step,
                    after: Some(k.to_vec()),
                })?;
            }
        }
        self.commit(Progress {
            step: step + 1,
            after: None,
        })
    }

    /// Applies the batch with the progress it makes.
    fn commit(&mut self, progress: Progress) -> Result<()> {
        let mut b = std::mem::take(&mut self.batch);
        b.insert(progress_key(), encode(&progress));
        self.db.apply_batch(b)?;
        self.in_batch = 0;
        self.batches += 1;
        #[cfg(test)]
        if self.stop_after == Some(self.batches) {
            return Err(StoreError::Wal("upgrade stopped by the test".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(i: usize) -> Format4Verdict {
        Format4Verdict {
            seller_id: format!("s{i}"),
            action: Action::Review,
            score: 0.25 + i as f64 / 1e4,
            reasons: vec![Format4Reason {
                source: ReasonSource::Rule,
                id: "ko.prepay.demand".into(),
                detail: "Asks for the money before the goods".into(),
                weight: 1.5,
                spans: vec![],
            }],
            versions: Versions {
                rules: "r-9aebd41468ee".into(),
                model: "m-default-b11cb518".into(),
            },
        }
    }

    fn listing(i: usize) -> OldListingRecord<Format4Event> {
        OldListingRecord {
            seller_id: format!("s{i}"),
            had_contact: true,
            action: Action::Review,
            deleted: false,
            last_event: format!("e{i}"),
            idents: vec![],
            events: vec![Format4Event {
                event_id: format!("e{i}"),
                at: i as i64,
                verdict: Some(verdict(i)),
            }],
        }
    }

    #[test]
    fn an_interrupted_upgrade_resumes_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        for i in 0..7 {
            db.insert(
                keys::key(keys::LISTING, &format!("l{i}")),
                encode(&listing(i)),
            )
            .unwrap();
        }
        db.insert(format_key(), encode(&4u32)).unwrap();
        // Batches of 2 records; "crash" after the second.
        let mut first = Upgrade::new(&db, 4, 2).unwrap();
        first.stop_after = Some(2);
        assert!(first.run().is_err());
        let stamp: Option<u32> = decode(b"format", db.get(format_key()).unwrap()).unwrap();
        assert_eq!(
            stamp,
            Some(UPGRADING + 4),
            "not taken for format 4 any more"
        );
        assert_eq!(crate::check_format(&db, dir.path()).unwrap(), Some(4));
        // Resumed: the 4 records already rewritten are not read as format 4
        // again (they would not decode), the other 3 are rewritten.
        assert_eq!(upgrade(&db, 4).unwrap(), 3);
        let stamp: Option<u32> = decode(b"format", db.get(format_key()).unwrap()).unwrap();
        assert_eq!(stamp, Some(STORE_FORMAT));
        assert!(db.get(progress_key()).unwrap().is_none());
        let dict = Dict::default();
        for i in 0..7 {
            let k = keys::key(keys::LISTING, &format!("l{i}"));
            let r: ListingRecord = decode(&k, db.get(&k).unwrap()).unwrap().unwrap();
            let sv = r.events[0].verdict.as_ref().unwrap();
            let v = dict
                .verdict(sv, &format!("e{i}"), "", |k| Ok(db.get(k)?))
                .unwrap();
            let want = verdict(i).verdict(&format!("e{i}"));
            assert_eq!(v, want, "l{i}");
            assert!(matches!(sv.reasons[0].detail, Text::Ref(_)));
        }
    }
}
