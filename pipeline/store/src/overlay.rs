//! The write overlay in front of sled: reads see pending writes, writes
//! wait in memory, and a flush makes everything pending durable at once.
//!
//! A [`Tx`] groups the writes of one event (or one moderator action): they
//! enter the pending set together when the transaction commits, under the
//! overlay's lock, so a flush never splits them. Reads are cached (also
//! negatively) so the hot path touches sled only for records it has not
//! seen recently. Values are [`sled::IVec`]s: reading a cached record shares
//! its bytes instead of copying them.
//!
//! ## Durability: a write-ahead log, applied in the background
//!
//! [`Overlay::flush`] writes the pending batch as ONE file in the store's
//! `wal/` directory (written to a temporary name, fsynced, renamed, the
//! directory fsynced) and returns: the batch is durable. An applier thread
//! then inserts the batch's records into sled key by key, records the
//! batch's epoch as applied, syncs sled and deletes the file. Until then the
//! batch stays readable here, so readers never see sled half-updated.
//!
//! Resident keyspaces ([`Overlay::track_keys`]) are answered from memory
//! and live on disk in the history image ([`crate::image`]), not in sled;
//! their writes are held back and written there by checkpoints ([`Held`]),
//! one delta file each, their batches' log files kept until then. The text
//! bands among them are logged as touches, and reach the image as records
//! at cuts only ([`Bands`]).
//!
//! At open, every log file newer than the applied epoch is applied again,
//! in epoch order (each holds the final value of its keys, so applying one
//! twice changes nothing; band touches are replayed only for batches the
//! image does not hold); older ones and temporary files (a flush that
//! never returned) are deleted. After a crash the store therefore holds
//! exactly the batches whose flush returned — whole events, as before.
//!
//! Why not one atomic `sled::Batch`: sled applies a batch under a global
//! write lock and, once any batch has been applied, makes every read take
//! the read side of that lock. Applying the random keys of 5,000 events
//! (sled pulling a page per key) took 40% of the history thread; now it
//! runs on another core while the history thread reads.

use crate::records::{BandRecord, BandSellers, PriceRecord};
use crate::{image, keys, Result, StoreError};
use serde::de::DeserializeOwned;
use sled::IVec;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};

/// Past this many cached reads, the read cache is dropped and refilled.
/// Measured on the 400k day set (BENCHMARKS.md): 400,000 → 100,000 cuts
/// peak RSS from 780 to 569 MB for 7% of speed.
const CACHE_CAP: usize = 100_000;

/// Batches durable in the log but not yet in sled, at most: a flush waits
/// for the applier past this (memory stays bounded when sled is slower than
/// the events).
const MAX_APPLYING: usize = 2;

/// Writes of resident keyspaces are held back ([`Held`]) until a
/// checkpoint writes them into the history image: past a number of
/// distinct keys held (`checkpoint_keys` of [`Overlay::open`]), this many
/// batches (the Kafka loop flushes small ones often: their log files wait
/// for the checkpoint), or this long after the oldest — which also bounds
/// the log a crash leaves to apply at open.
const HOLD_BATCHES: usize = 256;
const HOLD_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// A flush's log buffer is kept for the next one up to this capacity (a
/// day-set replay's flushes write 10–25 MB; a bigger one is let go).
const WAL_BUF_KEEP: usize = 64 << 20;

/// The applier's work.
enum Job {
    /// A flushed batch to put into sled: durable in its log file already
    /// (`logged`), or flushed behind ([`Overlay::flush_behind`]), its log
    /// file written here first.
    Batch {
        epoch: u64,
        layer: Taken,
        logged: bool,
    },
    /// Someone waits for every batch up to this epoch to be wholly in the
    /// store ([`Overlay::settle`]): what is held back goes to the image now.
    Checkpoint(u64),
}

/// The maps of the overlay: keys are short, hashing them must be cheap.
type Map = HashMap<Vec<u8>, Option<IVec>, foldhash::fast::RandomState>;

/// The sled key holding the epoch of the last batch applied.
const APPLIED_KEY: &[u8] = b"mwal_applied";

#[derive(Debug, Default)]
struct Inner {
    /// Written, not yet flushed (None = removed).
    pending: Map,
    /// Older pending writes set apart by [`Overlay::seal`], to be flushed
    /// on their own (the Kafka loop judges the next batch meanwhile).
    sealed: Option<Map>,
    /// Whether the sealed layer ends at a cut (see [`Bands`]; a seal makes
    /// none, so no records come with it).
    sealed_at_cut: bool,
    /// The last layer flushed does not end at a cut: a checkpoint cannot
    /// reach it before another flush (see [`Overlay::settle`]).
    uncut: bool,
    /// Flushed (durable in the log), being applied to sled, oldest first.
    applying: VecDeque<(u64, Arc<Map>)>,
    /// Read from (or applied to) sled.
    cache: Map,
    /// An applied batch's table, emptied, to take the pending writes' place
    /// at the next flush or seal: a fresh one regrew from nothing each time
    /// (rehashes and page faults, ~2% of a replay's history thread).
    spare: Option<Map>,
    /// Committed writes not yet taken by [`Overlay::take_journal`], when
    /// change capture is on (the Kafka changelog).
    journal: Option<Vec<Change>>,
    /// Why the applier stopped, if it did: every later flush reports it.
    failed: Option<String>,
    /// The epoch the pending writes will be flushed as.
    pending_epoch: u64,
    /// The last epoch whose log file is written (durable).
    durable: u64,
    /// The last epoch with every batch up to it wholly in the store — sled,
    /// and the history image for resident keyspaces (the applied epoch sled
    /// records): behind `durable` while batches are applied, and while
    /// resident writes are held back ([`Held`]).
    in_sled: u64,
    /// Every key sled may hold, once [`Overlay::track_keys`] was called: a
    /// read of a key it has never seen is answered without sled. Keys of
    /// resident keyspaces are left out (the resident map answers them).
    present: Option<Present>,
    /// The keyspaces kept wholly in memory, once [`Overlay::track_keys`]
    /// was called with some (see [`Resident`]).
    resident: Option<Resident>,
    /// Transactions committed with writes: reads made while it stayed the
    /// same are still what the store holds.
    commits: u64,
}

/// The keys that may be in sled, as Bloom filters (no false negatives): a
/// new listing, seller or text band is a key sled has never held, and
/// looking it up there costs a descent through pages sled may have to read
/// back from disk (27% of the replay's samples on the 400k day set).
/// Filters are added, each twice the capacity of the last, as keys come;
/// removed keys stay in (a false positive only costs the sled read).
#[derive(Debug)]
struct Present {
    /// All with the same hasher: a key is hashed once for all of them.
    filters: Vec<fastbloom::BloomFilter<foldhash::fast::FixedState>>,
    /// Capacity of the last filter, and keys in it.
    capacity: usize,
    in_last: usize,
}

impl Present {
    /// False positives per filter (≈ 9.6 bits per key).
    const FALSE_POS: f64 = 0.01;
    /// 4.8 MB: one filter holds the 400k-event day set's ~2.5M keys (each
    /// filter more costs every lookup of a new key one more cache miss).
    const FIRST_CAPACITY: usize = 1 << 22;
    /// The filters' hasher (fixed: the hash of a key is shared by every
    /// filter; foldhash: store keys are short).
    const HASHER: foldhash::fast::FixedState =
        foldhash::fast::FixedState::with_seed(0x6861_6563_6869);

    fn new() -> Present {
        Present {
            filters: Vec::new(),
            capacity: 0,
            in_last: 0,
        }
    }

    fn hash(key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        Self::HASHER.hash_one(key)
    }

    fn may_contain(&self, key: &[u8]) -> bool {
        self.may_contain_hash(Self::hash(key))
    }

    fn may_contain_hash(&self, h: u64) -> bool {
        // The largest (newest) first: it holds the most keys.
        self.filters.iter().rev().any(|f| f.contains_hash(h))
    }

    fn insert(&mut self, key: &[u8]) {
        let h = Self::hash(key);
        if self.may_contain_hash(h) {
            return;
        }
        if self.in_last >= self.capacity {
            self.capacity = (self.capacity * 2).max(Self::FIRST_CAPACITY);
            self.in_last = 0;
            self.filters.push(
                fastbloom::BloomFilter::with_false_pos(Self::FALSE_POS)
                    .hasher(Self::HASHER)
                    .expected_items(self.capacity),
            );
        }
        if let Some(last) = self.filters.last_mut() {
            last.insert_hash(h);
            self.in_last += 1;
        }
    }
}

/// Keyspaces held wholly in memory (from the open when the store has a
/// history image, else from [`Overlay::track_keys`]): every
/// key of them with its current value (committed writes included, pending
/// or not), so a read never goes further. The history's own records —
/// sellers, text bands, prices, identifiers — are read for every event
/// and are small; random sellers among a million missed every cache and
/// made sled's page lookups a third of a history cycle. Values are shared
/// with the pending layers (an [`IVec`] clone is a reference count).
#[derive(Debug)]
struct Resident {
    /// `prefixes[b]`: keys starting with byte `b` are resident.
    prefixes: [bool; 256],
    /// Keys as [`IVec`]s: up to 22 bytes (every resident key) they sit in
    /// the table itself, so a lookup does not chase a pointer to compare.
    map: HashMap<IVec, Slot, foldhash::fast::RandomState>,
    /// Keys whose slot may be [`Slot::Typed`] and dirty (see
    /// [`Inner::materialize`]); a key whose slot was replaced since is
    /// skipped there.
    dirty: Vec<IVec>,
    /// The text bands, when their keyspace is resident (see [`Bands`]).
    bands: Option<Bands>,
}

/// The near-duplicate text index, resident: every listing reads six bands
/// and touches six, most of them new keys with one seller. As generic
/// records (byte keys, boxed decoded values, a closure per change and a
/// placeholder per changed key in the pending layer) they were a quarter
/// of a replay's CPU: ~11 µs per event on the 400k day set, measured by
/// dropping them (BENCHMARKS.md, 13th session). Here a band is its 64-bit
/// id and its sellers, inline when there is one; a change is a (band,
/// seller, time) touch. Outside, the keyspace looks like any other: its
/// records reach the history image as [`BandRecord`]s, and bytes written
/// under a band key (recovery, compaction, the image) are decoded into it.
///
/// Flushes log the TOUCHES, not the records: 24 bytes per touch (under the
/// key [`TOUCHES`]) instead of a record of up to 32 sellers (~520 bytes)
/// for every band a batch touched — two thirds of a log file's bytes, and
/// their encoding a tenth of the history thread. Records are encoded only
/// at a CUT: a flush at which every band changed since the previous cut is
/// encoded (handed to the applier with the batch, not logged). The history
/// image is checkpointed at cuts only, so the image holds each band as of
/// an epoch, and the log files after it hold the touches that follow;
/// recovery replays those in order. A flush is a cut when the applier asks
/// for one (a checkpoint is due) and at every [`Overlay::flush`].
#[derive(Debug, Default)]
struct Bands {
    map: HashMap<u64, BandSlot, foldhash::fast::RandomState>,
    /// Bands touched since the last cut (each once): the next cut encodes
    /// them.
    dirty: Vec<u64>,
    /// The touches since the last [`Inner::materialize`], [`TOUCH_BYTES`]
    /// each, in commit order.
    log: Vec<u8>,
    /// The generation of [`Inner::materialize`]: a slot touched in this
    /// one has it (see `fresh`).
    generation: u32,
    /// Bands touched since the last [`Inner::materialize`] (each once):
    /// what [`Overlay::pending`] counts for them.
    fresh: usize,
    /// Bands written whole (a put, a removal) since the last
    /// [`Inner::materialize`], when their touches are logged: their
    /// records go into the log instead of their touches (see
    /// [`Inner::materialize`]).
    written: Vec<u64>,
    /// Band keys whose bytes did not decode: kept as bytes in
    /// [`Resident::map`] (a read of one reports the damage).
    damaged: usize,
}

#[derive(Debug)]
struct BandSlot {
    sellers: BandSellers,
    /// Touched since the last cut (listed in [`Bands::dirty`]).
    dirty: bool,
    /// The [`Bands::generation`] it was last touched in.
    generation: u32,
}

/// The key under which a batch logs its band touches: the band prefix
/// alone (band keys are 9 bytes; this one is never a record, nor resident
/// data: the applier and recovery read it as touches).
const TOUCHES: &[u8] = &[keys::BAND];

/// One logged touch: band id, seller hash, time (little-endian).
const TOUCH_BYTES: usize = 24;

/// The touches logged in `bytes`: (band, seller, time).
fn touches_of(bytes: &[u8]) -> impl Iterator<Item = (u64, u64, i64)> + '_ {
    bytes.chunks_exact(TOUCH_BYTES).map(|c| {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&c[i..i + 8]);
            w
        };
        (
            u64::from_le_bytes(word(0)),
            u64::from_le_bytes(word(8)),
            i64::from_le_bytes(word(16)),
        )
    })
}

/// Band records a cut encoded, for the checkpoint (see [`Bands`]).
type CutRecords = Vec<(Vec<u8>, Option<IVec>)>;

/// A text band's (seller hash, last time) entries, if it has a record.
pub type BandView<'a> = Option<&'a [(u64, i64)]>;

/// Asks the CPU to fetch `items` into its caches (a hint: cannot fail).
fn prefetch<T>(items: &[T]) {
    // One item per 64-byte cache line.
    let step = (64 / std::mem::size_of::<T>().max(1)).max(1);
    for item in items.iter().step_by(step) {
        mem_prefetch::prefetch_read_data::<_, 3>(item);
    }
}

/// Whether `key` is in a resident keyspace (`prefixes[b]`: keys starting
/// with byte `b` are).
fn holds(prefixes: &[bool; 256], key: &[u8]) -> bool {
    key.first().is_some_and(|&b| prefixes[b as usize])
}

/// The band id of a band key (`b` and 8 big-endian bytes).
fn band_id(key: &[u8]) -> Option<u64> {
    match key {
        [keys::BAND, id @ ..] => <[u8; 8]>::try_from(id).ok().map(u64::from_be_bytes),
        _ => None,
    }
}

fn band_key(id: u64) -> Vec<u8> {
    keys::key_bytes(keys::BAND, &id.to_be_bytes())
}

/// A band record's bytes, as [`BandRecord`] encodes them (postcard: the
/// length of its one byte string as a varint, then 16-byte entries),
/// written straight into one buffer (through serde it was three copies).
fn band_bytes(sellers: &[(u64, i64)]) -> IVec {
    let mut head = [0u8; 10];
    let mut h = 0;
    let mut n = sellers.len() as u64 * 16;
    while n >= 0x80 {
        head[h] = (n as u8) | 0x80;
        n >>= 7;
        h += 1;
    }
    head[h] = n as u8;
    h += 1;
    let len = h + sellers.len() * 16;
    // The value's one allocation, filled in place (pushed 8 bytes at a
    // time into a growing buffer and then copied, this was 13% of a
    // resident history cycle).
    static ZEROS: [u8; 1024] = [0; 1024];
    let mut v = match ZEROS.get(..len) {
        Some(zeros) => IVec::from(zeros),
        None => IVec::from(vec![0; len]),
    };
    let out = v.as_mut();
    out[..h].copy_from_slice(&head[..h]);
    for (entry, (a, b)) in out[h..].chunks_exact_mut(16).zip(sellers) {
        entry[..8].copy_from_slice(&a.to_le_bytes());
        entry[8..].copy_from_slice(&b.to_le_bytes());
    }
    v
}

/// A record a resident keyspace keeps decoded between flushes
/// ([`Tx::update`], [`Overlay::read_typed`]): text bands and prices are
/// read and rewritten for nearly every listing; decoding and re-encoding
/// them each time cost a fifth of a history cycle's CPU (22 → 18 µs,
/// `cargo bench -p haechi-store --bench history -- resident_history`).
pub trait Typed: std::any::Any + Send + std::fmt::Debug {
    /// The record's bytes as the store keeps them.
    fn encode(&self) -> Vec<u8>;
    fn as_any(&self) -> &dyn std::any::Any;
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

impl<T: serde::Serialize + Send + std::fmt::Debug + 'static> Typed for T {
    fn encode(&self) -> Vec<u8> {
        crate::encode(self)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// The longest value an [`IVec`] holds without a heap allocation.
const INLINE: usize = 22;

/// A resident key's value.
#[derive(Debug)]
enum Slot {
    Bytes(IVec),
    /// Decoded. `dirty`: changed by [`Tx::update`] since it was last
    /// encoded; the pending layer then holds an empty placeholder for the
    /// key, replaced by the encoding before the layer is flushed, sealed or
    /// scanned ([`Inner::materialize`]).
    Typed {
        rec: Box<dyn Typed>,
        dirty: bool,
    },
}

impl Slot {
    fn bytes(&self) -> IVec {
        match self {
            Slot::Bytes(v) => v.clone(),
            Slot::Typed { rec, .. } => IVec::from(rec.encode()),
        }
    }

    /// The record's bytes, for the pending layer: the slot is clean after
    /// it, and keeps the record decoded unless its bytes fit in the slot
    /// itself (cheaper than a decoded record on the heap; most text bands
    /// have one seller).
    fn encode_clean(&mut self) -> IVec {
        let v = self.bytes();
        let small = v.len() <= INLINE;
        match std::mem::replace(self, Slot::Bytes(v.clone())) {
            Slot::Typed { rec, .. } if !small => *self = Slot::Typed { rec, dirty: false },
            _ => {}
        }
        v
    }
}

impl Resident {
    fn new(prefixes: &[u8]) -> Resident {
        let mut r = Resident {
            prefixes: [false; 256],
            map: HashMap::default(),
            dirty: Vec::new(),
            bands: prefixes.contains(&keys::BAND).then(Bands::default),
        };
        for &b in prefixes {
            r.prefixes[b as usize] = true;
        }
        r
    }

    /// The band id of `key` when it is a band of the band index.
    fn band_of(&self, key: &[u8]) -> Option<u64> {
        self.bands.as_ref().and(band_id(key))
    }

    /// The record under `key`, as bytes.
    fn get(&self, key: &[u8]) -> Option<IVec> {
        match self.band_of(key).and_then(|id| self.band(id)) {
            Some(sellers) => Some(band_bytes(sellers)),
            // (Damaged band bytes, if any, are here too.)
            None => self.map.get(key).map(Slot::bytes),
        }
    }

    /// Resident records.
    fn len(&self) -> usize {
        self.map.len() + self.bands.as_ref().map_or(0, |b| b.map.len())
    }

    /// Every resident record as (key, bytes), in no order.
    fn records(&self) -> impl Iterator<Item = (IVec, IVec)> + '_ {
        self.records_with_prefix(&[])
    }

    /// The resident records whose keys start with `prefix`, in no order
    /// (bands encoded only when they can match).
    fn records_with_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (IVec, IVec)> + 'a {
        let bands = self
            .bands
            .iter()
            .filter(move |_| prefix.first().is_none_or(|&p| p == keys::BAND))
            .flat_map(|b| b.map.iter())
            .map(|(&id, b)| (IVec::from(band_key(id)), &b.sellers))
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(k, sellers)| (k, band_bytes(sellers)));
        self.map
            .iter()
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(k, slot)| (k.clone(), slot.bytes()))
            .chain(bands)
    }

    /// The sellers of band `id` (`None`: no record, or not resident).
    fn band(&self, id: u64) -> Option<&[(u64, i64)]> {
        let b = self.bands.as_ref()?.map.get(&id)?;
        Some(&b.sellers)
    }

    /// [`BandRecord::touch`] of band `id` in place; it is then dirty and
    /// the touch logged (unless `clean`: the caller puts the band's bytes in
    /// the pending layer, or replays a log).
    fn touch_band(&mut self, id: u64, seller: u64, t: i64, clean: bool) {
        let Some(bands) = self.bands.as_mut() else {
            return;
        };
        let generation = bands.generation;
        let slot = bands.map.entry(id).or_insert_with(|| BandSlot {
            sellers: BandSellers::new(),
            dirty: false,
            generation: generation.wrapping_sub(1),
        });
        BandRecord::touch_sellers(&mut slot.sellers, seller, t);
        if clean {
            return;
        }
        if slot.generation != generation {
            slot.generation = generation;
            bands.fresh += 1;
        }
        if !std::mem::replace(&mut slot.dirty, true) {
            bands.dirty.push(id);
        }
        bands.log.extend_from_slice(&id.to_le_bytes());
        bands.log.extend_from_slice(&seller.to_le_bytes());
        bands.log.extend_from_slice(&t.to_le_bytes());
    }

    /// Damage in the band index's records read as `ids`, reported as
    /// decoding them reports it.
    fn check_bands(&self, ids: &[u64]) -> Result<()> {
        if self.bands.as_ref().is_some_and(|b| b.damaged > 0) {
            for &id in ids {
                let key = band_key(id);
                if let Some(v) = self.map.get(key.as_slice()) {
                    crate::decode::<BandRecord>(&key, Some(&*v.bytes()))?;
                }
            }
        }
        Ok(())
    }

    fn holds(&self, key: &[u8]) -> bool {
        holds(&self.prefixes, key)
    }

    fn set(&mut self, key: &[u8], value: &Option<IVec>) {
        if let (Some(bands), Some(id)) = (self.bands.as_mut(), band_id(key)) {
            let damaged = self.map.remove(key).is_some();
            bands.damaged -= usize::from(damaged);
            let Some(v) = value else {
                bands.map.remove(&id);
                return;
            };
            match crate::decode::<BandRecord>(key, Some(v)) {
                Ok(Some(rec)) => {
                    bands.map.insert(
                        id,
                        BandSlot {
                            sellers: rec.sellers,
                            dirty: false,
                            generation: bands.generation.wrapping_sub(1),
                        },
                    );
                    return;
                }
                // Kept as bytes: its reads report it.
                _ => {
                    bands.map.remove(&id);
                    bands.damaged += 1;
                }
            }
        }
        match value {
            Some(v) => {
                if let Some(slot) = self.map.get_mut(key) {
                    *slot = Slot::Bytes(v.clone());
                } else {
                    self.map.insert(IVec::from(key), Slot::Bytes(v.clone()));
                }
            }
            None => {
                self.map.remove(key);
            }
        }
    }

    /// Decodes the record under `key` as a `T` where it is (once: it stays
    /// decoded while the key is not written otherwise). No record: nothing.
    fn decode_in_place<T: Typed + DeserializeOwned>(&mut self, key: &[u8]) -> Result<()> {
        let Some(slot) = self.map.get_mut(key) else {
            return Ok(());
        };
        match slot {
            Slot::Bytes(v) => {
                if let Some(rec) = crate::decode::<T>(key, Some(&*v))? {
                    *slot = Slot::Typed {
                        rec: Box::new(rec),
                        dirty: false,
                    };
                }
                Ok(())
            }
            Slot::Typed { rec, .. } if rec.as_any().is::<T>() => Ok(()),
            Slot::Typed { .. } => Err(StoreError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                message: "read as two different record types".into(),
            }),
        }
    }

    fn typed_ref<T: Typed>(&self, key: &[u8]) -> Option<&T> {
        match self.map.get(key)? {
            Slot::Typed { rec, .. } => rec.as_any().downcast_ref::<T>(),
            Slot::Bytes(_) => None,
        }
    }
}

/// An in-place change queued by [`Tx::update`]: given the key's current
/// record (if any), changes it, or returns the new record.
struct Update(Box<UpdateFn>);

type UpdateFn = dyn FnOnce(Option<&mut TypedBox>) -> Option<TypedBox>;
type TypedBox = Box<dyn Typed>;

impl std::fmt::Debug for Update {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Update")
    }
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
struct Shared {
    db: sled::Db,
    /// The history image's directory (see [`crate::image`]).
    history: PathBuf,
    /// The one-byte key prefixes of the keyspaces the image holds.
    prefixes: Vec<u8>,
    /// Held by a merge of the image for its whole run, and by a move of the
    /// history back into sled while it deletes the image: a merge finishing
    /// after that would bring a base back.
    image_lock: Arc<Mutex<()>>,
    inner: Mutex<Inner>,
    /// Signalled when a batch becomes durable, and when the applier
    /// finishes (or fails) one.
    applied: Condvar,
    /// Set by the applier when a checkpoint is due and the last batch it
    /// holds does not end at a cut: the next flush makes one.
    want_cut: AtomicBool,
}

/// A layer taken for a flush ([`Overlay::take_layer`]).
struct Taken {
    writes: Arc<Map>,
    /// It ends at a cut, with the band records the cut encoded.
    cut: Option<CutRecords>,
    /// Bands changed since the last cut, after it.
    uncut_bands: usize,
}

/// What a flush keeps from one to the next.
#[derive(Debug, Default)]
struct Flushing {
    /// The next epoch.
    epoch: u64,
    /// The log file's bytes: kept, so a flush writes them into memory it
    /// used before (a fresh buffer of megabytes is page faults and zeroed
    /// pages at every flush: 2% of a replay's samples).
    buf: Vec<u8>,
    /// The last epoch handed to the applier to log ([`Overlay::flush_behind`]):
    /// a flush writing its own log waits for it first, so that log files are
    /// written in epoch order.
    behind: Option<u64>,
}

#[derive(Debug)]
pub struct Overlay {
    shared: Arc<Shared>,
    wal: PathBuf,
    /// Held for the whole of a flush, so log files are written and applied
    /// in epoch order.
    flushing: Mutex<Flushing>,
    jobs: Option<mpsc::Sender<Job>>,
    applier: Option<std::thread::JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the maps half-updated in a
    // way that matters (entries are replaced whole): keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    fn get(&mut self, db: &sled::Db, key: &[u8]) -> Result<Option<IVec>> {
        if let Some(r) = self.resident.as_ref().filter(|r| r.holds(key)) {
            return Ok(r.get(key));
        }
        // Every key written with a value, pending or in sled, is in the
        // filter: a key it has never seen (a new listing, a new text band)
        // is nowhere, and one hash answers it instead of a probe per layer.
        if self.present.as_ref().is_some_and(|p| !p.may_contain(key)) {
            return Ok(None);
        }
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        if let Some(v) = self.sealed.as_ref().and_then(|m| m.get(key)) {
            return Ok(v.clone());
        }
        if let Some(v) = self.applying.iter().rev().find_map(|(_, m)| m.get(key)) {
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

    /// Puts what changed in place since the last call into the pending
    /// layer — the encoding of every record changed in place (where a
    /// placeholder stood for it) and the band touches (see [`Bands`]) —
    /// before that layer is flushed, sealed or scanned. At a `cut`, also
    /// encodes every band changed since the last cut. Returns, when the
    /// layer ends at a cut (no band changed since the last one is left
    /// unencoded), the records the cut encoded (none when it was no cut).
    fn materialize(&mut self, cut: bool) -> Option<CutRecords> {
        let Inner {
            resident, pending, ..
        } = self;
        let Some(r) = resident.as_mut() else {
            return Some(Vec::new());
        };
        let mut records = Vec::new();
        let mut at_cut = true;
        let mut written = Vec::new();
        if let Some(bands) = r.bands.as_mut() {
            bands.generation = bands.generation.wrapping_add(1);
            bands.fresh = 0;
            // The layer's touches, those a scan put there first.
            let earlier = pending.remove(TOUCHES).flatten();
            let mut log = match &earlier {
                Some(before) => [before.as_ref(), &bands.log].concat(),
                None => std::mem::take(&mut bands.log),
            };
            if !bands.written.is_empty() {
                // Bands written whole after touches of this layer: the log
                // replays a layer's records before its touches, so their
                // records as they are now go in instead of their touches.
                written = std::mem::take(&mut bands.written);
                written.sort_unstable();
                written.dedup();
                log = log
                    .chunks_exact(TOUCH_BYTES)
                    .filter(|touch| {
                        touches_of(touch).all(|(id, _, _)| written.binary_search(&id).is_err())
                    })
                    .flatten()
                    .copied()
                    .collect();
            }
            if !log.is_empty() {
                pending.insert(TOUCHES.to_vec(), Some(IVec::from(log.as_slice())));
            }
            // (Its room kept for the next touches.)
            log.clear();
            bands.log = log;
            if cut {
                for id in std::mem::take(&mut bands.dirty) {
                    if let Some(b) = bands.map.get_mut(&id).filter(|b| b.dirty) {
                        b.dirty = false;
                        records.push((band_key(id), Some(band_bytes(&b.sellers))));
                    }
                }
            }
            at_cut = bands.dirty.is_empty();
        }
        for id in written {
            let key = band_key(id);
            let now = r.get(&key);
            pending.insert(key, now);
        }
        for key in std::mem::take(&mut r.dirty) {
            let Some(slot) = r.map.get_mut(&key) else {
                continue;
            };
            if matches!(slot, Slot::Typed { dirty: true, .. }) {
                pending.insert(key.to_vec(), Some(slot.encode_clean()));
            }
        }
        at_cut.then_some(records)
    }

    /// A cut's records not flushed after all (the log file could not be
    /// written): their bands are changed since the last cut again.
    fn cut_failed(&mut self, records: &CutRecords) {
        let Some(bands) = self.resident.as_mut().and_then(|r| r.bands.as_mut()) else {
            return;
        };
        for id in records.iter().filter_map(|(k, _)| band_id(k)) {
            if let Some(b) = bands.map.get_mut(&id) {
                if !std::mem::replace(&mut b.dirty, true) {
                    bands.dirty.push(id);
                }
            }
        }
    }

    /// Applied writes join the read cache (resident ones are already
    /// where reads find them).
    fn applied(&mut self, writes: impl ExactSizeIterator<Item = (Vec<u8>, Option<IVec>)>) {
        if self.cache.len() + writes.len() > CACHE_CAP {
            self.cache.clear();
        }
        match &self.resident {
            Some(r) => self.cache.extend(writes.filter(|(k, _)| !r.holds(k))),
            None => self.cache.extend(writes),
        }
    }

    /// Whether anything committed is not flushed or sealed yet (band
    /// touches reach the pending layer at [`Inner::materialize`]).
    fn has_pending(&self) -> bool {
        !self.pending.is_empty() || self.bands().is_some_and(|b| !b.log.is_empty())
    }

    fn bands(&self) -> Option<&Bands> {
        self.resident.as_ref().and_then(|r| r.bands.as_ref())
    }

    /// Bands changed since the last cut (see [`Bands`]).
    fn uncut_bands(&self) -> usize {
        self.bands().map_or(0, |b| b.dirty.len())
    }

    /// An empty table for the pending writes (the spare one if there is).
    fn fresh_layer(&mut self) -> Map {
        self.spare.take().unwrap_or_default()
    }

    fn check(&self) -> Result<()> {
        match &self.failed {
            Some(why) => Err(StoreError::Wal(why.clone())),
            None => Ok(()),
        }
    }
}

impl Overlay {
    /// The overlay of `db`, its log in `wal`: loads the history image in
    /// `history` when the store has one (its keyspaces, the one-byte key
    /// prefixes `prefixes`, are then resident from the start, see
    /// [`crate::image`]), applies what a crash left in the log, then starts
    /// the applier.
    /// A checkpoint comes past `checkpoint_keys` distinct resident keys
    /// held (see [`Held`]).
    pub fn open(
        db: sled::Db,
        wal: &Path,
        history: &Path,
        prefixes: &[u8],
        checkpoint_keys: usize,
    ) -> Result<Overlay> {
        let (mut resident, image_epoch) = match load_image(&db, history, prefixes)? {
            Some((r, epoch)) => (Some(r), epoch),
            None => (None, 0),
        };
        let applied = recover(&db, wal, history, resident.as_mut(), image_epoch)?;
        let shared = Arc::new(Shared {
            db,
            history: history.to_path_buf(),
            prefixes: prefixes.to_vec(),
            image_lock: Arc::default(),
            inner: Mutex::new(Inner {
                pending_epoch: applied + 1,
                durable: applied,
                in_sled: applied,
                resident,
                ..Inner::default()
            }),
            applied: Condvar::new(),
            want_cut: AtomicBool::new(false),
        });
        let (jobs, rx) = mpsc::channel::<Job>();
        let applier = {
            let shared = Arc::clone(&shared);
            let wal = wal.to_path_buf();
            std::thread::Builder::new()
                .name("haechi-store-apply".into())
                .spawn(move || run_applier(&shared, &wal, rx, checkpoint_keys))
                .map_err(|e| StoreError::Wal(format!("starting the applier: {e}")))?
        };
        Ok(Overlay {
            shared,
            wal: wal.to_path_buf(),
            flushing: Mutex::new(Flushing {
                epoch: applied + 1,
                buf: Vec::new(),
                behind: None,
            }),
            jobs: Some(jobs),
            applier: Some(applier),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.shared.inner)
    }

    /// Waits (releasing the lock) while `busy` holds and the applier has
    /// not failed.
    fn wait_while<'g>(
        &'g self,
        mut inner: MutexGuard<'g, Inner>,
        busy: impl Fn(&Inner) -> bool,
    ) -> MutexGuard<'g, Inner> {
        while busy(&inner) && inner.failed.is_none() {
            inner = self
                .shared
                .applied
                .wait(inner)
                .unwrap_or_else(|p| p.into_inner());
        }
        inner
    }

    /// The current value of a key, pending writes included.
    pub fn get(&self, key: &[u8]) -> Result<Option<IVec>> {
        self.inner().get(&self.shared.db, key)
    }

    /// Calls `f` with the records under `keys` decoded as `T` (`None`:
    /// absent). In a resident keyspace they are read where they stay decoded
    /// between changes ([`Tx::update`]), under the lock; elsewhere they are
    /// decoded into `decoded`, for the caller's updates to reuse.
    pub fn read_typed<T, R>(
        &self,
        keys: &[Vec<u8>],
        decoded: &mut Option<Vec<Option<T>>>,
        f: impl FnOnce(&[Option<&T>]) -> R,
    ) -> Result<R>
    where
        T: Typed + DeserializeOwned,
    {
        let mut inner = self.inner();
        if let Some(r) = inner
            .resident
            .as_mut()
            .filter(|r| keys.iter().all(|k| r.holds(k) && r.band_of(k).is_none()))
        {
            for k in keys {
                r.decode_in_place::<T>(k)?;
            }
            let recs: Vec<Option<&T>> = keys.iter().map(|k| r.typed_ref::<T>(k)).collect();
            return Ok(f(&recs));
        }
        let recs = keys
            .iter()
            .map(|k| crate::decode(k, inner.get(&self.shared.db, k)?))
            .collect::<Result<Vec<Option<T>>>>()?;
        drop(inner);
        let out = f(&recs.iter().map(Option::as_ref).collect::<Vec<_>>());
        *decoded = Some(recs);
        Ok(out)
    }

    /// Calls `f` with the sellers of text bands `bands` (`None`: no
    /// record). With the band index resident they are read where they are,
    /// under the lock; elsewhere their records are decoded into `decoded`,
    /// for the caller's touches to reuse ([`Tx::touch_band`]).
    pub fn read_bands<R>(
        &self,
        bands: &[u64],
        decoded: &mut Option<Vec<Option<BandRecord>>>,
        f: impl FnOnce(&[BandView<'_>]) -> R,
    ) -> Result<R> {
        let mut inner = self.inner();
        if let Some(r) = inner.resident.as_ref().filter(|r| r.bands.is_some()) {
            r.check_bands(bands)?;
            let recs: smallvec::SmallVec<[BandView<'_>; 8]> =
                bands.iter().map(|&id| r.band(id)).collect();
            return Ok(f(&recs));
        }
        let recs = bands
            .iter()
            .map(|&id| {
                let key = band_key(id);
                crate::decode::<BandRecord>(&key, inner.get(&self.shared.db, &key)?)
            })
            .collect::<Result<Vec<_>>>()?;
        drop(inner);
        let sellers: Vec<BandView<'_>> = recs
            .iter()
            .map(|r| r.as_ref().map(|r| &r.sellers[..]))
            .collect();
        let out = f(&sellers);
        *decoded = Some(recs);
        Ok(out)
    }

    /// Asks the CPU to fetch the resident records under `keys` and the
    /// sellers of text bands `bands` into its caches, for reads of them
    /// after other work: looked up together, their cache misses overlap.
    pub fn prefetch(&self, keys: &[&[u8]], bands: &[u64]) {
        let inner = self.inner();
        let Some(r) = inner.resident.as_ref() else {
            return;
        };
        for key in keys {
            match r.map.get(*key) {
                Some(Slot::Bytes(v)) => prefetch(v.as_ref()),
                Some(Slot::Typed { rec, .. }) => {
                    // (Prices are the records kept decoded that are read.)
                    if let Some(p) = rec.as_any().downcast_ref::<PriceRecord>() {
                        prefetch(&p.samples);
                    }
                }
                None => {}
            }
        }
        for &id in bands {
            if let Some(sellers) = r.band(id) {
                prefetch(sellers);
            }
        }
    }

    /// Transactions committed with writes so far (see [`Tx::commits`]).
    pub fn commits(&self) -> u64 {
        self.inner().commits
    }

    /// Starts a group of writes that become pending together.
    pub fn begin(&self) -> Tx<'_> {
        Tx {
            guard: self.inner(),
            db: &self.shared.db,
            writes: Vec::new(),
            updates: Vec::new(),
            touches: Vec::new(),
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
        let mut inner = self.inner();
        if inner.journal.is_none() {
            inner.journal = Some(Vec::new());
        }
    }

    /// The writes committed since the last call, in commit order (empty
    /// when change capture is off).
    pub fn take_journal(&self) -> Vec<Change> {
        self.inner()
            .journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Starts tracking which keys exist (see [`Present`]) and, when
    /// `resident`, holds the history keyspaces (the prefixes given to
    /// [`Overlay::open`]) in memory (see [`Resident`]): reads every record
    /// of sled once, so it is for
    /// long-running loops, not one-off commands. Returns the number of keys
    /// found and how many of them are resident.
    ///
    /// A store keeps its resident keyspaces in the history image
    /// ([`crate::image`]), not in sled: asked to make them resident, a store
    /// holding them in sled moves them into a new image (written whole,
    /// then removed from sled); asked for none, a store with an image puts
    /// them back into sled and deletes the image. A crash in between leaves
    /// a store whose image, if there is one, holds everything (sled's
    /// leftovers are removed at the next open).
    pub fn track_keys(&self, resident: bool) -> Result<(usize, usize)> {
        let resident: &[u8] = if resident { &self.shared.prefixes } else { &[] };
        let (tracking, holds) = {
            let inner = self.inner();
            (inner.present.is_some(), inner.resident.is_some())
        };
        if tracking {
            return Ok((0, 0));
        }
        let moving = holds == resident.is_empty();
        // Under the lock from here: a batch applied while sled is scanned is
        // still in `applying` (the applier leaves it only under this lock).
        let mut inner = self.inner();
        // The history moves: everything flushed must be where it is first;
        // moving back into sled, nothing may be pending either (sled gets
        // the resident map, which holds every committed write: one not yet
        // durable would reach sled without the rest of its event).
        loop {
            let unflushed = holds && (inner.has_pending() || inner.sealed.is_some());
            let unapplied = !inner.applying.is_empty() || inner.in_sled < inner.durable;
            if !moving || !(unflushed || unapplied) {
                break;
            }
            drop(inner);
            if unflushed {
                self.flush()?;
            }
            self.settle()?;
            inner = self.inner();
        }
        if moving && holds {
            self.history_into_sled(&mut inner)?;
        }
        let mut res = inner
            .resident
            .take()
            .unwrap_or_else(|| Resident::new(resident));
        let importing = moving && !resident.is_empty();
        let mut present = Present::new();
        let mut n = 0;
        // Sled's records in key order: the resident ones, for a new image.
        let mut base: Vec<(IVec, IVec)> = Vec::new();
        for item in self.shared.db.iter() {
            let (key, value) = item?;
            n += 1;
            if res.holds(&key) {
                if importing {
                    res.set(&key, &Some(value.clone()));
                    base.push((key, value));
                }
            } else {
                present.insert(&key);
            }
        }
        if importing {
            let epoch = inner.in_sled;
            image::write(
                &self.shared.history,
                false,
                epoch,
                base.iter().map(|(k, v)| (k.as_ref(), Some(v.as_ref()))),
            )?;
            for (k, _) in &base {
                self.shared.db.remove(k)?;
            }
            self.shared.db.flush()?;
            tracing::info!(
                records = base.len(),
                epoch,
                "history keyspaces moved from sled into the history image"
            );
        }
        n += res.len() - base.len();
        for (k, v) in layers(&inner) {
            if !res.holds(k) {
                present.insert(k);
            } else if importing {
                // (A store resident before has every committed write in its
                // map already, and placeholders in its layers.)
                res.set(k, v);
            }
        }
        // The read cache holds nothing resident from now on.
        inner.cache.retain(|k, _| !res.holds(k));
        let resident_keys = res.len();
        inner.present = Some(present);
        inner.resident = (!resident.is_empty()).then_some(res);
        Ok((n, resident_keys))
    }

    /// Puts the resident keyspaces back into sled and deletes the history
    /// image (everything flushed is applied: see [`Overlay::track_keys`]).
    fn history_into_sled(&self, inner: &mut Inner) -> Result<()> {
        // Records changed in place become bytes in the pending layer (which
        // now goes to sled whole); band touches have no place there (the
        // records below hold their effects).
        inner.materialize(false);
        inner.pending.remove(TOUCHES);
        let Some(r) = inner.resident.take() else {
            return Ok(());
        };
        let mut records: Vec<(IVec, IVec)> = r.records().collect();
        records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in &records {
            self.shared.db.insert(k, v.clone())?;
        }
        self.shared.db.flush()?;
        {
            let _merges_wait = lock(&self.shared.image_lock);
            image::remove_all(&self.shared.history)?;
        }
        tracing::info!(
            records = records.len(),
            "history keyspaces moved from the history image back into sled"
        );
        Ok(())
    }

    /// Number of pending writes (a band touched counts once).
    pub fn pending(&self) -> usize {
        let inner = self.inner();
        inner.pending.len()
            + inner.bands().map_or(0, |b| b.fresh)
            + inner.sealed.as_ref().map_or(0, HashMap::len)
    }

    /// Sets the pending writes apart, for [`Overlay::flush_sealed`]; writes
    /// committed from now on stay out of that flush. A layer sealed before
    /// and not flushed yet is flushed first.
    pub fn seal(&self) -> Result<()> {
        if self.inner().sealed.is_some() {
            self.flush_sealed()?;
        }
        let mut inner = self.inner();
        // (Not a cut: those come with flushes of the pending writes.)
        let at_cut = inner.materialize(false).is_some();
        if !inner.pending.is_empty() {
            let fresh = inner.fresh_layer();
            inner.sealed_at_cut = at_cut;
            inner.sealed = Some(std::mem::replace(&mut inner.pending, fresh));
            // The sealed layer is flushed as the epoch pending had.
            inner.pending_epoch += 1;
        }
        Ok(())
    }

    /// Makes the sealed writes durable (like [`Overlay::flush`], without
    /// the writes committed since [`Overlay::seal`]).
    pub fn flush_sealed(&self) -> Result<()> {
        self.flush_layer(true)
    }

    /// Makes every pending write durable: one log file, fsynced. sled gets
    /// them from the applier. The flush is a cut (see [`Bands`]): the
    /// history image can be checkpointed up to it.
    pub fn flush(&self) -> Result<()> {
        self.flush_layer(true)?;
        self.flush_layer(false)
    }

    /// Flushes the sealed layer, or the pending writes, as one epoch.
    fn flush_layer(&self, sealed: bool) -> Result<()> {
        let mut flushing = lock(&self.flushing);
        if let Some(e) = flushing.behind.take() {
            self.wait_logged(e)?;
        }
        let Flushing { epoch, buf, .. } = &mut *flushing;
        // (The pending writes' flush is a cut: see `Bands`.)
        let Some(layer) = self.take_layer(sealed, *epoch, true)? else {
            return Ok(());
        };
        if let Err(e) = write_wal(&self.wal, *epoch, &layer.writes, buf) {
            // Not durable: back where they were (writes made since win).
            let mut inner = self.inner();
            inner.applying.pop_back();
            inner.uncut = true;
            if let Some(records) = &layer.cut {
                inner.cut_failed(records);
            }
            let writes = layer.writes;
            if sealed {
                inner.sealed = Some(Arc::unwrap_or_clone(writes));
                inner.sealed_at_cut = layer.cut.is_some();
            } else {
                inner.pending_epoch = *epoch;
                for (k, v) in writes.iter() {
                    match (inner.pending.get_mut(k), v) {
                        // Touches logged since go after these.
                        (Some(Some(since)), Some(before)) if k == TOUCHES => {
                            *since = IVec::from([before.as_ref(), since.as_ref()].concat());
                        }
                        _ => {
                            inner.pending.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                }
            }
            return Err(e);
        }
        mark_durable(&self.shared, *epoch);
        let batch = Job::Batch {
            epoch: *epoch,
            layer,
            logged: true,
        };
        *epoch += 1;
        self.send(batch)
    }

    /// Hands the applier a job.
    fn send(&self, job: Job) -> Result<()> {
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if sent {
            Ok(())
        } else {
            Err(StoreError::Wal("the applier stopped".into()))
        }
    }

    /// [`Overlay::flush`] of the pending writes without waiting for their
    /// log file: the applier writes it, then puts the batch into sled. What
    /// was committed before is durable once [`Overlay::durable_point`]'s
    /// epoch is (a later [`Overlay::flush`] waits for it); a failure to
    /// write stops the applier (every later flush reports it), and a crash
    /// before the file is written undoes the batch, as if never flushed.
    /// For replays, whose flushes bound memory rather than promise anything.
    pub fn flush_behind(&self) -> Result<()> {
        if self.inner().sealed.is_some() {
            // Sealed writes are the flush owner's: flushed as it flushes.
            return self.flush();
        }
        let mut flushing = lock(&self.flushing);
        let epoch = flushing.epoch;
        let Some(layer) = self.take_layer(false, epoch, false)? else {
            return Ok(());
        };
        self.send(Job::Batch {
            epoch,
            layer,
            logged: false,
        })?;
        flushing.behind = Some(epoch);
        flushing.epoch += 1;
        Ok(())
    }

    /// The sealed layer, or the pending writes, as batch `epoch`: readable
    /// among the batches being applied (None: nothing to flush). Waits while
    /// the applier has `MAX_APPLYING` batches. The pending writes' layer is
    /// a cut (see [`Bands`]) when `cut` or when the applier asked for one.
    fn take_layer(&self, sealed: bool, epoch: u64, cut: bool) -> Result<Option<Taken>> {
        let mut inner = self.inner();
        inner.check()?;
        // (A cut is something to flush when bands changed since the last
        // one, or when the last batch flushed does not end at one.)
        let wants_cut = |inner: &Inner| {
            (cut || self.shared.want_cut.load(Ordering::SeqCst))
                && (inner.uncut_bands() > 0 || inner.uncut)
        };
        let empty = if sealed {
            inner.sealed.is_none()
        } else {
            // (A cut to make is something to flush.)
            !inner.has_pending() && !wants_cut(&inner)
        };
        if empty {
            return Ok(None);
        }
        inner = self.wait_while(inner, |i| i.applying.len() >= MAX_APPLYING);
        inner.check()?;
        let (writes, cut) = if sealed {
            let cut = std::mem::take(&mut inner.sealed_at_cut).then(Vec::new);
            (inner.sealed.take().unwrap_or_default(), cut)
        } else {
            // Last, under the lock the layer is taken with: nothing can
            // change in place between the two.
            let cut = cut || self.shared.want_cut.swap(false, Ordering::SeqCst);
            let cut = inner.materialize(cut);
            inner.pending_epoch = epoch + 1;
            let fresh = inner.fresh_layer();
            (std::mem::replace(&mut inner.pending, fresh), cut)
        };
        inner.uncut = cut.is_none();
        let writes = Arc::new(writes);
        inner.applying.push_back((epoch, Arc::clone(&writes)));
        Ok(Some(Taken {
            writes,
            cut,
            uncut_bands: inner.uncut_bands(),
        }))
    }

    /// Waits until the log file of `epoch` is written (or the applier
    /// failed).
    fn wait_logged(&self, epoch: u64) -> Result<()> {
        self.wait_while(self.inner(), |i| i.durable < epoch).check()
    }

    /// The epoch by whose flush everything committed so far is durable.
    pub fn durable_point(&self) -> u64 {
        let inner = self.inner();
        // A sealed layer is flushed as the epoch before the pending one's.
        if !inner.has_pending() {
            inner.pending_epoch - 1
        } else {
            inner.pending_epoch
        }
    }

    /// Waits (at most `timeout`) until the flush of `epoch` has written its
    /// log file; returns whether it has.
    pub fn wait_durable(&self, epoch: u64, timeout: std::time::Duration) -> Result<bool> {
        let deadline = std::time::Instant::now() + timeout;
        let mut inner = self.inner();
        while inner.durable < epoch && inner.failed.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            inner = self
                .shared
                .applied
                .wait_timeout(inner, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        inner.check()?;
        Ok(inner.durable >= epoch)
    }

    /// Waits until every batch flushed so far is wholly in the store
    /// (sled, and held-back writes in the history image) before reading
    /// sled directly: compaction's scans, counts. Batches flushed meanwhile
    /// are not waited for. When the last batch flushed is not a cut, the
    /// pending writes are flushed first, as one.
    pub fn settle(&self) -> Result<()> {
        // The history image is checkpointed at cuts only (see `Bands`):
        // when the last batch flushed does not end at one, a flush (of what
        // is pending too) makes one. (Never under change capture, whose
        // band changes are records: the Kafka loop's flushes stay its own.)
        let mut inner = self.inner();
        while inner.uncut {
            drop(inner);
            self.flush()?;
            inner = self.inner();
        }
        inner.check()?;
        let target = inner.durable;
        if inner.in_sled < target {
            // Behind the batches up to it in the applier's queue.
            self.send(Job::Checkpoint(target))?;
        }
        self.wait_while(inner, |i| i.in_sled < target).check()
    }

    /// Bytes of the overlay's own files: log files not yet applied and the
    /// history image.
    pub fn file_bytes(&self) -> u64 {
        let wal: u64 = std::fs::read_dir(&self.wal)
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        wal + image::bytes(&self.shared.history)
    }

    /// The keys of a resident keyspace, in no order (`None`: not resident).
    pub fn resident_keys(&self, prefix: u8) -> Option<Vec<IVec>> {
        let inner = self.inner();
        let r = inner
            .resident
            .as_ref()
            .filter(|r| r.prefixes[prefix as usize])?;
        let bands = r
            .bands
            .iter()
            .filter(|_| prefix == keys::BAND)
            .flat_map(|b| b.map.keys().map(|&id| IVec::from(band_key(id))));
        Some(
            r.map
                .keys()
                .filter(|k| k.first() == Some(&prefix))
                .cloned()
                .chain(bands)
                .collect(),
        )
    }

    /// Records, bytes and the largest record's bytes of each resident
    /// keyspace, by prefix (for `haechi store stats`).
    pub fn resident_stats(&self) -> Vec<(u8, u64, u64, u64)> {
        let inner = self.inner();
        let Some(r) = inner.resident.as_ref() else {
            return Vec::new();
        };
        let mut by: std::collections::BTreeMap<u8, (u64, u64, u64)> = Default::default();
        for (k, v) in r.records() {
            let Some(&p) = k.first() else { continue };
            let len = v.len() as u64;
            let e = by.entry(p).or_default();
            e.0 += 1;
            e.1 += k.len() as u64 + len;
            e.2 = e.2.max(len);
        }
        by.into_iter().map(|(p, (n, b, l))| (p, n, b, l)).collect()
    }

    /// Keys with a prefix, pending writes included, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, IVec)>> {
        let mut inner = self.inner();
        inner.materialize(false);
        scan_layers(&self.shared.db, &inner, prefix, std::iter::empty())
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        // The applier finishes what was flushed, then stops.
        self.jobs = None;
        if let Some(h) = self.applier.take() {
            let _ = h.join();
        }
    }
}

/// The writes above sled, oldest layer first.
fn layers(inner: &Inner) -> impl Iterator<Item = (&Vec<u8>, &Option<IVec>)> {
    inner
        .applying
        .iter()
        .flat_map(|(_, m)| m.iter())
        .chain(inner.sealed.iter().flatten())
        .chain(inner.pending.iter())
}

/// The applier: each flushed batch into sled, in epoch order.
///
/// Once keyspaces are resident ([`Overlay::track_keys`]), their writes are
/// held back ([`Held`]) and written into the history image by checkpoints,
/// one sorted delta file each: reads never reach sled for them, and a text
/// band, a price or a seller written by many batches costs one entry per
/// checkpoint instead of a sled insert per batch.
fn run_applier(shared: &Shared, wal: &Path, jobs: mpsc::Receiver<Job>, checkpoint_keys: usize) {
    let mut held = Held {
        checkpoint_keys,
        ..Held::default()
    };
    // The log file of batches flushed behind (see `Flushing::buf`).
    let mut buf = Vec::new();
    loop {
        // A checkpoint under way (or due) goes on between batches; an idle
        // applier holding writes wakes up for their time limit. One due
        // while the last batch held does not end at a cut waits for the
        // next flush, asked to be one.
        let job = if held.due() && held.at_cut {
            match jobs.try_recv() {
                Ok(job) => Some(job),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => break,
            }
        } else if held.due() {
            shared.want_cut.store(true, Ordering::SeqCst);
            match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => break,
            }
        } else if let Some(since) = held.since {
            match jobs.recv_timeout(HOLD_TIME.saturating_sub(since.elapsed())) {
                Ok(job) => Some(job),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => break,
            }
        };
        let done = match job {
            Some(Job::Batch {
                epoch,
                layer,
                logged,
            }) => {
                let log = if logged {
                    Ok(())
                } else {
                    write_wal(wal, epoch, &layer.writes, &mut buf)
                        .map(|()| mark_durable(shared, epoch))
                        .map_err(|e| format!("writing log batch {epoch}: {e}"))
                };
                log.and_then(|()| {
                    held.batch(shared, wal, epoch, layer)
                        .map_err(|e| format!("applying log batch {epoch} to sled: {e}"))
                })
            }
            Some(Job::Checkpoint(epoch)) => {
                held.wanted = held.wanted.max(epoch);
                Ok(())
            }
            None => Ok(()),
        }
        .and_then(|()| {
            held.advance(shared, wal)
                .map_err(|e| format!("checkpointing into the history image: {e}"))
        });
        if let Err(why) = done {
            return failed(shared, why);
        }
    }
    // Closing: everything held goes into the image if the last batch ends
    // at a cut (else the next open applies the log — correct, only
    // slower), and a merge under way ends.
    held.wanted = u64::MAX;
    let closed = held.advance(shared, wal).and_then(|()| held.join_merge());
    if let Err(e) = closed {
        failed(shared, format!("checkpointing into the history image: {e}"));
    }
}

/// The log file of batch `epoch` is written: whoever waits for it goes on.
fn mark_durable(shared: &Shared, epoch: u64) {
    let mut inner = lock(&shared.inner);
    inner.durable = inner.durable.max(epoch);
    drop(inner);
    shared.applied.notify_all();
}

/// Stops the applier: every later flush reports `why`.
fn failed(shared: &Shared, why: String) {
    tracing::error!("{why}");
    lock(&shared.inner).failed = Some(why);
    shared.applied.notify_all();
}

/// The resident writes of applied batches that the history image does not
/// have yet: the last value of each key, band records as the last cut
/// encoded them. Their batches' log files stay, and the applied epoch sled
/// records stays below them, until a checkpoint — at a cut (see [`Bands`])
/// — has written them as one delta file of the image ([`crate::image`]);
/// a crash before re-applies those files at open, in epoch order.
#[derive(Default)]
struct Held {
    writes: Map,
    /// The applied batches whose resident writes are in `writes`.
    epochs: Vec<u64>,
    /// The last of them ends at a cut: the image can be checkpointed.
    at_cut: bool,
    /// Bands changed since the last cut, as of the last batch (their
    /// records will be held: they count toward `checkpoint_keys`).
    uncut_bands: usize,
    /// When the oldest of them was held.
    since: Option<std::time::Instant>,
    /// Someone waits for every batch up to this epoch to be in the store.
    wanted: u64,
    /// A checkpoint is due past this many keys held.
    checkpoint_keys: usize,
    /// The image's deltas being merged into a new base, on their own thread.
    merging: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Held {
    /// A batch into sled but the writes of resident keyspaces, which are
    /// held (all of it at once while nothing is resident), with the band
    /// records of a `cut`.
    fn batch(&mut self, shared: &Shared, wal: &Path, epoch: u64, layer: Taken) -> Result<()> {
        let resident = lock(&shared.inner).resident.as_ref().map(|r| r.prefixes);
        let holds = |k: &[u8]| resident.is_some_and(|prefixes| holds(&prefixes, k));
        let Taken {
            writes,
            cut,
            uncut_bands,
        } = layer;
        self.at_cut = cut.is_some();
        self.uncut_bands = uncut_bands;
        let whole = match resident {
            None => {
                apply(&shared.db, wal, epoch, &writes)?;
                true
            }
            Some(_) => {
                put_in_order(&shared.db, writes.iter().filter(|(k, _)| !holds(k)))?;
                self.epochs.push(epoch);
                self.since.get_or_insert_with(std::time::Instant::now);
                false
            }
        };
        let mut inner = lock(&shared.inner);
        // The batch's own layer (flushes queue their layers in the order
        // they send their batches), no longer read from there.
        let done = match inner.applying.pop_front() {
            Some((_, done)) => {
                drop(writes);
                done
            }
            None => writes,
        };
        let mut done = Arc::try_unwrap(done).unwrap_or_else(|shared| (*shared).clone());
        if whole {
            inner.in_sled = epoch;
        }
        if resident.is_some() {
            // The resident writes are held: moved (no copy, none dropped
            // under the lock), off the lock — reads of resident keys never
            // reach the layers, and the other writes are in sled already.
            drop(inner);
            let mut others = Vec::new();
            for (k, v) in done.drain() {
                if k == TOUCHES {
                    // (Their effects reach the image with the cut's records.)
                } else if holds(&k) {
                    self.writes.insert(k, v);
                } else {
                    others.push((k, v));
                }
            }
            self.writes.extend(cut.into_iter().flatten());
            inner = lock(&shared.inner);
            inner.applied(others.into_iter());
        } else {
            inner.applied(done.drain());
        }
        // The layer's emptied table, for a next layer.
        inner.spare = Some(done);
        drop(inner);
        shared.applied.notify_all();
        Ok(())
    }

    /// Whether the held writes are due for a checkpoint (made at the next
    /// cut, see `at_cut`).
    fn due(&self) -> bool {
        self.epochs.first().is_some_and(|&oldest| {
            self.wanted >= oldest
                || self.writes.len() + self.uncut_bands >= self.checkpoint_keys
                || self.epochs.len() >= HOLD_BATCHES
                || self.since.is_some_and(|t| t.elapsed() >= HOLD_TIME)
        })
    }

    /// A checkpoint, when one is due: the held writes as one delta file of
    /// the image (in key order), then their batches recorded as applied in
    /// sled (synced: their other writes went in batch by batch) and their
    /// log files deleted. Starts a merge of the image when it is due.
    fn advance(&mut self, shared: &Shared, wal: &Path) -> Result<()> {
        if !self.due() || !self.at_cut {
            return Ok(());
        }
        let epochs = std::mem::take(&mut self.epochs);
        self.since = None;
        let Some(&through) = epochs.last() else {
            return Ok(());
        };
        // (Drained: the table keeps its room for the next writes held.)
        let mut writes: Vec<_> = self.writes.drain().collect();
        writes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        image::write(
            &shared.history,
            true,
            through,
            writes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
        )?;
        shared.db.insert(APPLIED_KEY, &through.to_be_bytes())?;
        shared.db.flush()?;
        for &epoch in &epochs {
            remove_file(&wal_path(wal, epoch, "wal"))?;
        }
        tracing::debug!(
            keys = writes.len(),
            batches = epochs.len(),
            through,
            "held-back writes checkpointed into the history image"
        );
        lock(&shared.inner).in_sled = through;
        shared.applied.notify_all();
        self.merge_if_due(shared)
    }

    /// Merges the image's deltas into a new base on another thread when
    /// they are due and no merge runs; reports how the last one ended.
    fn merge_if_due(&mut self, shared: &Shared) -> Result<()> {
        if self.merging.as_ref().is_some_and(|m| !m.is_finished()) {
            return Ok(());
        }
        self.join_merge()?;
        if image::merge_due(&shared.history)? {
            let dir = shared.history.to_path_buf();
            let image_lock = Arc::clone(&shared.image_lock);
            let handle = std::thread::Builder::new()
                .name("haechi-image-merge".into())
                .spawn(move || {
                    // Housekeeping: on a busy machine the event loop and the
                    // applier keep their cores and the merge takes what is
                    // left (it holds no lock they wait for; deltas only wait
                    // longer to be merged).
                    if let Err(e) = thread_priority::set_current_thread_priority(
                        thread_priority::ThreadPriority::Min,
                    ) {
                        tracing::debug!("image merge at normal priority: {e:?}");
                    }
                    let _alone = lock(&image_lock);
                    image::merge(&dir)
                })
                .map_err(|e| StoreError::Wal(format!("starting the image merge: {e}")))?;
            self.merging = Some(handle);
        }
        Ok(())
    }

    fn join_merge(&mut self) -> Result<()> {
        match self.merging.take().map(std::thread::JoinHandle::join) {
            Some(Ok(done)) => done,
            Some(Err(_)) => Err(StoreError::Wal("the image merge panicked".into())),
            None => Ok(()),
        }
    }
}

/// Writes into sled, keys in order (neighbours share pages).
fn put_in_order<'a>(
    db: &sled::Db,
    writes: impl Iterator<Item = (&'a Vec<u8>, &'a Option<IVec>)>,
) -> Result<()> {
    let mut keys: Vec<_> = writes.collect();
    keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
    keys.into_iter().try_for_each(|(k, v)| put(db, k, v))
}

fn put(db: &sled::Db, k: &[u8], v: &Option<IVec>) -> Result<()> {
    match v {
        Some(v) => db.insert(k, v.clone())?,
        None => db.remove(k)?,
    };
    Ok(())
}

/// One batch into sled (keys in order: neighbours share pages), then its
/// epoch as applied, synced; then its log file goes.
fn apply(db: &sled::Db, wal: &Path, epoch: u64, writes: &Map) -> Result<()> {
    put_in_order(db, writes.iter())?;
    db.insert(APPLIED_KEY, &epoch.to_be_bytes())?;
    db.flush()?;
    remove_file(&wal_path(wal, epoch, "wal"))
}

pub(crate) fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Wal(format!("{what} {}: {e}", path.display()))
}

pub(crate) fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", path, e)),
        _ => Ok(()),
    }
}

fn wal_path(wal: &Path, epoch: u64, ext: &str) -> PathBuf {
    wal.join(format!("{epoch:020}.{ext}"))
}

/// A log file's first bytes: layout 2 may hold band touches (see
/// [`Bands`]), so a haechi from before them, which would read the touches
/// as a record, refuses it instead; layout 1 (every value whole) reads the
/// same as layout 2.
const MAGIC: &[u8; 8] = b"HAECHIW2";
const MAGIC_V1: &[u8; 8] = b"HAECHIW1";

/// The log file of a batch: magic, epoch, entry count, entries (key length,
/// key, tag, value length, value), CRC-32 of all that. Written under a
/// temporary name and renamed once synced, so a log file is whole or absent.
/// `buf`: memory to build it in (left holding the file's bytes).
pub(crate) fn write_wal(wal: &Path, epoch: u64, writes: &Map, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    buf.reserve(
        32 + writes
            .iter()
            .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>(),
    );
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&epoch.to_le_bytes());
    buf.extend_from_slice(&(writes.len() as u64).to_le_bytes());
    for (k, v) in writes {
        buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
        buf.extend_from_slice(k);
        match v {
            Some(v) => {
                buf.push(1);
                buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
                buf.extend_from_slice(v);
            }
            None => buf.push(0),
        }
    }
    let crc = crc32fast::hash(buf);
    buf.extend_from_slice(&crc.to_le_bytes());

    let tmp = wal_path(wal, epoch, "tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating", &tmp, e))?;
    let written = f.write_all(buf);
    if buf.capacity() > WAL_BUF_KEEP {
        *buf = Vec::new();
    }
    written.map_err(|e| io("writing", &tmp, e))?;
    f.sync_all().map_err(|e| io("syncing", &tmp, e))?;
    let done = wal_path(wal, epoch, "wal");
    std::fs::rename(&tmp, &done).map_err(|e| io("renaming", &tmp, e))?;
    sync_dir(wal)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing", dir, e))
}

/// Reads a log file back.
fn read_wal(path: &Path) -> Result<(u64, Map)> {
    let bytes = std::fs::read(path).map_err(|e| io("reading", path, e))?;
    let corrupt =
        |why: &str| StoreError::Wal(format!("log file {} is corrupt: {why}", path.display()));
    match bytes.get(..MAGIC.len()) {
        _ if bytes.len() < MAGIC.len() + 20 => return Err(corrupt("not a haechi log file")),
        Some(m) if m == MAGIC || m == MAGIC_V1 => {}
        Some(m) if m.starts_with(b"HAECHIW") => {
            return Err(StoreError::Wal(format!(
                "log file {} was written by a newer haechi (layout {}): open the store with it",
                path.display(),
                String::from_utf8_lossy(&m[7..])
            )))
        }
        _ => return Err(corrupt("not a haechi log file")),
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let mut r = Reader(&body[MAGIC.len()..]);
    let epoch = r.u64().ok_or_else(|| corrupt("truncated header"))?;
    let n = r.u64().ok_or_else(|| corrupt("truncated header"))?;
    let mut map = Map::default();
    for _ in 0..n {
        let entry = (|| {
            let k = r.bytes()?.to_vec();
            let v = match r.take(1)?[0] {
                0 => None,
                _ => Some(IVec::from(r.bytes()?)),
            };
            Some((k, v))
        })();
        let (k, v) = entry.ok_or_else(|| corrupt("truncated entry"))?;
        map.insert(k, v);
    }
    Ok((epoch, map))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?);
        self.take(n as usize)
    }
}

/// The resident keyspaces from the history image, when the store has one
/// (see [`crate::image`]). Records of them sled still holds are leftovers of
/// a move between sled and the image that did not finish: the image holds
/// everything, they go.
/// The history image's records, resident, and the epoch it holds them as
/// of (`None`: the store has no image).
fn load_image(db: &sled::Db, history: &Path, prefixes: &[u8]) -> Result<Option<(Resident, u64)>> {
    image::clean(history)?;
    let started = std::time::Instant::now();
    let mut r = Resident::new(prefixes);
    let Some(through) = image::load(history, |k, v| r.set(&k, &v))? else {
        return Ok(None);
    };
    let mut leftovers = 0u64;
    for &p in prefixes {
        for item in db.scan_prefix([p]) {
            db.remove(item?.0)?;
            leftovers += 1;
        }
    }
    if leftovers > 0 {
        db.flush()?;
    }
    tracing::info!(
        records = r.len(),
        through,
        leftovers,
        seconds = started.elapsed().as_secs_f64(),
        "history image loaded"
    );
    Ok(Some((r, through)))
}

/// Applies what a crash left in the log; returns the last applied epoch.
/// With a history image (`resident`, holding everything up to
/// `image_epoch`), the resident keyspaces' writes of later batches — their
/// records, then their band touches — go into the resident map and, all of
/// them, into one delta file of the image before sled records the epoch and
/// the log files go. (Batches the image holds already, when a crash came
/// between a checkpoint and sled's applied epoch, give sled their other
/// writes only: touches applied twice could bring back what came after.)
fn recover(
    db: &sled::Db,
    wal: &Path,
    history: &Path,
    mut resident: Option<&mut Resident>,
    image_epoch: u64,
) -> Result<u64> {
    std::fs::create_dir_all(wal).map_err(|e| io("creating", wal, e))?;
    let mut applied = match db.get(APPLIED_KEY)? {
        Some(v) => u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
            key: String::from_utf8_lossy(APPLIED_KEY).into_owned(),
            message: "not an epoch".into(),
        })?),
        None => 0,
    };
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(wal).map_err(|e| io("listing", wal, e))? {
        let path = entry.map_err(|e| io("listing", wal, e))?.path();
        let epoch = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok());
        match (epoch, path.extension().and_then(|e| e.to_str())) {
            (Some(epoch), Some("wal")) => logs.push((epoch, path)),
            // A flush that never returned: never acknowledged, never applied.
            (Some(_), Some("tmp")) => remove_file(&path)?,
            _ => {}
        }
    }
    logs.sort();
    let mut held = Map::default();
    let mut touched = Vec::new();
    let mut reapplied = Vec::new();
    for (epoch, path) in logs {
        if epoch <= applied {
            remove_file(&path)?;
            continue;
        }
        let (stamped, writes) = read_wal(&path)?;
        if stamped != epoch {
            return Err(StoreError::Wal(format!(
                "log file {} holds epoch {stamped}",
                path.display()
            )));
        }
        match resident.as_deref_mut() {
            None => apply(db, wal, epoch, &writes)?,
            Some(r) => {
                put_in_order(db, writes.iter().filter(|(k, _)| !r.holds(k)))?;
                if epoch > image_epoch {
                    for (k, v) in writes.iter() {
                        if r.holds(k) && k.as_slice() != TOUCHES {
                            r.set(k, v);
                            held.insert(k.clone(), v.clone());
                        }
                    }
                    if let Some(Some(touches)) = writes.get(TOUCHES) {
                        for (id, seller, t) in touches_of(touches) {
                            r.touch_band(id, seller, t, true);
                            touched.push(id);
                        }
                    }
                }
                reapplied.push(epoch);
            }
        }
        tracing::info!(
            epoch,
            keys = writes.len(),
            "applied a log batch left by a crash"
        );
        applied = epoch;
    }
    if let (Some(&through), Some(r)) = (reapplied.last(), resident) {
        // Touched bands as the touches left them (each once).
        touched.sort_unstable();
        touched.dedup();
        for id in touched {
            let key = band_key(id);
            let now = r.get(&key);
            held.insert(key, now);
        }
        // (Nothing held: the image has every batch already — and a delta
        // of the same epoch must not be overwritten.)
        if !held.is_empty() {
            let mut entries: Vec<_> = held.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            image::write(
                history,
                true,
                through,
                entries
                    .into_iter()
                    .map(|(k, v)| (k.as_slice(), v.as_deref())),
            )?;
        }
        db.insert(APPLIED_KEY, &through.to_be_bytes())?;
        db.flush()?;
        for epoch in reapplied {
            remove_file(&wal_path(wal, epoch, "wal"))?;
        }
    }
    Ok(applied)
}

/// Keys with a prefix as the overlay holds them, overlaid by `own` writes
/// not committed yet (later ones win; `None` removes), in key order: from
/// sled and the layers above it, or for a resident keyspace from the
/// resident map (which holds every committed write; sled may lack those
/// held back, see [`Held`]).
fn scan_layers<'k>(
    db: &sled::Db,
    inner: &'k Inner,
    prefix: &[u8],
    own: impl Iterator<Item = (&'k Vec<u8>, &'k Option<IVec>)>,
) -> Result<Vec<(Vec<u8>, IVec)>> {
    let mut out: std::collections::BTreeMap<Vec<u8>, IVec> = std::collections::BTreeMap::new();
    let resident = inner.resident.as_ref().filter(|r| r.holds(prefix));
    let mut overlay = |(k, v): (&Vec<u8>, &Option<IVec>)| {
        if k.starts_with(prefix) {
            match v {
                Some(v) => out.insert(k.clone(), v.clone()),
                None => out.remove(k),
            };
        }
    };
    match resident {
        Some(r) => {
            for (k, v) in r.records_with_prefix(prefix) {
                overlay((&k.to_vec(), &Some(v)));
            }
        }
        None => {
            for item in db.scan_prefix(prefix) {
                let (k, v) = item?;
                overlay((&k.to_vec(), &Some(v)));
            }
            layers(inner).for_each(&mut overlay);
        }
    }
    own.for_each(overlay);
    Ok(out.into_iter().collect())
}

/// Writes that become pending together; dropped without `commit`, they
/// vanish.
#[derive(Debug)]
pub struct Tx<'a> {
    guard: MutexGuard<'a, Inner>,
    db: &'a sled::Db,
    writes: Vec<(Vec<u8>, Option<IVec>)>,
    /// Changes in place ([`Tx::update`]), applied at commit after `writes`.
    updates: Vec<(Vec<u8>, Update)>,
    /// Band touches for the resident band index ([`Tx::touch_band`]),
    /// applied at commit after `updates`: (band, seller, time).
    touches: Vec<(u64, u64, i64)>,
    journaled: bool,
}

impl Tx<'_> {
    /// The key's value as this transaction sees it (not after an
    /// [`Tx::update`] of it: that is applied at commit).
    pub fn get(&mut self, key: &[u8]) -> Result<Option<IVec>> {
        debug_assert!(
            !self.updates.iter().any(|(k, _)| k == key),
            "read after an update in the same transaction"
        );
        if let Some((_, v)) = self.writes.iter().rev().find(|(k, _)| k == key) {
            return Ok(v.clone());
        }
        self.guard.get(self.db, key)
    }

    /// [`Overlay::commits`] as this transaction began (no other commit can
    /// happen while it is open): a caller that read keys outside it when
    /// the count was the same may use those reads.
    pub fn commits(&self) -> u64 {
        self.guard.commits
    }

    /// Whether this transaction's writes are captured for the changelog.
    pub fn captured(&self) -> bool {
        self.journaled && self.guard.journal.is_some()
    }

    /// Whether this transaction wrote `key` (its reads then see the write).
    pub fn wrote(&self, key: &[u8]) -> bool {
        self.writes.iter().any(|(k, _)| k == key)
            || self.updates.iter().any(|(k, _)| k == key)
            || band_id(key).is_some_and(|id| self.touches.iter().any(|t| t.0 == id))
    }

    pub fn put(&mut self, key: Vec<u8>, value: impl Into<IVec>) {
        self.forget_updates(&key);
        self.writes.push((key, Some(value.into())));
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        self.forget_updates(&key);
        self.writes.push((key, None));
    }

    /// A later write of a key replaces its queued in-place changes.
    fn forget_updates(&mut self, key: &[u8]) {
        if !self.updates.is_empty() {
            self.updates.retain(|(k, _)| k != key);
        }
        if let Some(id) = band_id(key).filter(|_| !self.touches.is_empty()) {
            self.touches.retain(|t| t.0 != id);
        }
    }

    /// Records that `seller` posted text in band `band` at `t`
    /// ([`BandRecord::touch`]). With the band index resident, a touch
    /// applied in place at commit; elsewhere an [`Tx::update`] of the
    /// band's record (`read`: as read before the transaction).
    pub fn touch_band(
        &mut self,
        band: u64,
        read: Option<Option<BandRecord>>,
        seller: u64,
        t: i64,
    ) -> Result<()> {
        if self
            .guard
            .resident
            .as_ref()
            .is_some_and(|r| r.bands.is_some())
        {
            self.touches.push((band, seller, t));
            return Ok(());
        }
        self.update(band_key(band), read, move |rec: &mut BandRecord| {
            rec.touch(seller, t)
        })
    }

    /// The record under `key` as this transaction sees it: `read` when it
    /// was read before the transaction and the transaction has not written
    /// the key since.
    pub fn reuse<T: DeserializeOwned>(
        &mut self,
        key: &[u8],
        read: Option<Option<T>>,
    ) -> Result<Option<T>> {
        match read {
            Some(rec) if !self.wrote(key) => Ok(rec),
            _ => crate::decode(key, self.get(key)?),
        }
    }

    /// Changes the record under `key` with `f` (a `T::default()` when there
    /// is none), as part of this transaction. In a resident keyspace the
    /// record stays decoded in memory and is changed in place at commit; it
    /// is encoded once per flush instead of once per change (with change
    /// capture on, at commit: the changelog needs every change). Elsewhere
    /// it is read (`read`: the record as read before the transaction, used
    /// when the transaction has not written the key), changed and put.
    pub fn update<T>(
        &mut self,
        key: Vec<u8>,
        read: Option<Option<T>>,
        f: impl FnOnce(&mut T) + 'static,
    ) -> Result<()>
    where
        T: Typed + Default + DeserializeOwned,
    {
        let wrote = self.writes.iter().any(|(k, _)| *k == key);
        match self.guard.resident.as_mut() {
            // (Records of the band index are changed by touches.)
            Some(r) if r.holds(&key) && !wrote && r.band_of(&key).is_none() => {
                // Decoded now (under the transaction's lock: nothing else
                // sees the key meanwhile), changed at commit.
                r.decode_in_place::<T>(&key)?;
                let update = Update(Box::new(move |current| {
                    match current.and_then(|rec| rec.as_any_mut().downcast_mut::<T>()) {
                        Some(rec) => {
                            f(rec);
                            None
                        }
                        None => {
                            let mut rec = T::default();
                            f(&mut rec);
                            Some(Box::new(rec))
                        }
                    }
                }));
                self.updates.push((key, update));
            }
            _ => {
                let mut rec = self.reuse(&key, read)?.unwrap_or_default();
                f(&mut rec);
                self.put(key, rec.encode());
            }
        }
        Ok(())
    }

    /// Keys with a prefix as this transaction sees them, in key order.
    pub fn scan_prefix(&mut self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, IVec)>> {
        self.guard.materialize(false);
        let own = self.writes.iter().map(|(k, v)| (k, v));
        scan_layers(self.db, &self.guard, prefix, own)
    }

    pub fn commit(mut self) {
        let writes = std::mem::take(&mut self.writes);
        let updates = std::mem::take(&mut self.updates);
        let touches = std::mem::take(&mut self.touches);
        if writes.is_empty() && updates.is_empty() && touches.is_empty() {
            return;
        }
        self.guard.commits += 1;
        if let Some(journal) = self.guard.journal.as_mut().filter(|_| self.journaled) {
            let thread = std::thread::current().id();
            journal.extend(writes.iter().map(|(k, v)| Change {
                key: k.clone(),
                value: v.as_ref().map(|v| v.to_vec()),
                thread,
            }));
        }
        let inner = &mut *self.guard;
        for (k, v) in &writes {
            match inner.resident.as_mut() {
                Some(r) if r.holds(k) => {
                    r.set(k, v);
                    // Written whole after touches this layer logged: see
                    // `Inner::materialize`.
                    if let (Some(bands), Some(id)) = (r.bands.as_mut(), band_id(k)) {
                        if !bands.log.is_empty() || inner.pending.contains_key(TOUCHES) {
                            bands.written.push(id);
                        }
                    }
                }
                _ => {
                    if let (Some(present), Some(_)) = (inner.present.as_mut(), v) {
                        present.insert(k);
                    }
                }
            }
        }
        for (k, v) in writes {
            self.guard.pending.insert(k, v);
        }
        if !updates.is_empty() {
            self.commit_updates(updates);
        }
        if !touches.is_empty() {
            self.commit_touches(touches);
        }
    }

    fn commit_touches(&mut self, touches: Vec<(u64, u64, i64)>) {
        let capture = self.journaled && self.guard.journal.is_some();
        let inner = &mut *self.guard;
        let Some(r) = inner.resident.as_mut() else {
            return;
        };
        for &(id, seller, t) in &touches {
            r.touch_band(id, seller, t, capture);
        }
        if !capture {
            return;
        }
        // The changelog takes every change: encoded now (each band once).
        let mut seen = Vec::with_capacity(touches.len());
        for (id, _, _) in touches {
            let Some(b) = r.bands.as_mut().and_then(|b| b.map.get_mut(&id)) else {
                continue;
            };
            if seen.contains(&id) {
                continue;
            }
            seen.push(id);
            let v = band_bytes(&b.sellers);
            if let Some(journal) = inner.journal.as_mut() {
                journal.push(Change {
                    key: band_key(id),
                    value: Some(v.to_vec()),
                    thread: std::thread::current().id(),
                });
            }
            inner.pending.insert(band_key(id), Some(v));
        }
    }

    fn commit_updates(&mut self, updates: Vec<(Vec<u8>, Update)>) {
        let capture = self.journaled && self.guard.journal.is_some();
        let Inner {
            resident,
            pending,
            journal,
            ..
        } = &mut *self.guard;
        let Some(r) = resident.as_mut() else {
            return;
        };
        for (key, update) in updates {
            let newly_dirty = match r.map.get_mut(key.as_slice()) {
                Some(Slot::Typed { rec, dirty }) => {
                    if let Some(new) = (update.0)(Some(rec)) {
                        *rec = new;
                    }
                    !std::mem::replace(dirty, true)
                }
                // (`update` decoded every existing record: no bytes here.)
                Some(slot @ Slot::Bytes(_)) => {
                    if let Some(rec) = (update.0)(None) {
                        *slot = Slot::Typed { rec, dirty: true };
                    }
                    true
                }
                None => {
                    if let Some(rec) = (update.0)(None) {
                        r.map
                            .insert(IVec::from(key.as_slice()), Slot::Typed { rec, dirty: true });
                    }
                    true
                }
            };
            if capture {
                // The changelog takes every change: encoded now.
                if let Some(slot) = r.map.get_mut(key.as_slice()) {
                    let v = slot.encode_clean();
                    if let Some(journal) = journal.as_mut() {
                        journal.push(Change {
                            key: key.clone(),
                            value: Some(v.to_vec()),
                            thread: std::thread::current().id(),
                        });
                    }
                    pending.insert(key, Some(v));
                }
            } else if newly_dirty {
                r.dirty.push(IVec::from(key.as_slice()));
                pending.insert(key, Some(IVec::default()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys held before a checkpoint, in these tests.
    const HOLD_KEYS: usize = 64_000;

    #[test]
    fn band_bytes_are_the_band_records_encoding() {
        // Empty and one entry fit an inline value; 8 entries take a
        // two-byte length; 32 is a full band.
        for n in [0u64, 1, 2, 7, 8, 32] {
            let sellers: BandSellers = (0..n)
                .map(|i| {
                    (
                        i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                        1_700_000_000_000 - i as i64,
                    )
                })
                .collect();
            let expected = crate::encode(&BandRecord {
                sellers: sellers.clone(),
            });
            assert_eq!(band_bytes(&sellers).as_ref(), &expected[..], "{n} entries");
        }
    }

    fn map(entries: &[(&str, Option<&str>)]) -> Map {
        entries
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| IVec::from(v.as_bytes()))))
            .collect()
    }

    /// One transaction writing `k` (`None`: removing it).
    fn commit_one(o: &Overlay, k: &str, v: Option<&str>) {
        let mut tx = o.begin();
        match v {
            Some(v) => tx.put(k.into(), v.as_bytes()),
            None => tx.remove(k.into()),
        }
        tx.commit();
    }

    fn open(dir: &Path) -> (sled::Db, Overlay) {
        open_with(dir, HOLD_KEYS)
    }

    /// [`open`] with a checkpoint due past `checkpoint_keys` held.
    fn open_with(dir: &Path, checkpoint_keys: usize) -> (sled::Db, Overlay) {
        let db = sled::Config::new().path(dir.join("db")).open().unwrap();
        let o = Overlay::open(
            db.clone(),
            &dir.join("wal"),
            &dir.join("history"),
            b"sb",
            checkpoint_keys,
        )
        .unwrap();
        (db, o)
    }

    /// What the history image holds (key → value).
    fn image_state(dir: &Path) -> std::collections::BTreeMap<String, String> {
        let mut m = std::collections::BTreeMap::new();
        image::load(&dir.join("history"), |k, v| {
            let k = String::from_utf8(k).unwrap();
            match v {
                Some(v) => m.insert(k, String::from_utf8(v.to_vec()).unwrap()),
                None => m.remove(&k),
            };
        })
        .unwrap();
        m
    }

    fn sled_prefix(db: &sled::Db, prefix: &[u8]) -> Vec<String> {
        db.scan_prefix(prefix)
            .map(|kv| String::from_utf8(kv.unwrap().0.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn the_key_filter_never_forgets_a_key_and_grows_past_its_capacity() {
        let key = |i: u32| format!("k{i}").into_bytes();
        let n = Present::FIRST_CAPACITY as u32 + 200_000;
        let mut p = Present::new();
        for i in 0..n {
            p.insert(&key(i));
        }
        assert_eq!(
            p.filters.len(),
            2,
            "a second filter past the first's capacity"
        );
        assert!((0..n).all(|i| p.may_contain(&key(i))), "a false negative");
        let unseen = 100_000;
        let false_pos = (n..n + unseen).filter(|&i| p.may_contain(&key(i))).count();
        assert!(
            false_pos < unseen as usize * 3 / 100,
            "{false_pos} false positives"
        );
    }

    #[test]
    fn tracked_reads_find_keys_sled_held_before_and_got_after() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_db, o) = open(dir.path());
            let mut tx = o.begin();
            tx.put(b"old".to_vec(), b"1".to_vec());
            tx.commit();
            o.flush().unwrap();
            o.settle().unwrap();
        }
        let (_db, o) = open(dir.path());
        let mut tx = o.begin();
        tx.put(b"pending".to_vec(), b"2".to_vec());
        tx.commit();
        assert_eq!(
            o.track_keys(false).unwrap(),
            (2, 0),
            "old + the applied-epoch mark"
        );
        let mut tx = o.begin();
        tx.put(b"new".to_vec(), b"3".to_vec());
        tx.commit();
        o.flush().unwrap();
        o.settle().unwrap();
        o.inner().cache.clear(); // every read below goes to the filter, then sled
        for (k, v) in [("old", "1"), ("pending", "2"), ("new", "3")] {
            assert_eq!(
                o.get(k.as_bytes()).unwrap().as_deref(),
                Some(v.as_bytes()),
                "{k}"
            );
        }
        assert_eq!(o.get(b"never").unwrap(), None);
    }

    #[test]
    fn resident_keyspaces_answer_from_memory_with_every_committed_write() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_db, o) = open(dir.path());
            for k in ["sold", "sgone", "sapplying", "xother"] {
                commit_one(&o, k, Some("1"));
            }
            o.flush().unwrap();
            o.settle().unwrap();
        }
        let (db, o) = open(dir.path());
        // Written before tracking: one batch flushed (with the applier or
        // in sled already), one pending.
        commit_one(&o, "sapplying", Some("2"));
        o.flush().unwrap();
        commit_one(&o, "spending", Some("3"));
        commit_one(&o, "sgone", None);
        let (keys, resident) = o.track_keys(true).unwrap();
        assert!(keys >= 4, "{keys}");
        o.settle().unwrap();
        assert_eq!(resident, 3, "sold, sapplying, spending");
        // After tracking: a new key, a changed one, a removed one.
        commit_one(&o, "snew", Some("4"));
        commit_one(&o, "sold", Some("5"));
        commit_one(&o, "spending", None);
        let expect = [
            ("sold", Some("5")),
            ("sgone", None),
            ("sapplying", Some("2")),
            ("spending", None),
            ("snew", Some("4")),
            ("xother", Some("1")),
        ];
        let check = |o: &Overlay, when: &str| {
            for (k, v) in expect {
                assert_eq!(
                    o.get(k.as_bytes()).unwrap().as_deref(),
                    v.map(str::as_bytes),
                    "{k} {when}"
                );
            }
        };
        check(&o, "pending");
        o.flush().unwrap();
        o.settle().unwrap();
        check(&o, "applied");
        // The resident keyspace left sled for the history image.
        assert_eq!(sled_prefix(&db, b"s"), Vec::<String>::new());
        // Resident reads do not go to sled: a value changed behind the
        // overlay's back is not seen; a non-resident key still is read.
        db.insert(b"sold", b"behind".as_slice()).unwrap();
        db.insert(b"xother", b"behind".as_slice()).unwrap();
        o.inner().cache.clear();
        assert_eq!(o.get(b"sold").unwrap().as_deref(), Some(b"5".as_slice()));
        assert_eq!(
            o.get(b"xother").unwrap().as_deref(),
            Some(b"behind".as_slice())
        );
        drop(o);
        drop(db);
        // And the image got every write: reopened without tracking, same
        // answers (the record put into sled behind its back is a leftover
        // the open removes).
        let (db, o) = open(dir.path());
        assert_eq!(sled_prefix(&db, b"s"), Vec::<String>::new());
        for (k, v) in expect.iter().filter(|(k, _)| *k != "xother") {
            assert_eq!(
                o.get(k.as_bytes()).unwrap().as_deref(),
                v.map(str::as_bytes),
                "{k} reopened"
            );
        }
    }

    #[test]
    fn records_changed_in_place_reach_reads_scans_seals_flushes_and_the_journal() {
        use crate::records::BandRecord;
        let dir = tempfile::tempdir().unwrap();
        let band = |sellers: &[(u64, i64)]| BandRecord {
            sellers: sellers.iter().copied().collect(),
        };
        let touch = |tx: &mut Tx<'_>, k: &str, s: u64, t: i64| {
            tx.update(k.into(), None, move |r: &mut BandRecord| r.touch(s, t))
                .unwrap();
        };
        let commit_touch = |o: &Overlay, k: &str, s: u64, t: i64| {
            let mut tx = o.begin();
            touch(&mut tx, k, s, t);
            tx.commit();
        };
        // Both ways of reading agree (decoded in place, and encoded).
        let read = |o: &Overlay, k: &str| -> Option<BandRecord> {
            let key = k.as_bytes().to_vec();
            let typed = o
                .read_typed::<BandRecord, _>(&[key], &mut None, |r| r[0].cloned())
                .unwrap();
            let bytes = crate::decode(k.as_bytes(), o.get(k.as_bytes()).unwrap()).unwrap();
            assert_eq!(typed, bytes, "{k}");
            typed
        };
        {
            let (_db, o) = open(dir.path());
            let mut tx = o.begin();
            tx.put(b"bold".to_vec(), crate::encode(&band(&[(1, 10)])));
            tx.commit();
            o.flush().unwrap();
        }
        let (db, o) = open(dir.path());
        o.track_keys(true).unwrap();
        commit_touch(&o, "bold", 2, 20);
        commit_touch(&o, "bnew", 3, 30);
        assert_eq!(read(&o, "bold"), Some(band(&[(1, 10), (2, 20)])));
        assert_eq!(read(&o, "bnew"), Some(band(&[(3, 30)])));
        // A transaction dropped without commit changes nothing, though it
        // had the record decoded.
        {
            let mut tx = o.begin();
            touch(&mut tx, "bold", 9, 90);
            touch(&mut tx, "bnever", 9, 90);
        }
        assert_eq!(read(&o, "bold"), Some(band(&[(1, 10), (2, 20)])));
        assert_eq!(read(&o, "bnever"), None);
        // Two changes of one key in one transaction both apply.
        {
            let mut tx = o.begin();
            touch(&mut tx, "btwice", 1, 1);
            touch(&mut tx, "btwice", 2, 2);
            tx.commit();
        }
        assert_eq!(read(&o, "btwice"), Some(band(&[(1, 1), (2, 2)])));
        let scanned: Vec<_> = o.scan_prefix(b"b").unwrap();
        assert_eq!(
            scanned,
            [
                (
                    b"bnew".to_vec(),
                    IVec::from(crate::encode(&band(&[(3, 30)])))
                ),
                (
                    b"bold".to_vec(),
                    IVec::from(crate::encode(&band(&[(1, 10), (2, 20)])))
                ),
                (
                    b"btwice".to_vec(),
                    IVec::from(crate::encode(&band(&[(1, 1), (2, 2)])))
                ),
            ]
        );
        // A flush holds every change before it.
        commit_touch(&o, "bflushed", 1, 1);
        o.flush().unwrap();
        o.settle().unwrap();
        let in_image = image_state(dir.path()).remove("bflushed").unwrap();
        assert_eq!(
            crate::decode(b"bflushed", Some(in_image.as_bytes())).unwrap(),
            Some(band(&[(1, 1)]))
        );
        // A seal's flush holds what was changed before it, not after.
        commit_touch(&o, "btwice", 3, 3);
        o.seal().unwrap();
        commit_touch(&o, "bnew", 4, 40);
        commit_touch(&o, "bold", 5, 50);
        o.flush_sealed().unwrap();
        drop(o); // a crash: the pending changes are lost
        drop(db);
        let (db, o) = open(dir.path());
        assert_eq!(read(&o, "bnew"), Some(band(&[(3, 30)])));
        assert_eq!(read(&o, "bold"), Some(band(&[(1, 10), (2, 20)])));
        assert_eq!(read(&o, "btwice"), Some(band(&[(1, 1), (2, 2), (3, 3)])));
        assert_eq!(read(&o, "bflushed"), Some(band(&[(1, 1)])));
        // With change capture on, each commit's change is captured as bytes.
        o.track_keys(true).unwrap();
        o.enable_journal();
        commit_touch(&o, "bnew", 6, 60);
        let journal = o.take_journal();
        assert_eq!(journal.len(), 1);
        assert_eq!(journal[0].key, b"bnew");
        assert_eq!(
            journal[0].value.as_deref(),
            Some(crate::encode(&band(&[(3, 30), (6, 60)])).as_slice())
        );
        // A later put replaces a record changed in place.
        commit_touch(&o, "bold", 7, 70);
        let mut tx = o.begin();
        tx.put(b"bold".to_vec(), crate::encode(&band(&[(8, 80)])));
        tx.commit();
        o.flush().unwrap();
        drop(o);
        drop(db);
        // Reopened: the same records from the image; moved back into sled,
        // read from there and decoded for the caller to keep.
        let (_db, o) = open(dir.path());
        assert_eq!(read(&o, "bnew"), Some(band(&[(3, 30), (6, 60)])));
        assert_eq!(read(&o, "bold"), Some(band(&[(8, 80)])));
        o.track_keys(false).unwrap();
        assert_eq!(read(&o, "bnew"), Some(band(&[(3, 30), (6, 60)])));
        assert_eq!(read(&o, "bold"), Some(band(&[(8, 80)])));
        let mut decoded = None;
        o.read_typed::<BandRecord, _>(&[b"bnew".to_vec()], &mut decoded, |_| ())
            .unwrap();
        assert_eq!(decoded, Some(vec![Some(band(&[(3, 30), (6, 60)]))]));
    }

    #[test]
    fn log_files_read_back_exactly_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let m = map(&[("a", Some("1")), ("b", None), ("", Some(""))]);
        write_wal(dir.path(), 7, &m, &mut Vec::new()).unwrap();
        let path = wal_path(dir.path(), 7, "wal");
        assert_eq!(read_wal(&path).unwrap(), (7, m.clone()));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = read_wal(&path).unwrap_err().to_string();
        assert!(err.contains("corrupt") && err.contains("checksum"), "{err}");
        // Layout 1 (before band touches) reads the same; a later layout is
        // refused by name, not as damage.
        for (magic, readable) in [(MAGIC_V1, true), (b"HAECHIW3", false)] {
            write_wal(dir.path(), 7, &m, &mut Vec::new()).unwrap();
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[..8].copy_from_slice(magic);
            let body = bytes.len() - 4;
            let crc = crc32fast::hash(&bytes[..body]).to_le_bytes();
            bytes[body..].copy_from_slice(&crc);
            std::fs::write(&path, &bytes).unwrap();
            match read_wal(&path) {
                Ok(read) => assert!(readable && read == (7, m.clone())),
                Err(e) => assert!(!readable && e.to_string().contains("newer haechi"), "{e}"),
            }
        }
    }

    #[test]
    fn flushed_batches_reach_sled_and_stay_readable_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let (db, o) = open(dir.path());
        for round in 0..5u32 {
            let mut tx = o.begin();
            tx.put(b"k".to_vec(), round.to_le_bytes().to_vec());
            tx.put(format!("r{round}").into_bytes(), vec![1]);
            if round == 3 {
                tx.remove(b"r1".to_vec());
            }
            tx.commit();
            o.flush().unwrap();
            // Readable at once, applied or not.
            assert_eq!(o.get(b"k").unwrap().unwrap().as_ref(), round.to_le_bytes());
        }
        o.settle().unwrap();
        assert_eq!(db.get(b"k").unwrap().unwrap().as_ref(), 4u32.to_le_bytes());
        assert!(db.get(b"r1").unwrap().is_none());
        assert!(db.get(b"r4").unwrap().is_some());
        assert_eq!(o.scan_prefix(b"r").unwrap().len(), 4);
        // Applied log files are gone.
        drop(o);
        assert_eq!(
            std::fs::read_dir(dir.path().join("wal")).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_crash_before_the_applier_is_repaired_at_open_and_old_logs_do_not_revert_newer_data() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("wal");
        {
            let (_db, o) = open(dir.path());
            let mut tx = o.begin();
            tx.put(b"k".to_vec(), b"applied".to_vec());
            tx.put(b"gone".to_vec(), b"x".to_vec());
            tx.commit();
            o.flush().unwrap();
        } // applied: epoch 1
          // As a crash leaves them: epoch 2 durable but never applied, an
          // older epoch 1 file not yet deleted, an unfinished flush.
        write_wal(&wal, 1, &map(&[("k", Some("stale"))]), &mut Vec::new()).unwrap();
        write_wal(
            &wal,
            2,
            &map(&[("k", Some("logged")), ("gone", None), ("new", Some("n"))]),
            &mut Vec::new(),
        )
        .unwrap();
        std::fs::write(wal_path(&wal, 3, "tmp"), b"half a flush").unwrap();
        let (db, o) = open(dir.path());
        assert_eq!(db.get(b"k").unwrap().unwrap().as_ref(), b"logged");
        assert!(db.get(b"gone").unwrap().is_none());
        assert_eq!(o.get(b"new").unwrap().unwrap().as_ref(), b"n");
        assert_eq!(std::fs::read_dir(&wal).unwrap().count(), 0);
        // The next flush continues after the recovered epoch.
        assert_eq!(lock(&o.flushing).epoch, 3);
    }

    #[test]
    fn resident_writes_reach_the_image_at_checkpoints_and_their_log_files_stay_until_then() {
        let dir = tempfile::tempdir().unwrap();
        let logs = |dir: &Path| std::fs::read_dir(dir.join("wal")).unwrap().count();
        let in_sled = |db: &sled::Db, k: &str| {
            db.get(k.as_bytes())
                .unwrap()
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
        };
        let in_image = |dir: &Path, k: &str| image_state(dir).get(k).cloned();
        let applied = |o: &Overlay| {
            let started = std::time::Instant::now();
            while !o.inner().applying.is_empty() {
                assert!(started.elapsed().as_secs() < 30, "the applier is stuck");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        let crashed = tempfile::tempdir().unwrap();
        {
            let (db, o) = open(dir.path());
            o.track_keys(true).unwrap();
            commit_one(&o, "s1", Some("1"));
            commit_one(&o, "x1", Some("1"));
            o.flush().unwrap();
            commit_one(&o, "s1", Some("2"));
            commit_one(&o, "s2", Some("2"));
            o.flush().unwrap();
            applied(&o);
            // Applied: the other keyspace is in sled, the resident writes
            // are held back with both batches' log files.
            assert_eq!(in_sled(&db, "x1").as_deref(), Some("1"));
            assert_eq!(in_image(dir.path(), "s1"), None);
            assert_eq!(in_image(dir.path(), "s2"), None);
            assert_eq!(logs(dir.path()), 2);
            assert_eq!(o.get(b"s1").unwrap().as_deref(), Some(b"2".as_slice()));
            // A scan of the keyspace sees them all the same.
            let scanned: Vec<_> = o.scan_prefix(b"s").unwrap();
            assert_eq!(
                scanned,
                [
                    (b"s1".to_vec(), IVec::from("2")),
                    (b"s2".to_vec(), IVec::from("2"))
                ]
            );
            // The disk as a crash now would leave it.
            for sub in ["db", "wal", "history"] {
                copy_dir(&dir.path().join(sub), &crashed.path().join(sub));
            }
            // settle asks for a checkpoint: the last values, then the files go.
            o.settle().unwrap();
            assert_eq!(in_image(dir.path(), "s1").as_deref(), Some("2"));
            assert_eq!(in_image(dir.path(), "s2").as_deref(), Some("2"));
            assert_eq!(logs(dir.path()), 0);
            // Held again, a removal among them; closing checkpoints them.
            commit_one(&o, "s1", Some("3"));
            commit_one(&o, "s2", None);
            o.flush().unwrap();
            applied(&o);
            assert_eq!(in_image(dir.path(), "s2").as_deref(), Some("2"));
            assert_eq!(logs(dir.path()), 1);
        }
        assert_eq!(in_image(dir.path(), "s1").as_deref(), Some("3"));
        assert_eq!(in_image(dir.path(), "s2"), None);
        let (db, o) = open(dir.path());
        assert_eq!(logs(dir.path()), 0);
        assert_eq!(o.get(b"s1").unwrap().as_deref(), Some(b"3".as_slice()));
        assert_eq!(o.get(b"s2").unwrap(), None);
        assert_eq!(sled_prefix(&db, b"s"), Vec::<String>::new());
        // After the crash: the kept log files give back every held write,
        // and the open makes them a delta of the image before they go.
        for _ in 0..2 {
            let (db, o) = open(crashed.path());
            assert_eq!(logs(crashed.path()), 0);
            assert_eq!(o.get(b"s1").unwrap().as_deref(), Some(b"2".as_slice()));
            assert_eq!(o.get(b"s2").unwrap().as_deref(), Some(b"2".as_slice()));
            assert_eq!(in_sled(&db, "x1").as_deref(), Some("1"));
            assert_eq!(in_image(crashed.path(), "s1").as_deref(), Some("2"));
        }
    }

    #[test]
    fn the_history_moves_between_sled_and_the_image_and_back_losing_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let resident = |dir: &Path| image::is_resident(&dir.join("history")).unwrap();
        {
            let (_db, o) = open(dir.path());
            for (k, v) in [("s1", "1"), ("s2", "1"), ("x1", "1")] {
                commit_one(&o, k, Some(v));
            }
            o.flush().unwrap();
        }
        assert!(!resident(dir.path()));
        {
            // Made resident: sled's records move into a new image.
            let (db, o) = open(dir.path());
            o.track_keys(true).unwrap();
            assert!(resident(dir.path()));
            assert_eq!(sled_prefix(&db, b"s"), Vec::<String>::new());
            assert_eq!(image_state(dir.path()).len(), 2);
            commit_one(&o, "s1", Some("2"));
            o.flush().unwrap();
        }
        {
            // Resident from the open on (a one-off command tracks nothing).
            let (db, o) = open(dir.path());
            assert!(o.inner().resident.is_some());
            assert_eq!(o.get(b"s1").unwrap().as_deref(), Some(b"2".as_slice()));
            // A record sled holds beside an image is a leftover of a move
            // that did not finish: the image wins.
            db.insert(b"s9", b"stale".as_slice()).unwrap();
            db.flush().unwrap();
        }
        {
            let (db, o) = open(dir.path());
            assert_eq!(o.get(b"s9").unwrap(), None);
            assert_eq!(sled_prefix(&db, b"s"), Vec::<String>::new());
            // A write not flushed yet is made durable before sled gets the
            // resident map (else it would be in sled without its event).
            commit_one(&o, "s3", Some("pending"));
            // Tracked without resident keyspaces: back into sled.
            o.track_keys(false).unwrap();
            assert_eq!(o.pending(), 0);
            assert!(!resident(dir.path()));
            assert!(o.inner().resident.is_none());
            assert_eq!(sled_prefix(&db, b"s"), ["s1", "s2", "s3"]);
            commit_one(&o, "s2", Some("3"));
            o.flush().unwrap();
        }
        let (db, o) = open(dir.path());
        assert!(o.inner().resident.is_none());
        let got: Vec<_> = ["s1", "s2", "x1"]
            .iter()
            .map(|k| db.get(k).unwrap().map(|v| v.to_vec()))
            .collect();
        assert_eq!(
            got,
            [
                Some(b"2".to_vec()),
                Some(b"3".to_vec()),
                Some(b"1".to_vec())
            ]
        );
    }

    #[test]
    fn settle_does_not_wait_for_the_time_limit_when_a_checkpoint_ends_with_writes_held() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, o) = open(dir.path());
        o.track_keys(true).unwrap();
        // Enough keys for a checkpoint of their own...
        let mut tx = o.begin();
        for i in 0..HOLD_KEYS {
            tx.put(format!("s{i:07}").into_bytes(), b"v".to_vec());
        }
        tx.commit();
        o.flush().unwrap();
        // ... while one more batch is held, and settle asks for both.
        commit_one(&o, "s-last", Some("w"));
        o.flush().unwrap();
        let started = std::time::Instant::now();
        o.settle().unwrap();
        // The second checkpoint starts when the first ends, not when the
        // held writes reach their time limit.
        assert!(
            started.elapsed() < HOLD_TIME / 2,
            "settle took {:?}",
            started.elapsed()
        );
        assert_eq!(
            image_state(dir.path()).get("s-last").map(String::as_str),
            Some("w")
        );
    }

    /// The resident band index against [`BandRecord`]s kept beside it: the
    /// same sellers through touches, puts, removals, seals, flushes,
    /// change capture, damage, a crash copy and a reopen.
    /// The band records the history image holds in `dir`, decoded.
    fn image_bands(dir: &Path) -> std::collections::BTreeMap<u64, BandRecord> {
        let mut m = std::collections::BTreeMap::new();
        image::load(&dir.join("history"), |k, v| {
            if let Some(id) = band_id(&k) {
                match crate::decode::<BandRecord>(&k, v.as_deref()).unwrap() {
                    Some(rec) => m.insert(id, rec),
                    None => m.remove(&id),
                };
            }
        })
        .unwrap();
        m
    }

    /// Asserts that the band index answers `model` for `ids` (reads).
    fn assert_bands(
        o: &Overlay,
        ids: &[u64],
        model: &std::collections::BTreeMap<u64, BandRecord>,
        when: &str,
    ) {
        let got = o
            .read_bands(ids, &mut None, |recs| {
                recs.iter()
                    .map(|r| r.map(<[_]>::to_vec))
                    .collect::<Vec<_>>()
            })
            .unwrap();
        let want: Vec<_> = ids
            .iter()
            .map(|id| model.get(id).map(|r| r.sellers.to_vec()))
            .collect();
        assert_eq!(got, want, "{when}: reads");
    }

    #[test]
    fn flushes_log_band_touches_and_the_image_gets_band_records_at_cuts() {
        type Model = std::collections::BTreeMap<u64, BandRecord>;
        let dir = tempfile::tempdir().unwrap();
        let crashed = tempfile::tempdir().unwrap();
        let crashed_at_checkpoint = tempfile::tempdir().unwrap();
        let logs = |dir: &Path| -> Vec<(u64, Map)> {
            let mut paths: Vec<_> = std::fs::read_dir(dir.join("wal"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "wal"))
                .collect();
            paths.sort();
            paths.iter().map(|p| read_wal(p).unwrap()).collect()
        };
        let applied = |o: &Overlay| {
            let started = std::time::Instant::now();
            while !o.inner().applying.is_empty() {
                assert!(started.elapsed().as_secs() < 30, "the applier is stuck");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        let touch = |o: &Overlay, model: &mut Model, id: u64, seller: u64, t: i64| {
            let mut tx = o.begin();
            tx.touch_band(id, None, seller, t).unwrap();
            tx.commit();
            model.entry(id).or_default().touch(seller, t);
        };
        let touches = |writes: &Map| -> Vec<(u64, u64, i64)> {
            match writes.get(TOUCHES) {
                Some(Some(bytes)) => touches_of(bytes).collect(),
                _ => Vec::new(),
            }
        };
        // What a store opened on `dir` answers for every band of `model`.
        let check = |dir: &Path, model: &Model, when: &str| {
            let (_db, o) = open(dir);
            assert_bands(&o, &[1, 2, 3, 4, 5, 6], model, when);
            assert!(logs(dir).is_empty(), "{when}: the open checkpoints the log");
        };
        let mut model = Model::new();
        let (db, o) = open(dir.path());
        o.track_keys(true).unwrap();
        // Two batches flushed behind: their log files hold the touches, in
        // commit order, and no band record.
        touch(&o, &mut model, 1, 10, 100);
        touch(&o, &mut model, 1, 11, 101);
        touch(&o, &mut model, 2, 10, 100);
        assert_eq!(o.pending(), 2, "a band touched counts once");
        o.flush_behind().unwrap();
        touch(&o, &mut model, 1, 12, 102);
        touch(&o, &mut model, 3, 12, 102);
        o.flush_behind().unwrap();
        applied(&o);
        let written = logs(dir.path());
        assert_eq!(written.len(), 2);
        for (epoch, writes) in &written {
            assert!(
                writes.keys().all(|k| band_id(k).is_none()),
                "batch {epoch} logged a band record"
            );
        }
        assert_eq!(
            touches(&written[0].1),
            [(1, 10, 100), (1, 11, 101), (2, 10, 100)]
        );
        assert_eq!(touches(&written[1].1), [(1, 12, 102), (3, 12, 102)]);
        // In one layer, a band touched, written whole (as compaction prunes
        // one) and touched again: the log replays a layer's records before
        // its touches, so the band's record as it is at the flush goes in
        // instead of its touches.
        touch(&o, &mut model, 4, 20, 200);
        touch(&o, &mut model, 5, 20, 200);
        let pruned = BandRecord {
            sellers: [(21, 150)].into_iter().collect(),
        };
        let mut tx = o.begin();
        tx.put(band_key(4), crate::encode(&pruned));
        tx.commit();
        model.insert(4, pruned);
        touch(&o, &mut model, 4, 22, 210);
        o.flush_behind().unwrap();
        applied(&o);
        let third = &logs(dir.path())[2].1;
        let record = third.get(&band_key(4)).cloned().flatten().unwrap();
        assert_eq!(
            crate::decode::<BandRecord>(&band_key(4), Some(&record)).unwrap(),
            Some(model[&4].clone())
        );
        assert_eq!(touches(third), [(5, 20, 200)]);
        // No cut yet: the image has no band.
        assert!(image_bands(dir.path()).is_empty());
        // The disk as a crash now would leave it: the open replays the log.
        for sub in ["db", "wal", "history"] {
            copy_dir(&dir.path().join(sub), &crashed.path().join(sub));
            copy_dir(
                &dir.path().join(sub),
                &crashed_at_checkpoint.path().join(sub),
            );
        }
        let before_settle = model.clone();
        // settle makes a cut (nothing else would come), then a checkpoint:
        // the image holds every band as it is, and the log files go.
        o.settle().unwrap();
        assert_eq!(image_bands(dir.path()), model);
        assert!(logs(dir.path()).is_empty());
        // A crash between that checkpoint and sled's applied epoch leaves
        // the image with it and the older log files; a batch after it has
        // its log too. The open applies only that one's touches.
        touch(&o, &mut model, 6, 30, 300);
        touch(&o, &mut model, 1, 30, 300);
        o.flush().unwrap();
        copy_dir(
            &dir.path().join("history"),
            &crashed_at_checkpoint.path().join("history"),
        );
        copy_dir(
            &dir.path().join("wal"),
            &crashed_at_checkpoint.path().join("wal"),
        );
        drop(o);
        drop(db);
        // Closed after a cut: the image has everything.
        assert_eq!(image_bands(dir.path()), model);
        check(dir.path(), &model, "reopened");
        check(crashed.path(), &before_settle, "after a crash");
        check(
            crashed_at_checkpoint.path(),
            &model,
            "after a crash at a checkpoint",
        );
        assert_eq!(image_bands(crashed_at_checkpoint.path()), model);
    }

    #[test]
    fn band_changes_at_random_survive_a_crash_after_any_mix_of_flushes() {
        type Model = std::collections::BTreeMap<u64, BandRecord>;
        let ids: Vec<u64> = (1..=10).collect();
        // Checkpoints when settle asks only, or due every few keys (then the
        // applier asks for cuts).
        let open = open_with;
        let runs = (1..=4u64).flat_map(|s| {
            [false, true].into_iter().flat_map(move |capture| {
                [HOLD_KEYS, 8]
                    .into_iter()
                    .map(move |keys| (s, capture, keys))
            })
        });
        for (seed, capture, checkpoint_keys) in runs {
            let dir = tempfile::tempdir().unwrap();
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let mut model = Model::new();
            // Crash copies, each taken after a flush, with the bands then.
            let mut crashes: Vec<(tempfile::TempDir, Model)> = Vec::new();
            {
                let (_db, o) = open(dir.path(), checkpoint_keys);
                o.track_keys(true).unwrap();
                if capture {
                    o.enable_journal();
                }
                for step in 0..300i64 {
                    let mut tx = o.begin();
                    let id = ids[(next() % ids.len() as u64) as usize];
                    match next() % 16 {
                        // Compaction's kind of write: the band pruned, whole.
                        0 => {
                            if let Some(mut rec) = model.get(&id).cloned() {
                                rec.sellers.truncate(rec.sellers.len() / 2);
                                tx.put(band_key(id), crate::encode(&rec));
                                model.insert(id, rec);
                            }
                        }
                        1 => {
                            tx.remove(band_key(id));
                            model.remove(&id);
                        }
                        _ => {}
                    }
                    // Then touches (a transaction applies them after its
                    // writes), of that band too.
                    for i in 0..1 + next() % 4 {
                        let id = if i == 0 {
                            id
                        } else {
                            ids[(next() % ids.len() as u64) as usize]
                        };
                        let (seller, t) = (next() % 40, step * 10 + (next() % 30) as i64);
                        tx.touch_band(id, None, seller, t).unwrap();
                        model.entry(id).or_default().touch(seller, t);
                    }
                    tx.commit();
                    match next() % 12 {
                        0 | 1 => o.flush_behind().unwrap(),
                        2 => o.flush().unwrap(),
                        3 => o.seal().unwrap(),
                        4 => o.flush_sealed().unwrap(),
                        5 => o.settle().unwrap(),
                        _ => {}
                    }
                    if step % 60 == 59 {
                        o.flush().unwrap();
                        while !o.inner().applying.is_empty() {
                            std::thread::sleep(std::time::Duration::from_millis(2));
                        }
                        let copy = tempfile::tempdir().unwrap();
                        for sub in ["db", "wal", "history"] {
                            copy_dir(&dir.path().join(sub), &copy.path().join(sub));
                        }
                        crashes.push((copy, model.clone()));
                    }
                }
                o.flush().unwrap();
            }
            let when = format!("seed {seed}, capture {capture}, checkpoints {checkpoint_keys}");
            let (_db, o) = open(dir.path(), checkpoint_keys);
            assert_bands(&o, &ids, &model, &format!("{when}, reopened"));
            for (i, (copy, model)) in crashes.iter().enumerate() {
                let (_db, o) = open(copy.path(), checkpoint_keys);
                assert_bands(&o, &ids, model, &format!("{when}, crash {i}"));
            }
        }
    }

    #[test]
    fn a_checkpoint_due_waits_for_a_cut_and_the_next_flush_makes_one() {
        let dir = tempfile::tempdir().unwrap();
        let crashed = tempfile::tempdir().unwrap();
        let open = |dir: &Path| {
            // Due past two keys held (or bands changed since the last cut).
            let (_db, o) = open_with(dir, 2);
            o.track_keys(true).unwrap();
            o
        };
        let settled = |o: &Overlay, epoch: u64| {
            let started = std::time::Instant::now();
            while o.inner().in_sled < epoch {
                assert!(started.elapsed().as_secs() < 30, "no checkpoint");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        let mut model = std::collections::BTreeMap::<u64, BandRecord>::new();
        let o = open(dir.path());
        for (id, seller) in [(1, 1), (2, 1), (3, 2)] {
            let mut tx = o.begin();
            tx.touch_band(id, None, seller, 100).unwrap();
            tx.commit();
            model.entry(id).or_default().touch(seller, 100);
        }
        // Flushed behind, not a cut: the checkpoint it makes due waits.
        o.flush_behind().unwrap();
        let started = std::time::Instant::now();
        while !o.shared.want_cut.load(Ordering::SeqCst) {
            assert!(started.elapsed().as_secs() < 30, "no cut asked for");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(o.inner().in_sled, 0, "no checkpoint before the cut");
        assert!(image_bands(dir.path()).is_empty());
        for sub in ["db", "wal", "history"] {
            copy_dir(&dir.path().join(sub), &crashed.path().join(sub));
        }
        // The next flush behind is the cut: then the checkpoint.
        let mut tx = o.begin();
        tx.put(b"s1".to_vec(), b"x".to_vec());
        tx.commit();
        o.flush_behind().unwrap();
        settled(&o, 2);
        assert_eq!(image_bands(dir.path()), model);
        assert!(!o.shared.want_cut.load(Ordering::SeqCst));
        // The log the crash copy kept gives the touches back.
        let o = open(crashed.path());
        assert_bands(&o, &[1, 2, 3], &model, "after a crash");
    }

    #[test]
    fn the_band_index_holds_what_band_records_would() {
        // Without change capture touched bands reach the log at flushes,
        // with it at commit.
        for capture in [false, true] {
            band_index_against_records(capture);
        }
    }

    fn band_index_against_records(capture: bool) {
        type Model = std::collections::BTreeMap<u64, BandRecord>;
        let dir = tempfile::tempdir().unwrap();
        let crashed = tempfile::tempdir().unwrap();
        let mut model = Model::new();
        let ids: Vec<u64> = (0..12u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        // Every band as the index answers it, by reads, gets and a scan.
        let check = |o: &Overlay, model: &Model, when: &str| {
            assert_bands(o, &ids, model, when);
            for id in &ids {
                let bytes = o.get(&band_key(*id)).unwrap();
                assert_eq!(
                    bytes,
                    model.get(id).map(|r| IVec::from(crate::encode(r))),
                    "{when}: get"
                );
            }
            let scanned = o.scan_prefix(&[keys::BAND]).unwrap();
            let want: Vec<_> = model
                .iter()
                .map(|(id, r)| (band_key(*id), IVec::from(crate::encode(r))))
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_iter()
                .collect();
            assert_eq!(scanned, want, "{when}: scan");
            let mut keys = o.resident_keys(keys::BAND).unwrap();
            keys.sort();
            let want: Vec<IVec> = want.into_iter().map(|(k, _)| IVec::from(k)).collect();
            assert_eq!(keys, want, "{when}: resident keys");
        };
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        {
            let (_db, o) = open(dir.path());
            o.track_keys(true).unwrap();
            if capture {
                o.enable_journal();
            }
            for step in 0..400 {
                let mut tx = o.begin();
                // Up to 6 touches per event, 40 sellers: bands fill past 32.
                for _ in 0..1 + next() % 6 {
                    let id = ids[(next() % ids.len() as u64) as usize];
                    let (seller, t) = (next() % 40, (step * 10 + (next() % 30) as i64));
                    tx.touch_band(id, None, seller, t).unwrap();
                    model.entry(id).or_default().touch(seller, t);
                }
                match step % 50 {
                    // A put replaces the record, touches before it in the
                    // transaction are dropped, touches after it apply on it.
                    7 => {
                        let id = ids[3];
                        let rec = BandRecord {
                            sellers: [(999, step * 10)].into_iter().collect(),
                        };
                        tx.put(band_key(id), crate::encode(&rec));
                        tx.touch_band(id, None, 998, step * 10 + 1).unwrap();
                        let mut rec = rec;
                        rec.touch(998, step * 10 + 1);
                        model.insert(id, rec);
                    }
                    21 => {
                        tx.remove(band_key(ids[5]));
                        model.remove(&ids[5]);
                    }
                    _ => {}
                }
                tx.commit();
                if step == 0 {
                    assert!(o.pending() > 0, "touched bands count as pending");
                }
                match step % 37 {
                    5 => o.flush().unwrap(),
                    11 => o.seal().unwrap(),
                    17 => o.flush_sealed().unwrap(),
                    _ => {}
                }
                if step % 13 == 0 {
                    check(&o, &model, &format!("step {step}"));
                }
            }
            // Change capture saw every band change with its bytes then.
            let journal = o.take_journal();
            assert_eq!(journal.is_empty(), !capture);
            let last = |id: u64| {
                journal
                    .iter()
                    .rev()
                    .find(|c| c.key == band_key(id))
                    .map(|c| c.value.clone())
            };
            for id in ids.iter().filter(|_| capture) {
                let want = model.get(id).map(crate::encode);
                assert_eq!(last(*id), Some(want), "journal of band {id:x}");
            }
            o.flush().unwrap();
            // A flush with only touched bands pending flushes them too.
            let mut tx = o.begin();
            tx.touch_band(ids[1], None, 7, 5_000).unwrap();
            tx.commit();
            model.entry(ids[1]).or_default().touch(7, 5_000);
            assert_eq!(o.pending(), 1);
            o.flush().unwrap();
            assert_eq!(o.pending(), 0);
            for sub in ["db", "wal", "history"] {
                copy_dir(&dir.path().join(sub), &crashed.path().join(sub));
            }
            // Bytes that are no band record: kept, and reads report them.
            let mut tx = o.begin();
            tx.put(band_key(ids[0]), vec![5, 1, 2]);
            tx.commit();
            let err = o.read_bands(&ids[..1], &mut None, |_| ()).unwrap_err();
            assert!(err.to_string().contains("corrupt"), "{err}");
            assert_eq!(
                o.get(&band_key(ids[0])).unwrap().as_deref(),
                Some([5u8, 1, 2].as_slice())
            );
            let mut tx = o.begin();
            tx.put(band_key(ids[0]), crate::encode(&model[&ids[0]]));
            tx.commit();
            check(&o, &model, "repaired");
        }
        // Reopened after a close (the image), and from the crash copy (the log).
        for (d, when) in [(dir.path(), "reopened"), (crashed.path(), "after a crash")] {
            let (_db, o) = open(d);
            check(&o, &model, &format!("{when}, capture {capture}"));
        }
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    #[test]
    fn a_sealed_flush_makes_only_the_writes_before_the_seal_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_db, o) = open(dir.path());
            let mut tx = o.begin();
            tx.put(b"a".to_vec(), b"1".to_vec());
            tx.commit();
            o.seal().unwrap();
            let point = o.durable_point();
            let mut tx = o.begin();
            tx.put(b"a".to_vec(), b"2".to_vec());
            tx.put(b"b".to_vec(), b"1".to_vec());
            tx.commit();
            assert_eq!(o.durable_point(), point + 1, "the newer writes go later");
            assert_eq!(o.pending(), 3, "sealed and pending writes");
            // Reads see the newest value, whichever layer holds it.
            assert_eq!(o.get(b"a").unwrap().unwrap().as_ref(), b"2");
            o.flush_sealed().unwrap();
            assert!(o.wait_durable(point, std::time::Duration::ZERO).unwrap());
            assert!(!o
                .wait_durable(point + 1, std::time::Duration::ZERO)
                .unwrap());
            assert_eq!(o.pending(), 2);
            assert_eq!(o.get(b"a").unwrap().unwrap().as_ref(), b"2");
            o.settle().unwrap();
        } // a crash: the writes after the seal were never flushed
        {
            let (_db, o) = open(dir.path());
            assert_eq!(o.get(b"a").unwrap().unwrap().as_ref(), b"1");
            assert!(o.get(b"b").unwrap().is_none());
            // A full flush takes a sealed layer first, then the rest.
            let mut tx = o.begin();
            tx.put(b"a".to_vec(), b"3".to_vec());
            tx.commit();
            o.seal().unwrap();
            let mut tx = o.begin();
            tx.put(b"a".to_vec(), b"4".to_vec());
            tx.commit();
            o.flush().unwrap();
        }
        let (_db, o) = open(dir.path());
        assert_eq!(o.get(b"a").unwrap().unwrap().as_ref(), b"4");
    }

    #[test]
    fn batches_flushed_behind_are_logged_by_the_applier_and_a_failure_stops_the_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let crash = tempfile::tempdir().unwrap();
        {
            let (db, o) = open(dir.path());
            for round in 0..6u32 {
                let mut tx = o.begin();
                tx.put(b"k".to_vec(), round.to_le_bytes().to_vec());
                tx.put(format!("r{round}").into_bytes(), vec![1]);
                tx.commit();
                if round % 3 == 2 {
                    o.flush().unwrap();
                    // Everything before is durable with it.
                    assert!(o
                        .wait_durable(o.durable_point(), std::time::Duration::ZERO)
                        .unwrap());
                } else {
                    o.flush_behind().unwrap();
                }
                assert_eq!(o.pending(), 0);
                assert_eq!(o.get(b"k").unwrap().unwrap().as_ref(), round.to_le_bytes());
            }
            let point = o.durable_point();
            assert!(o
                .wait_durable(point, std::time::Duration::from_secs(10))
                .unwrap());
            o.settle().unwrap();
            assert_eq!(db.get(b"k").unwrap().unwrap().as_ref(), 5u32.to_le_bytes());
            // A batch flushed behind, its log written: a crash copy has it.
            commit_one(&o, "late", Some("1"));
            o.flush_behind().unwrap();
            assert!(o
                .wait_durable(point + 1, std::time::Duration::from_secs(10))
                .unwrap());
            copy_dir(dir.path(), crash.path());
            // The log cannot be written: the next flush reports it.
            std::fs::remove_dir_all(dir.path().join("wal")).unwrap();
            commit_one(&o, "lost", Some("1"));
            o.flush_behind().unwrap();
            let err = o.flush().unwrap_err().to_string();
            assert!(err.contains("writing log batch"), "{err}");
        }
        let (_db, o) = open(crash.path());
        assert_eq!(o.get(b"late").unwrap().unwrap().as_ref(), b"1");
        assert_eq!(o.get(b"k").unwrap().unwrap().as_ref(), 5u32.to_le_bytes());
        assert_eq!(o.scan_prefix(b"r").unwrap().len(), 6);
    }

    #[test]
    fn a_corrupt_log_file_stops_the_open_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let wal = dir.path().join("wal");
        write_wal(&wal, 5, &map(&[("k", Some("v"))]), &mut Vec::new()).unwrap();
        let path = wal_path(&wal, 5, "wal");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .unwrap();
        let err = Overlay::open(db, &wal, &dir.path().join("history"), b"s", HOLD_KEYS)
            .unwrap_err()
            .to_string();
        assert!(err.contains("00000000000000000005.wal"), "{err}");
    }
}
