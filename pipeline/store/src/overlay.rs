//! The write overlay in front of sled: reads see pending writes, writes
//! wait in memory, and a flush applies everything pending as ONE atomic
//! sled batch followed by an fsync.
//!
//! A [`Tx`] groups the writes of one event (or one moderator action): they
//! enter the pending set together when the transaction commits, under the
//! overlay's lock, so a flush never splits them. Reads are cached (also
//! negatively) so the hot path touches sled only for records it has not
//! seen recently. Values are [`sled::IVec`]s: reading a cached record shares
//! its bytes instead of copying them.

use crate::Result;
use sled::IVec;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Past this many cached reads, the read cache is dropped and refilled.
/// Measured on the 400k day set (BENCHMARKS.md): 400,000 → 100,000 cuts
/// peak RSS from 780 to 569 MB for 7% of speed.
const CACHE_CAP: usize = 100_000;

/// The maps of the overlay: keys are short, hashing them must be cheap.
type Map = HashMap<Vec<u8>, Option<IVec>, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Inner {
    /// Written, not yet flushed (None = removed).
    pending: Map,
    /// Read from (or flushed to) sled.
    cache: Map,
    /// Committed writes not yet taken by [`Overlay::take_journal`], when
    /// change capture is on (the Kafka changelog).
    journal: Option<Vec<Change>>,
}

/// A committed write, as change capture records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: Vec<u8>,
    /// `None`: the key was removed.
    pub value: Option<Vec<u8>>,
    /// The thread that committed it (the Kafka loop tells its own event
    /// writes from a moderator's, made through the HTTP API).
    pub thread: std::thread::ThreadId,
}

#[derive(Debug)]
pub struct Overlay {
    db: sled::Db,
    inner: Mutex<Inner>,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock cannot leave the maps half-updated in a
    // way that matters (entries are replaced whole): keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    fn get(&mut self, db: &sled::Db, key: &[u8]) -> Result<Option<IVec>> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        if let Some(v) = self.cache.get(key) {
            return Ok(v.clone());
        }
        let v = db.get(key)?;
        if self.cache.len() >= CACHE_CAP {
            self.cache.clear();
        }
        self.cache.insert(key.to_vec(), v.clone());
        Ok(v)
    }

    /// Flushed writes join the read cache.
    fn flushed(&mut self, writes: Map) {
        if self.cache.len() + writes.len() > CACHE_CAP {
            self.cache.clear();
        }
        self.cache.extend(writes);
    }
}

/// One atomic batch of `writes`, then fsync.
fn write_batch(db: &sled::Db, writes: &Map) -> Result<()> {
    let mut batch = sled::Batch::default();
    for (k, v) in writes {
        match v {
            Some(v) => batch.insert(k.as_slice(), v.clone()),
            None => batch.remove(k.as_slice()),
        }
    }
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}

impl Overlay {
    pub fn new(db: sled::Db) -> Overlay {
        Overlay {
            db,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The current value of a key, pending writes included.
    pub fn get(&self, key: &[u8]) -> Result<Option<IVec>> {
        lock(&self.inner).get(&self.db, key)
    }

    /// Starts a group of writes that become pending together.
    pub fn begin(&self) -> Tx<'_> {
        Tx {
            guard: lock(&self.inner),
            db: &self.db,
            writes: Vec::new(),
            journaled: true,
        }
    }

    /// [`Overlay::begin`] for writes change capture must not see (state
    /// restored FROM the changelog).
    pub fn begin_unjournaled(&self) -> Tx<'_> {
        Tx {
            journaled: false,
            ..self.begin()
        }
    }

    /// Turns change capture on: every committed write is also kept for
    /// [`Overlay::take_journal`].
    pub fn enable_journal(&self) {
        let mut inner = lock(&self.inner);
        if inner.journal.is_none() {
            inner.journal = Some(Vec::new());
        }
    }

    /// The writes committed since the last call, in commit order (empty
    /// when change capture is off).
    pub fn take_journal(&self) -> Vec<Change> {
        lock(&self.inner)
            .journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Number of pending writes.
    pub fn pending(&self) -> usize {
        lock(&self.inner).pending.len()
    }

    /// Applies every pending write in one atomic batch and syncs it.
    pub fn flush(&self) -> Result<()> {
        let mut inner = lock(&self.inner);
        if inner.pending.is_empty() {
            return Ok(());
        }
        write_batch(&self.db, &inner.pending)?;
        let pending = std::mem::take(&mut inner.pending);
        inner.flushed(pending);
        Ok(())
    }

    /// Keys with a prefix, pending writes included, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, IVec)>> {
        let inner = lock(&self.inner);
        scan_layers(&self.db, prefix, inner.pending.iter())
    }
}

/// Keys with a prefix in sled, overlaid by `layers` of pending writes
/// (later layers win; `None` removes), in key order.
fn scan_layers<'k>(
    db: &sled::Db,
    prefix: &[u8],
    layers: impl Iterator<Item = (&'k Vec<u8>, &'k Option<IVec>)>,
) -> Result<Vec<(Vec<u8>, IVec)>> {
    let mut out: std::collections::BTreeMap<Vec<u8>, IVec> = std::collections::BTreeMap::new();
    for item in db.scan_prefix(prefix) {
        let (k, v) = item?;
        out.insert(k.to_vec(), v);
    }
    for (k, v) in layers.filter(|(k, _)| k.starts_with(prefix)) {
        match v {
            Some(v) => out.insert(k.clone(), v.clone()),
            None => out.remove(k),
        };
    }
    Ok(out.into_iter().collect())
}

/// Writes that become pending together; dropped without `commit`, they
/// vanish.
#[derive(Debug)]
pub struct Tx<'a> {
    guard: MutexGuard<'a, Inner>,
    db: &'a sled::Db,
    writes: Vec<(Vec<u8>, Option<IVec>)>,
    journaled: bool,
}

impl Tx<'_> {
    pub fn get(&mut self, key: &[u8]) -> Result<Option<IVec>> {
        if let Some((_, v)) = self.writes.iter().rev().find(|(k, _)| k == key) {
            return Ok(v.clone());
        }
        self.guard.get(self.db, key)
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.push((key, Some(IVec::from(value))));
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        self.writes.push((key, None));
    }

    /// Keys with a prefix as this transaction sees them, in key order.
    pub fn scan_prefix(&mut self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, IVec)>> {
        let layers = self
            .guard
            .pending
            .iter()
            .chain(self.writes.iter().map(|(k, v)| (k, v)));
        scan_layers(self.db, prefix, layers)
    }

    pub fn commit(mut self) {
        let writes = std::mem::take(&mut self.writes);
        if let Some(journal) = self.guard.journal.as_mut().filter(|_| self.journaled) {
            let thread = std::thread::current().id();
            journal.extend(writes.iter().map(|(k, v)| Change {
                key: k.clone(),
                value: v.as_ref().map(|v| v.to_vec()),
                thread,
            }));
        }
        for (k, v) in writes {
            self.guard.pending.insert(k, v);
        }
    }
}
