//! Training examples, made by running labeled events through the real
//! pipeline: the same analysis, the same history store (a fresh temporary
//! one, fed in file order), the same feature extraction as serving.

use haechi_engine::features::Features;
use haechi_engine::{decode_listing, Engine, EventKind, Limits};
use haechi_store::{Store, StoreError};
use haechi_stream::input::JsonlReader;
use std::path::Path;

/// One labeled example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text: Features,
    pub dense: Features,
    pub fraud: bool,
    pub kind: String,
}

impl Example {
    pub fn features(&self) -> impl Iterator<Item = (u32, f32)> + '_ {
        self.text.iter().chain(self.dense.iter())
    }
}

/// What reading a labeled file produced.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub examples: Vec<Example>,
    /// Lines that were not valid events, or carried no label.
    pub skipped: u64,
    /// blake3 of the file's bytes.
    pub hash: String,
    pub bytes: u64,
}

impl Dataset {
    pub fn positives(&self) -> usize {
        self.examples.iter().filter(|e| e.fraud).count()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path} has no labeled events to learn from")]
    Empty { path: String },
}

/// Replays `path` through `engine` (which must compute features: see
/// [`Engine::with_features`]) and a fresh store, collecting one example per
/// labeled event. Deletions are replayed into the history but are not
/// examples: there is nothing to judge in them.
pub fn load(engine: &Engine, path: &Path, progress: bool) -> Result<Dataset, DatasetError> {
    let io = |source| DatasetError::Io {
        path: path.display().to_string(),
        source,
    };
    let bytes = std::fs::read(path).map_err(io)?;
    let hash = blake3::hash(&bytes).to_hex().to_string();
    let dir = tempfile::tempdir().map_err(io)?;
    let store = Store::open(dir.path())?;
    store.track_keys()?;
    let mut input = JsonlReader::open(path, progress, "features").map_err(io)?;
    let limits = Limits::default();
    let mut examples = Vec::new();
    let mut skipped = 0;
    while let Some((_, raw)) = input.next_line().map_err(io)? {
        let Ok(listing) = decode_listing(raw, &limits) else {
            skipped += 1;
            continue;
        };
        if store
            .seen(&listing.listing_id, &listing.event_id)?
            .is_some()
        {
            continue;
        }
        let analysis = engine.analyze(&listing);
        let snap = store.snapshot(&listing, &analysis)?;
        let (text, dense) = engine.model_input(&listing, &analysis, &snap);
        // The history needs a verdict to record; its action is not a feature.
        let verdict = engine.decide(&listing, &analysis, &snap);
        store.record(&listing, &analysis, &verdict)?;
        match &listing.label {
            Some(label) if listing.event != EventKind::Deleted => examples.push(Example {
                text,
                dense,
                fraud: label.fraud,
                kind: label.kind.clone(),
            }),
            Some(_) => {}
            None => skipped += 1,
        }
    }
    if examples.is_empty() {
        return Err(DatasetError::Empty {
            path: path.display().to_string(),
        });
    }
    Ok(Dataset {
        examples,
        skipped,
        hash,
        bytes: bytes.len() as u64,
    })
}
