//! Change capture and restore: how seller state follows its Kafka partition.
//!
//! With change capture on ([`Store::enable_changelog`]), every write the
//! store commits is also kept in a journal. The Kafka loop takes it after
//! each event ([`Store::take_changes`]) and produces the changes of a
//! batch's consecutive events of one partition as one message
//! ([`encode_changes`], cut at event boundaries past 256 KB) to the
//! changelog topic's partition with that number — never an event split
//! over two messages, so that a crash in the middle of a batch's deliveries
//! leaves whole events in the changelog. The
//! instance that is assigned a partition reads that changelog partition
//! from its checkpoint on and applies it ([`Store::restore`]) before it
//! judges the partition's first event.
//!
//! Restoring must not depend on the order in which partitions are restored,
//! because some records are shared between partitions (an identifier used by
//! sellers of two partitions, a product's usual price) and a moderator's
//! action may be replicated to several partitions. So a restored record is
//! MERGED with the local one wherever the record allows it:
//!
//! * seller history: counters take the maximum, times the min/max, recent
//!   listing times and categories the union — counters only grow, so the
//!   maximum is the most recent truth;
//! * identifier, near-duplicate and price records: the union of their
//!   sellers / samples, bounded as on the write path;
//! * review cases: the most advanced status wins (decided, then the latest
//!   claim, then open), and the queue index is rebuilt from the merged case;
//! * listing state and idempotency records: the restored value (they are
//!   written only by the partition's own events, in order);
//! * verdict dictionary entries: kept (an entry never changes; one that
//!   differs from ours is refused as corrupt). Every event's changes carry
//!   the entries its verdict refers to (see `store::dict`).
//!
//! The audit log and the store's meta records are per instance and are not
//! replicated.

use crate::overlay::{Change, Tx};
use crate::records::*;
use crate::review::{encode_case, queue_key, Case, Status};
use crate::{decode, encode, keys, Result, Store, StoreError, STORE_FORMAT};

/// A change as it travels through the changelog: the store key and the new
/// value (`None`: removed).
pub type KeyValue = (Vec<u8>, Option<Vec<u8>>);

/// One changelog message: every change of one event (so a restore applies
/// an event wholly or not at all): a zero byte, the [`STORE_FORMAT`] its
/// values are written in, then the changes in postcard. (Untagged messages
/// of store format 3 and older began with their non-zero change count.)
pub fn encode_changes(changes: &[KeyValue]) -> Vec<u8> {
    postcard::to_extend(&Wire(changes), vec![0, STORE_FORMAT as u8]).unwrap_or_default()
}

/// The changes as postcard writes a `Vec<KeyValue>`, but each byte string
/// copied whole (serde writes a `Vec<u8>` byte by byte: 10% of the Kafka
/// loop). The bytes on the wire are the same.
struct Wire<'a>(&'a [KeyValue]);

#[derive(serde::Serialize)]
struct ChangeOut<'a> {
    #[serde(with = "serde_bytes")]
    key: &'a [u8],
    #[serde(with = "serde_bytes")]
    value: &'a Option<Vec<u8>>,
}

#[derive(serde::Deserialize)]
struct ChangeIn {
    #[serde(with = "serde_bytes")]
    key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    value: Option<Vec<u8>>,
}

impl serde::Serialize for Wire<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(key, value)| ChangeOut { key, value }))
    }
}

/// Reads a changelog message written by [`encode_changes`]; a message of
/// another store format is refused, not misread.
pub fn decode_changes(bytes: &[u8]) -> Result<Vec<KeyValue>> {
    let format = match bytes {
        [0, f, ..] => u32::from(*f),
        _ => 3,
    };
    if format != STORE_FORMAT {
        return Err(corrupt(
            b"changelog message",
            format!(
                "written by a haechi with store format {format}{}, this one reads {STORE_FORMAT}: \
                 let every instance restore past it before upgrading (or start from an empty \
                 changelog topic)",
                if format == 3 { " or older" } else { "" }
            ),
        ));
    }
    let changes: Vec<ChangeIn> = postcard::from_bytes(&bytes[2..])
        .map_err(|e| corrupt(b"changelog message", e.to_string()))?;
    Ok(changes.into_iter().map(|c| (c.key, c.value)).collect())
}

/// Keyspaces that follow a partition through the changelog.
fn replicated(key: &[u8]) -> bool {
    matches!(
        key.first(),
        Some(
            &(keys::SELLER
                | keys::LISTING
                | keys::EVENT
                | keys::IDENT
                | keys::BAND
                | keys::PRICE
                | keys::CASE
                | keys::DICT)
        )
    )
}

fn checkpoint_key(partition: i32) -> Vec<u8> {
    keys::key(keys::META, &format!("changelog/{partition}"))
}

fn corrupt(key: &[u8], message: String) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message,
    }
}

/// The changes taken from the journal, split by who made them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TakenChanges {
    /// Made by the calling thread (the Kafka loop's events and decisions).
    pub own: Vec<KeyValue>,
    /// Made by other threads (moderators through the HTTP API).
    pub other: Vec<KeyValue>,
}

/// Keeps the last change of each key, in the order of those last changes.
fn last_per_key(changes: Vec<Change>) -> Vec<Change> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<Change> = changes
        .into_iter()
        .rev()
        .filter(|c| seen.insert(c.key.clone()))
        .collect();
    out.reverse();
    out
}

impl Store {
    /// Turns change capture on (see the module documentation).
    pub fn enable_changelog(&self) {
        self.overlay.enable_journal();
    }

    /// The replicated changes committed since the last call, the last one of
    /// each key only.
    pub fn take_changes(&self) -> TakenChanges {
        let me = std::thread::current().id();
        let mut taken = TakenChanges::default();
        for c in last_per_key(self.overlay.take_journal()) {
            if !replicated(&c.key) {
                continue;
            }
            if c.thread == me {
                taken.own.push((c.key, c.value));
            } else {
                taken.other.push((c.key, c.value));
            }
        }
        taken
    }

    /// The last changelog offset applied to (or produced from) this store
    /// for a partition.
    pub fn changelog_checkpoint(&self, partition: i32) -> Result<Option<i64>> {
        self.get(&checkpoint_key(partition))
    }

    /// Records that the changelog of `partition` is in this store up to
    /// `offset` (durable at the next flush, with the writes it covers).
    pub fn set_changelog_checkpoint(&self, partition: i32, offset: i64) -> Result<()> {
        let key = checkpoint_key(partition);
        let mut tx = self.overlay.begin_unjournaled();
        let old: Option<i64> = decode(&key, tx.get(&key)?)?;
        if old.is_none_or(|o| o < offset) {
            tx.put(key, encode(&offset));
            tx.commit();
        }
        Ok(())
    }

    /// Applies changes read from a partition's changelog, merging shared
    /// records, and moves the partition's checkpoint to `offset`. Restored
    /// writes are not captured again.
    pub fn restore(&self, changes: &[KeyValue], partition: i32, offset: i64) -> Result<()> {
        if !changes.is_empty() {
            self.forget_first_event();
        }
        let mut tx = self.overlay.begin_unjournaled();
        for (key, value) in changes {
            if !replicated(key) {
                continue;
            }
            let Some(value) = value else {
                tx.remove(key.clone());
                continue;
            };
            match key.first().copied() {
                Some(keys::SELLER) => restore_merged(&mut tx, key, value, merge_seller)?,
                Some(keys::IDENT) => {
                    let theirs: IdentRecord = decode_one(key, value)?;
                    let mut ours: IdentRecord = decode(key, tx.get(key)?)?.unwrap_or_default();
                    for (s, t) in &theirs.sellers {
                        ours.touch(s, *t);
                    }
                    for s in theirs.fraud_sellers {
                        if !ours.fraud_sellers.contains(&s) {
                            ours.fraud_sellers.push(s);
                        }
                    }
                    tx.put(key.clone(), encode(&ours));
                }
                Some(keys::BAND) => {
                    let theirs: BandRecord = decode_one(key, value)?;
                    let mut ours: BandRecord = decode(key, tx.get(key)?)?.unwrap_or_default();
                    for (s, t) in theirs.sellers {
                        ours.touch(s, t);
                    }
                    tx.put(key.clone(), encode(&ours));
                }
                Some(keys::PRICE) => {
                    let theirs: PriceRecord = decode_one(key, value)?;
                    let ours: PriceRecord = decode(key, tx.get(key)?)?.unwrap_or_default();
                    tx.put(key.clone(), encode(&merge_prices(ours, theirs)));
                }
                Some(keys::LISTING) => restore_merged(&mut tx, key, value, merge_listing)?,
                Some(keys::CASE) => restore_case(&mut tx, key, value)?,
                // Entries never change: another string under the same id
                // would misread this store's verdicts.
                Some(keys::DICT) => match tx.get(key)? {
                    Some(ours) if *ours != **value => {
                        return Err(corrupt(
                            key,
                            "a restored verdict dictionary entry differs from this store's".into(),
                        ))
                    }
                    Some(_) => {}
                    None => tx.put(key.clone(), value.clone()),
                },
                _ => tx.put(key.clone(), value.clone()),
            }
        }
        let ck = checkpoint_key(partition);
        tx.put(ck, encode(&offset));
        tx.commit();
        Ok(())
    }
}

/// Writes `merge(ours, theirs)` for a restored record (theirs alone when we
/// have none).
fn restore_merged<T>(tx: &mut Tx<'_>, key: &[u8], value: &[u8], merge: fn(T, T) -> T) -> Result<()>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let theirs: T = decode_one(key, value)?;
    let merged = match decode::<T>(key, tx.get(key)?)? {
        Some(ours) => merge(ours, theirs),
        None => theirs,
    };
    tx.put(key.to_vec(), encode(&merged));
    Ok(())
}

fn decode_one<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T> {
    decode(key, Some(value))?.ok_or_else(|| corrupt(key, "empty record".into()))
}

/// Field-wise merge of two views of one seller (see the module docs).
pub fn merge_seller(a: SellerRecord, b: SellerRecord) -> SellerRecord {
    let mut recent = a.recent.clone();
    for t in &b.recent {
        if !recent.contains(t) {
            recent.push(*t);
        }
    }
    recent.sort_unstable();
    let mut categories = a.categories.clone();
    for c in b.categories {
        if !categories.contains(&c) && categories.len() < 64 {
            categories.push(c);
        }
    }
    let mut texts = a.texts.0.clone();
    for e in b.texts.0 {
        if !texts.contains(&e) {
            texts.push(e);
        }
    }
    texts.sort_unstable_by_key(|&(_, t)| t);
    let mut merged = SellerRecord {
        first_seen: a.first_seen.min(b.first_seen),
        last_seen: a.last_seen.max(b.last_seen),
        joined_at: a.joined_at.or(b.joined_at),
        recent: Vec::new(),
        total: a.total.max(b.total),
        categories,
        reviewed: a.reviewed.max(b.reviewed),
        blocked: a.blocked.max(b.blocked),
        confirmed_fraud: a.confirmed_fraud.max(b.confirmed_fraud),
        cleared: a.cleared.max(b.cleared),
        texts: Pairs::default(),
    };
    for (f, t) in texts {
        merged.add_text(f, t);
    }
    // Re-apply the window and the cap exactly as the write path does.
    if let Some((&last, rest)) = recent.split_last() {
        merged.recent = rest.to_vec();
        merged.add_recent(last);
    }
    merged
}

/// A listing's state is the incoming one (one partition owns a listing), but
/// its processed events are the union of both views: an event recorded by
/// either instance is never judged again.
fn merge_listing(ours: ListingRecord, mut theirs: ListingRecord) -> ListingRecord {
    for e in ours.events {
        if theirs.event(&e.event_id).is_none() {
            theirs.events.push(e);
        }
    }
    theirs.events.sort_by_key(|e| e.at);
    theirs
}

fn merge_prices(a: PriceRecord, b: PriceRecord) -> PriceRecord {
    let mut samples = a.samples;
    for s in b.samples.0 {
        if !samples.contains(&s) {
            samples.push(s);
        }
    }
    samples.sort_by_key(|s| s.1);
    let excess = samples.len().saturating_sub(PRICE_SAMPLES);
    samples.drain(..excess);
    PriceRecord { samples }
}

/// How far a case has come: decided beats claimed beats open.
fn rank(c: &Case) -> (u8, i64) {
    match &c.status {
        Status::Open => (0, 0),
        Status::Claimed { until, .. } => (1, *until),
        Status::Decided => (2, 0),
    }
}

fn restore_case(tx: &mut Tx<'_>, key: &[u8], value: &[u8]) -> Result<()> {
    let theirs: Case = serde_json::from_slice(value).map_err(|e| corrupt(key, e.to_string()))?;
    let ours: Option<Case> = match tx.get(key)? {
        Some(v) => Some(serde_json::from_slice(&v).map_err(|e| corrupt(key, e.to_string()))?),
        None => None,
    };
    let case = match ours {
        Some(ours) if rank(&ours) >= rank(&theirs) => ours,
        _ => theirs,
    };
    let qk = queue_key(case.action, case.score, case.created_at, &case.id);
    if case.status == Status::Decided {
        tx.remove(qk);
    } else {
        tx.put(qk, Vec::new());
    }
    tx.put(key.to_vec(), encode_case(&case));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changelog_messages_carry_their_store_format_and_older_ones_are_refused() {
        let changes: Vec<KeyValue> =
            vec![(b"sx".to_vec(), Some(vec![1, 2])), (b"ly".to_vec(), None)];
        assert_eq!(decode_changes(&encode_changes(&changes)).unwrap(), changes);
        // Byte strings copied whole: the same bytes as the plain encoding.
        assert_eq!(
            encode_changes(&changes)[2..],
            postcard::to_allocvec(&changes).unwrap()[..]
        );
        // Store format 3 wrote the bare postcard list: it starts with its count.
        let untagged = postcard::to_allocvec(&changes).unwrap();
        let err = decode_changes(&untagged).unwrap_err().to_string();
        assert!(err.contains("store format 3 or older"), "{err}");
        let mut other = encode_changes(&changes);
        other[1] = 9;
        let err = decode_changes(&other).unwrap_err().to_string();
        assert!(err.contains("store format 9"), "{err}");
    }

    fn seller(total: u32, recent: &[i64], fraud: u32) -> SellerRecord {
        SellerRecord {
            first_seen: recent.first().copied().unwrap_or(0),
            last_seen: recent.last().copied().unwrap_or(0),
            recent: recent.to_vec(),
            total,
            confirmed_fraud: fraud,
            ..SellerRecord::default()
        }
    }

    #[test]
    fn seller_merge_is_order_independent_and_idempotent() {
        let a = seller(3, &[10, 20, 30], 0);
        let b = seller(4, &[10, 20, 30, 40], 1);
        let ab = merge_seller(a.clone(), b.clone());
        assert_eq!(ab, merge_seller(b.clone(), a.clone()));
        assert_eq!(ab, merge_seller(ab.clone(), b.clone()));
        assert_eq!(ab.total, 4);
        assert_eq!(ab.recent, vec![10, 20, 30, 40]);
        assert_eq!(ab.confirmed_fraud, 1);
        assert_eq!((ab.first_seen, ab.last_seen), (10, 40));
    }

    #[test]
    fn restored_listings_keep_every_event_either_side_recorded() {
        let ev = |id: &str, at: i64| EventRecord {
            event_id: id.into(),
            at,
            verdict: None,
        };
        let listing = |events: Vec<EventRecord>, action: haechi_engine::Action| ListingRecord {
            seller_id: "s".into(),
            had_contact: false,
            action,
            deleted: false,
            last_event: events
                .last()
                .map(|e| e.event_id.clone())
                .unwrap_or_default(),
            idents: vec![],
            events,
        };
        let ours = listing(vec![ev("e1", 1), ev("e3", 3)], haechi_engine::Action::Allow);
        let theirs = listing(
            vec![ev("e1", 1), ev("e2", 2)],
            haechi_engine::Action::Review,
        );
        let m = merge_listing(ours, theirs);
        let ids: Vec<&str> = m.events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["e1", "e2", "e3"]);
        assert_eq!(
            m.action,
            haechi_engine::Action::Review,
            "state is the incoming one"
        );
    }

    #[test]
    fn take_changes_keeps_the_last_write_of_each_replicated_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.enable_changelog();
        let mut tx = store.overlay.begin();
        tx.put(keys::key(keys::SELLER, "s1"), vec![1]);
        tx.put(keys::key(keys::SELLER, "s1"), vec![2]);
        tx.put(keys::key(keys::AUDIT, "1"), vec![3]);
        tx.remove(keys::key(keys::LISTING, "l1"));
        tx.commit();
        let other = std::thread::scope(|s| {
            s.spawn(|| {
                let mut tx = store.overlay.begin();
                tx.put(keys::key(keys::CASE, "e1"), vec![4]);
                tx.commit();
            })
            .join()
            .unwrap();
            store.take_changes()
        });
        assert_eq!(
            other.own,
            vec![
                (keys::key(keys::SELLER, "s1"), Some(vec![2])),
                (keys::key(keys::LISTING, "l1"), None),
            ]
        );
        assert_eq!(
            other.other,
            vec![(keys::key(keys::CASE, "e1"), Some(vec![4]))]
        );
        assert_eq!(store.take_changes(), TakenChanges::default());
        // Restored writes are not captured again, and move the checkpoint.
        store
            .restore(&[(keys::key(keys::EVENT, "x"), Some(vec![9]))], 3, 41)
            .unwrap();
        assert_eq!(store.take_changes(), TakenChanges::default());
        assert_eq!(store.changelog_checkpoint(3).unwrap(), Some(41));
        store.set_changelog_checkpoint(3, 40).unwrap();
        assert_eq!(store.changelog_checkpoint(3).unwrap(), Some(41));
    }
}
