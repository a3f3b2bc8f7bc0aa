//! One event through the engine and the store: the step both run loops share.

use haechi_engine::{Engine, Listing, Verdict};
use haechi_store::{Store, StoreError};

/// Pending store writes that trigger a flush.
pub const FLUSH_EVERY: usize = 20_000;

/// What processing an event produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Processed {
    pub verdict: Verdict,
    /// The event had been processed before (a replay after a crash, a
    /// redelivery): this is its original verdict and nothing was changed.
    pub duplicate: bool,
}

/// The engine and the store, wired together.
#[derive(Debug)]
pub struct Processor<'a> {
    pub engine: &'a Engine,
    pub store: &'a Store,
}

impl Processor<'_> {
    /// Judges one valid event: idempotency check, analysis, history snapshot
    /// before the decision, the decision, the history update after it.
    pub fn process(&self, listing: &Listing) -> Result<Processed, StoreError> {
        if let Some(verdict) = self.store.seen(&listing.event_id)? {
            return Ok(Processed {
                verdict,
                duplicate: true,
            });
        }
        let analysis = self.engine.analyze(listing);
        let snapshot = self.store.snapshot(listing, &analysis)?;
        let verdict = self.engine.decide(listing, &analysis, &snapshot);
        self.store.record(listing, &analysis, &verdict)?;
        // Bound the memory of pending writes: flush in large atomic batches.
        if self.store.pending() >= FLUSH_EVERY {
            self.store.flush()?;
        }
        Ok(Processed {
            verdict,
            duplicate: false,
        })
    }
}
