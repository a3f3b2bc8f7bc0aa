//! One event through the engine and the store: the step both run loops share.

use haechi_engine::{Analysis, Engine, Listing, Verdict};
use haechi_store::{EventReads, Store, StoreError};

/// Pending store writes that trigger a flush.
pub const FLUSH_EVERY: usize = 50_000;

/// What processing an event produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Processed {
    pub verdict: Verdict,
    /// The verdict as written to outputs (and stored for redeliveries).
    pub json: String,
    /// The event had been processed before (a replay after a crash, a
    /// redelivery): this is its original verdict and nothing was changed.
    pub duplicate: bool,
    /// Time spent in each stage (zero for duplicates).
    pub timings: StageTimes,
}

/// Where an event's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Normalization, rules, extractors, model features and score.
    pub analyze: std::time::Duration,
    /// Reading the seller's history snapshot.
    pub history: std::time::Duration,
    /// The policy's decision.
    pub decide: std::time::Duration,
    /// Recording the event (history update, review case, idempotency).
    pub record: std::time::Duration,
}

/// The engine and the store, wired together.
#[derive(Debug)]
pub struct Processor<'a> {
    pub engine: &'a Engine,
    pub store: &'a Store,
    last_flush: std::cell::Cell<std::time::Instant>,
    /// Flush on its own (replay); off when the caller orders flushes (the
    /// Kafka loop flushes only after its outputs are delivered).
    auto_flush: bool,
    /// Pending writes that trigger an automatic flush.
    flush_every: usize,
}

/// Longest time pending writes wait for a flush.
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl<'a> Processor<'a> {
    pub fn new(engine: &'a Engine, store: &'a Store) -> Processor<'a> {
        Processor {
            engine,
            store,
            last_flush: std::cell::Cell::new(std::time::Instant::now()),
            auto_flush: true,
            flush_every: FLUSH_EVERY,
        }
    }

    /// Flush after this many pending writes instead of [`FLUSH_EVERY`]
    /// (smaller: less memory and less lost work on a crash, slower).
    pub fn flush_every(mut self, writes: usize) -> Processor<'a> {
        self.flush_every = writes.max(1);
        self
    }

    /// A processor that never flushes the store itself.
    pub fn manual_flush(engine: &'a Engine, store: &'a Store) -> Processor<'a> {
        Processor {
            auto_flush: false,
            ..Processor::new(engine, store)
        }
    }

    /// Judges one valid event: idempotency check, analysis, history snapshot
    /// before the decision, the decision, the history update after it.
    pub fn process(&self, listing: &Listing) -> Result<Processed, StoreError> {
        let mut reads = self.store.event_reads();
        if let Some(p) = self.already_processed(listing, &mut reads)? {
            return Ok(p);
        }
        let t0 = std::time::Instant::now();
        let analysis = self.engine.analyze(listing);
        self.decide_and_record(listing, analysis, reads, t0)
    }

    /// [`Processor::process`] for an event analyzed elsewhere (a parallel
    /// analysis stage): analysis is pure, so where it ran changes nothing.
    pub fn process_analyzed(
        &self,
        listing: &Listing,
        analysis: Analysis,
    ) -> Result<Processed, StoreError> {
        let mut reads = self.store.event_reads();
        if let Some(p) = self.already_processed(listing, &mut reads)? {
            return Ok(p);
        }
        self.decide_and_record(listing, analysis, reads, std::time::Instant::now())
    }

    /// The original verdict of an event processed before, if it was.
    fn already_processed(
        &self,
        listing: &Listing,
        reads: &mut EventReads,
    ) -> Result<Option<Processed>, StoreError> {
        Ok(self
            .store
            .seen_json_with(&listing.listing_id, &listing.event_id, reads)?
            .map(|(verdict, json)| Processed {
                verdict,
                json,
                duplicate: true,
                timings: StageTimes::default(),
            }))
    }

    fn decide_and_record(
        &self,
        listing: &Listing,
        analysis: Analysis,
        mut reads: EventReads,
        t0: std::time::Instant,
    ) -> Result<Processed, StoreError> {
        let t1 = std::time::Instant::now();
        let snapshot = self.store.snapshot_with(listing, &analysis, &mut reads)?;
        let t2 = std::time::Instant::now();
        let verdict = self.engine.decide(listing, &analysis, &snapshot);
        let t3 = std::time::Instant::now();
        let json = serde_json::to_string(&verdict).map_err(|e| StoreError::Corrupt {
            key: listing.event_id.clone(),
            message: e.to_string(),
        })?;
        self.store
            .record_with(listing, &analysis, &verdict, reads)?;
        let timings = StageTimes {
            analyze: t1 - t0,
            history: t2 - t1,
            decide: t3 - t2,
            record: t3.elapsed(),
        };
        // Flush in large atomic batches: when pending writes pile up (bounds
        // memory) or a second has passed (bounds what a crash can undo). The
        // log file is written behind, on the store's applier thread (it was
        // 6% of a resident replay's history thread); the end of the replay
        // flushes and waits.
        if self.auto_flush
            && (self.store.pending() >= self.flush_every
                || self.last_flush.get().elapsed() >= FLUSH_INTERVAL)
        {
            self.store.flush_behind()?;
            self.last_flush.set(std::time::Instant::now());
            // After a flush, as the Kafka loop does (verdicts do not depend
            // on when compaction runs).
            self.store.compact_if_due()?;
        }
        Ok(Processed {
            verdict,
            json,
            duplicate: false,
            timings,
        })
    }
}

/// The threads to use by default: the cores available, at most 4.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().min(4))
        .unwrap_or(1)
}

/// `f` over `items` on up to `threads` threads (contiguous shares, the
/// caller's thread taking one), results in the order of `items`. For the pure
/// stages (decoding, analysis): where they run changes nothing.
pub fn parallel_map<T, R, F>(items: &[T], threads: usize, f: &F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    if threads <= 1 || items.len() < 2 {
        return items.iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let mut parts = items.chunks(per);
        let mine = parts.next().unwrap_or_default();
        let handles: Vec<_> = parts
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out: Vec<R> = mine.iter().map(f).collect();
        for h in handles {
            match h.join() {
                Ok(rs) => out.extend(rs),
                // The engine does not panic on input (fuzzed); if it ever
                // did, fail loudly rather than lose events.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::parallel_map;

    #[test]
    fn parallel_map_keeps_order_for_any_thread_count() {
        let items: Vec<u32> = (0..1001).collect();
        let want: Vec<u64> = items.iter().map(|&x| u64::from(x) * 3).collect();
        for threads in [0, 1, 2, 3, 7, 2000] {
            assert_eq!(
                parallel_map(&items, threads, &|&x| u64::from(x) * 3),
                want,
                "{threads} threads"
            );
        }
        assert!(parallel_map(&[] as &[u32], 4, &|&x| x).is_empty());
    }
}
