//! The history image: where a store with resident keyspaces
//! ([`crate::HistoryConfig::resident_history`]) keeps them on disk instead
//! of in sled.
//!
//! The keyspaces live in memory while the store is open (the overlay's
//! resident map); on disk they are one BASE file — every key with its value
//! as of an epoch — and DELTA files, each the last value (or removal) of
//! every key changed by the batches after the previous file, up to its own
//! epoch. A checkpoint writes one delta (one sequential file instead of a
//! sled insert per key: sled's inserts of the held-back history records
//! were ~40% of the applier's CPU); when the deltas outgrow the base they
//! are merged into a new base on a thread of their own (a streaming merge
//! of sorted files: memory stays flat).
//!
//! Every file is written under a temporary name, synced, renamed and its
//! directory synced: it is whole or absent. Entries are in key order. At
//! open the newest base and the deltas after it are read in epoch order
//! (later values win); older files are leftovers of a finished merge and go.
//! A store is resident exactly when a base file exists.
//!
//! File layout: magic, epoch (u64 LE), entries — tag 1 (put) or 0 (remove),
//! key length (u32 LE), key, for a put value length (u32 LE) and value —,
//! tag 2, the entry count (u64 LE), CRC-32 of everything before it.

use crate::overlay::{io, remove_file as remove, sync_dir};
use crate::{Result, StoreError};
use sled::IVec;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"HAECHII1";
const PUT: u8 = 1;
const REMOVE: u8 = 0;
const END: u8 = 2;

/// Merge the deltas into a new base past this many of them, or when they
/// hold more bytes than the base (and at least [`MERGE_MIN_BYTES`]).
const MERGE_DELTAS: usize = 16;
const MERGE_MIN_BYTES: u64 = 16 << 20;

fn corrupt(path: &Path, why: &str) -> StoreError {
    StoreError::Wal(format!(
        "history image file {} is corrupt: {why}",
        path.display()
    ))
}

fn file(dir: &Path, kind: &str, epoch: u64, ext: &str) -> PathBuf {
    dir.join(format!("{kind}-{epoch:020}.{ext}"))
}

/// The image's files in use: the newest base and the deltas after it, in
/// epoch order.
#[derive(Debug, Default)]
pub(crate) struct Files {
    pub base: Option<(u64, PathBuf)>,
    pub deltas: Vec<(u64, PathBuf)>,
}

impl Files {
    fn bytes(&self) -> (u64, u64) {
        let len = |p: &PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
        (
            self.base.as_ref().map_or(0, |(_, p)| len(p)),
            self.deltas.iter().map(|(_, p)| len(p)).sum(),
        )
    }
}

/// Every image file in `dir`: bases, deltas (each sorted by epoch) and
/// temporary files. No directory: none.
#[allow(clippy::type_complexity)]
fn scan(dir: &Path) -> Result<(Vec<(u64, PathBuf)>, Vec<(u64, PathBuf)>, Vec<PathBuf>)> {
    let (mut bases, mut deltas, mut tmps) = (Vec::new(), Vec::new(), Vec::new());
    let entries = match std::fs::read_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((bases, deltas, tmps)),
        Err(e) => return Err(io("listing", dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| io("listing", dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".tmp") {
            tmps.push(path);
            continue;
        }
        let Some(stem) = name.strip_suffix(".img") else {
            continue;
        };
        let parsed = |rest: &str| rest.parse::<u64>().ok();
        if let Some(epoch) = stem.strip_prefix("base-").and_then(parsed) {
            bases.push((epoch, path));
        } else if let Some(epoch) = stem.strip_prefix("delta-").and_then(parsed) {
            deltas.push((epoch, path));
        }
    }
    bases.sort();
    deltas.sort();
    Ok((bases, deltas, tmps))
}

/// The image's files in use: the newest base, the deltas after it (none
/// without a base: those are leftovers of a move back into sled). Deletes
/// nothing: a checkpoint or a merge may be writing meanwhile.
pub(crate) fn files(dir: &Path) -> Result<Files> {
    let (bases, deltas, _) = scan(dir)?;
    Ok(in_use(&bases, &deltas))
}

/// Of every base and delta, those a reader uses (see [`files`]).
fn in_use(bases: &[(u64, PathBuf)], deltas: &[(u64, PathBuf)]) -> Files {
    let base = bases.last().cloned();
    let deltas = match &base {
        Some((since, _)) => deltas.iter().filter(|(e, _)| e > since).cloned().collect(),
        None => Vec::new(),
    };
    Files { base, deltas }
}

/// Deletes what no reader will use — temporary files (a write that never
/// finished), bases older than the newest, deltas a base already holds (a
/// merge that finished) or deltas without a base (a move back into sled) —
/// at open, before anything writes.
pub(crate) fn clean(dir: &Path) -> Result<()> {
    let (bases, deltas, tmps) = scan(dir)?;
    let kept = in_use(&bases, &deltas);
    let used = |p: &PathBuf| {
        kept.base.as_ref().is_some_and(|(_, b)| b == p) || kept.deltas.iter().any(|(_, d)| d == p)
    };
    for p in tmps
        .iter()
        .chain(bases.iter().map(|(_, p)| p))
        .chain(deltas.iter().map(|(_, p)| p))
    {
        if !used(p) {
            remove(p)?;
        }
    }
    Ok(())
}

/// Whether the store keeps its resident keyspaces in an image.
#[cfg(test)]
pub(crate) fn is_resident(dir: &Path) -> Result<bool> {
    Ok(files(dir)?.base.is_some())
}

/// Bytes of the image's files.
pub(crate) fn bytes(dir: &Path) -> u64 {
    files(dir).map_or(0, |f| {
        let (b, d) = f.bytes();
        b + d
    })
}

/// A file being written: entries are gathered in a buffer, which goes
/// through the checksum into the file a megabyte at a time (a checksum
/// update per field — five per entry — was most of a checkpoint's and a
/// merge's writing).
struct Writer {
    file: std::fs::File,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    count: u64,
    tmp: PathBuf,
}

/// Bytes gathered before a [`Writer`] writes them, or read at once by
/// [`Entries`].
const CHUNK: usize = 1 << 20;

impl Writer {
    fn create(tmp: PathBuf, epoch: u64) -> Result<Writer> {
        let file = std::fs::File::create(&tmp).map_err(|e| io("creating", &tmp, e))?;
        let mut buf = Vec::with_capacity(CHUNK + 64);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&epoch.to_le_bytes());
        Ok(Writer {
            file,
            buf,
            crc: crc32fast::Hasher::new(),
            count: 0,
            tmp,
        })
    }

    /// The gathered bytes through the checksum into the file.
    fn spill(&mut self) -> Result<()> {
        self.crc.update(&self.buf);
        let written = self.file.write_all(&self.buf);
        self.buf.clear();
        written.map_err(|e| io("writing", &self.tmp, e))
    }

    fn entry(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        let len = |n: usize| u32::try_from(n).map(u32::to_le_bytes);
        let too_long = |_| StoreError::Wal("a history record longer than 4 GiB".into());
        let key_len = len(key.len()).map_err(too_long)?;
        self.buf.push(if value.is_some() { PUT } else { REMOVE });
        self.buf.extend_from_slice(&key_len);
        self.buf.extend_from_slice(key);
        if let Some(v) = value {
            self.buf.extend_from_slice(&len(v.len()).map_err(too_long)?);
            self.buf.extend_from_slice(v);
        }
        self.count += 1;
        if self.buf.len() >= CHUNK {
            self.spill()?;
        }
        Ok(())
    }

    /// Ends the file, syncs it and gives it its name (then syncs the
    /// directory): from here it is whole.
    fn finish(mut self, done: &Path) -> Result<()> {
        self.buf.push(END);
        self.buf.extend_from_slice(&self.count.to_le_bytes());
        self.crc.update(&self.buf);
        let crc = self.crc.clone().finalize();
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.file
            .write_all(&self.buf)
            .map_err(|e| io("writing", &self.tmp, e))?;
        self.file
            .sync_all()
            .map_err(|e| io("syncing", &self.tmp, e))?;
        std::fs::rename(&self.tmp, done).map_err(|e| io("renaming", &self.tmp, e))?;
        let dir = done.parent().unwrap_or(Path::new("."));
        sync_dir(dir)
    }
}

/// Writes a base (`delta == false`: every key of the keyspaces, no
/// removals) or a delta of the image as of `epoch`; `entries` in key order.
pub(crate) fn write<'a>(
    dir: &Path,
    delta: bool,
    epoch: u64,
    entries: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    let kind = if delta { "delta" } else { "base" };
    let mut w = Writer::create(file(dir, kind, epoch, "tmp"), epoch)?;
    let mut last: Option<&[u8]> = None;
    for (k, v) in entries {
        debug_assert!(last.is_none_or(|l| l < k), "image entries out of order");
        last = Some(k);
        w.entry(k, v)?;
    }
    w.finish(&file(dir, kind, epoch, "img"))
}

/// Reads a file's entries in order, checking the checksum at its end. The
/// file is read a megabyte at a time, and the checksum taken over what is
/// read in one go per megabyte (not per field).
pub(crate) struct Entries {
    file: std::fs::File,
    /// Bytes read from the file and not yet in the checksum: `buf[..pos]`
    /// are parsed, `buf[pos..]` not yet.
    buf: Vec<u8>,
    pos: usize,
    crc: crc32fast::Hasher,
    read: u64,
    /// Bytes of the file not read into `buf` yet (a damaged length must
    /// not make us allocate more than the file holds).
    left: u64,
    path: PathBuf,
    pub epoch: u64,
    done: bool,
}

impl Entries {
    pub(crate) fn open(path: &Path) -> Result<Entries> {
        let file = std::fs::File::open(path).map_err(|e| io("opening", path, e))?;
        let left = file.metadata().map_err(|e| io("reading", path, e))?.len();
        let mut e = Entries {
            file,
            buf: Vec::new(),
            pos: 0,
            crc: crc32fast::Hasher::new(),
            read: 0,
            left,
            path: path.to_path_buf(),
            epoch: 0,
            done: false,
        };
        if e.take(MAGIC.len())? != MAGIC {
            return Err(corrupt(path, "not a haechi history image file"));
        }
        e.epoch = e.u64()?;
        Ok(e)
    }

    /// The next `n` bytes (read from the file when the buffer holds fewer).
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.buf.len() - self.pos < n {
            self.fill(n)?;
        }
        let at = self.pos;
        self.pos += n;
        Ok(&self.buf[at..at + n])
    }

    /// Makes the buffer hold at least `n` unparsed bytes: the parsed ones
    /// go into the checksum and out of the buffer, then a megabyte (or `n`)
    /// more is read.
    fn fill(&mut self, n: usize) -> Result<()> {
        let unparsed = self.buf.len() - self.pos;
        let want = (n - unparsed).max(CHUNK) as u64;
        let more = want.min(self.left);
        if (unparsed as u64) + more < n as u64 {
            return Err(corrupt(&self.path, "truncated"));
        }
        self.crc.update(&self.buf[..self.pos]);
        self.buf.drain(..self.pos);
        self.pos = 0;
        let at = self.buf.len();
        // `more` is at most `n` or a megabyte (or what the file has left).
        let more = usize::try_from(more).unwrap_or(usize::MAX);
        self.buf.resize(at + more, 0);
        self.file
            .read_exact(&mut self.buf[at..])
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => corrupt(&self.path, "truncated"),
                _ => io("reading", &self.path, e),
            })?;
        self.left -= more as u64;
        Ok(())
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    /// A length-prefixed field.
    fn chunk(&mut self) -> Result<&[u8]> {
        let b = self.take(4)?;
        let n = u32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as usize;
        self.take(n)
    }

    /// The next entry (`None` value: removed); `None` at the end, once the
    /// count and checksum are verified.
    #[allow(clippy::type_complexity)]
    pub(crate) fn next_entry(&mut self) -> Result<Option<(Vec<u8>, Option<IVec>)>> {
        if self.done {
            return Ok(None);
        }
        let tag = self.take(1)?[0];
        match tag {
            PUT => {
                let k = self.chunk()?.to_vec();
                let v = IVec::from(self.chunk()?);
                self.read += 1;
                Ok(Some((k, Some(v))))
            }
            REMOVE => {
                let k = self.chunk()?.to_vec();
                self.read += 1;
                Ok(Some((k, None)))
            }
            END => {
                let count = self.u64()?;
                // Everything before the checksum field.
                let mut crc = self.crc.clone();
                crc.update(&self.buf[..self.pos]);
                let want = crc.finalize();
                let b = self.take(4)?;
                if u32::from_le_bytes(b.try_into().unwrap_or([0; 4])) != want {
                    return Err(corrupt(&self.path, "checksum mismatch"));
                }
                if count != self.read {
                    return Err(corrupt(&self.path, "entry count mismatch"));
                }
                if self.left != 0 || self.pos != self.buf.len() {
                    return Err(corrupt(&self.path, "bytes after the end"));
                }
                self.done = true;
                Ok(None)
            }
            _ => Err(corrupt(&self.path, "unknown entry tag")),
        }
    }
}

/// Reads the image (the newest base, then each delta after it) into `set`
/// (`None`: the key was removed); returns the epoch it is complete
/// through, or `None` when the store has no image.
pub(crate) fn load(dir: &Path, mut set: impl FnMut(Vec<u8>, Option<IVec>)) -> Result<Option<u64>> {
    let files = files(dir)?;
    let Some((base_epoch, base)) = &files.base else {
        return Ok(None);
    };
    let mut through = *base_epoch;
    for (epoch, path) in
        std::iter::once((base_epoch, base)).chain(files.deltas.iter().map(|(e, p)| (e, p)))
    {
        let mut entries = Entries::open(path)?;
        if entries.epoch != *epoch {
            return Err(corrupt(path, &format!("holds epoch {}", entries.epoch)));
        }
        while let Some((k, v)) = entries.next_entry()? {
            set(k, v);
        }
        through = *epoch;
    }
    Ok(Some(through))
}

/// Whether the deltas should be merged into a new base.
pub(crate) fn merge_due(dir: &Path) -> Result<bool> {
    let files = files(dir)?;
    let (base, deltas) = files.bytes();
    Ok(files.base.is_some()
        && (files.deltas.len() >= MERGE_DELTAS || (deltas >= base && deltas >= MERGE_MIN_BYTES)))
}

/// Merges the base and every delta there is now into a new base as of the
/// last delta's epoch, then deletes them (deltas written meanwhile, with
/// later epochs, stay). Streams the sorted files: memory stays flat.
pub(crate) fn merge(dir: &Path) -> Result<()> {
    let files = files(dir)?;
    let (Some(base), Some(&(through, _))) = (&files.base, files.deltas.last()) else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    // Oldest first: on equal keys the newest file's entry wins.
    let paths: Vec<&PathBuf> = std::iter::once(&base.1)
        .chain(files.deltas.iter().map(|(_, p)| p))
        .collect();
    let mut readers = paths
        .iter()
        .map(|p| Entries::open(p))
        .collect::<Result<Vec<_>>>()?;
    let mut heads = readers
        .iter_mut()
        .map(Entries::next_entry)
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    let mut w = Writer::create(file(dir, "base", through, "tmp"), through)?;
    // The smallest key among the heads; the newest file holding it wins
    // (the files holding it found first, so that the key is not copied).
    let mut holding: Vec<usize> = Vec::with_capacity(heads.len());
    loop {
        holding.clear();
        let mut min: Option<&[u8]> = None;
        for (i, head) in heads.iter().enumerate() {
            let Some((k, _)) = head else { continue };
            match min.map(|m| k.as_slice().cmp(m)) {
                Some(std::cmp::Ordering::Greater) => {}
                Some(std::cmp::Ordering::Equal) => holding.push(i),
                _ => {
                    min = Some(k);
                    holding.clear();
                    holding.push(i);
                }
            }
        }
        let Some(&newest) = holding.last() else { break };
        if let Some((key, Some(v))) = &heads[newest] {
            w.entry(key, Some(v))?;
        }
        for &i in &holding {
            heads[i] = readers[i].next_entry()?;
        }
    }
    w.finish(&file(dir, "base", through, "img"))?;
    remove(&base.1)?;
    for (_, p) in &files.deltas {
        remove(p)?;
    }
    tracing::debug!(
        through,
        deltas = files.deltas.len(),
        seconds = started.elapsed().as_secs_f64(),
        "history image merged into a new base"
    );
    Ok(())
}

/// Deletes the image (the store keeps its history in sled again).
pub(crate) fn remove_all(dir: &Path) -> Result<()> {
    let files = files(dir)?;
    // The base last: until it goes, the store is still resident.
    for (_, p) in &files.deltas {
        remove(p)?;
    }
    if let Some((_, p)) = &files.base {
        remove(p)?;
    }
    if dir.exists() {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(path: &Path) -> Result<Vec<(Vec<u8>, Option<IVec>)>> {
        let mut e = Entries::open(path)?;
        let mut out = Vec::new();
        while let Some(x) = e.next_entry()? {
            out.push(x);
        }
        Ok(out)
    }

    fn state(dir: &Path) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
        let mut m = std::collections::BTreeMap::new();
        load(dir, |k, v| match v {
            Some(v) => {
                m.insert(k, v.to_vec());
            }
            None => {
                m.remove(&k);
            }
        })
        .unwrap();
        m
    }

    fn put(k: &str, v: &str) -> (Vec<u8>, Option<Vec<u8>>) {
        (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()))
    }

    fn del(k: &str) -> (Vec<u8>, Option<Vec<u8>>) {
        (k.as_bytes().to_vec(), None)
    }

    fn write_entries(dir: &Path, delta: bool, epoch: u64, e: &[(Vec<u8>, Option<Vec<u8>>)]) {
        write(
            dir,
            delta,
            epoch,
            e.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
        )
        .unwrap();
    }

    #[test]
    fn a_merge_keeps_the_newest_value_of_every_key_and_drops_removals() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(!is_resident(dir).unwrap());
        write_entries(
            dir,
            false,
            3,
            &[put("a", "1"), put("b", "1"), put("c", "1")],
        );
        assert!(is_resident(dir).unwrap());
        write_entries(dir, true, 5, &[put("a", "2"), del("b"), put("d", "1")]);
        write_entries(dir, true, 9, &[put("b", "3"), del("d"), put("e", "1")]);
        let before = state(dir);
        let want: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
            [("a", "2"), ("b", "3"), ("c", "1"), ("e", "1")]
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect();
        assert_eq!(before, want);
        merge(dir).unwrap();
        let f = files(dir).unwrap();
        assert_eq!(f.base.as_ref().map(|(e, _)| *e), Some(9));
        assert!(f.deltas.is_empty());
        assert_eq!(state(dir), want);
        // The merged base holds no removals and is in key order.
        let entries = read_all(&f.base.unwrap().1).unwrap();
        assert!(entries.iter().all(|(_, v)| v.is_some()));
        assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn leftovers_of_a_finished_merge_and_unfinished_writes_are_ignored_and_cleaned_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_entries(dir, false, 3, &[put("a", "old")]);
        write_entries(dir, true, 5, &[put("a", "mid")]);
        write_entries(dir, false, 5, &[put("a", "mid"), put("z", "1")]);
        write_entries(dir, true, 7, &[put("a", "new")]);
        std::fs::write(dir.join("delta-00000000000000000008.tmp"), b"half").unwrap();
        let m = state(dir);
        assert_eq!(
            std::fs::read_dir(dir).unwrap().count(),
            5,
            "reading deletes nothing"
        );
        clean(dir).unwrap();
        assert_eq!(
            m.get(b"a".as_slice()).map(Vec::as_slice),
            Some(b"new".as_slice())
        );
        assert_eq!(m.len(), 2);
        let names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn files_of_several_megabytes_read_back_across_their_chunks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // Small entries past three chunks, a value bigger than a chunk in
        // the middle, removals among them.
        let mut want: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..60_000u32)
            .map(|i| {
                let k = format!("k{i:06}").into_bytes();
                let v = (i % 7 != 3).then(|| vec![(i % 251) as u8; (i % 97) as usize]);
                (k, v)
            })
            .collect();
        want[30_000].1 = Some((0..CHUNK + CHUNK / 2).map(|i| (i % 253) as u8).collect());
        write_entries(dir, true, 4, &want);
        let path = file(dir, "delta", 4, "img");
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        assert!(len > 3 * CHUNK, "{len} bytes");
        let got = read_all(&path).unwrap();
        assert_eq!(got.len(), want.len());
        for ((gk, gv), (wk, wv)) in got.iter().zip(&want) {
            assert_eq!(gk, wk);
            assert_eq!(
                gv.as_deref(),
                wv.as_deref(),
                "{}",
                String::from_utf8_lossy(wk)
            );
        }
        // Damage past the first chunk, and a cut at a chunk's edge.
        let good = std::fs::read(&path).unwrap();
        for i in [CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 7, len - 5] {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            assert!(read_all(&path).is_err(), "byte {i} flipped went unnoticed");
        }
        for n in [CHUNK, CHUNK + 3, len - 1] {
            std::fs::write(&path, &good[..n]).unwrap();
            assert!(read_all(&path).is_err(), "cut at {n} went unnoticed");
        }
    }

    #[test]
    fn damage_anywhere_in_a_file_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_entries(
            dir,
            false,
            1,
            &[put("key-a", "value-a"), put("key-b", "value-b")],
        );
        let path = files(dir).unwrap().base.unwrap().1;
        let good = std::fs::read(&path).unwrap();
        assert_eq!(read_all(&path).unwrap().len(), 2);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x20;
            std::fs::write(&path, &bad).unwrap();
            assert!(read_all(&path).is_err(), "byte {i} flipped went unnoticed");
        }
        for n in 0..good.len() {
            std::fs::write(&path, &good[..n]).unwrap();
            assert!(read_all(&path).is_err(), "cut at {n} went unnoticed");
        }
        let mut longer = good.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        assert!(read_all(&path).is_err());
    }
}
