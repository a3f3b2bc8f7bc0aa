//! # haechi-engine
//!
//! The decision engine of haechi: everything that turns one listing event into
//! one verdict, and nothing else. It is pure and synchronous: no files, no
//! network, no clocks, no threads, no `async`. Every function here is total on
//! its input — malformed text, giant strings, odd Unicode — and reports bad
//! input as a value (see [`decode::InvalidEvent`]) rather than panicking.
//!
//! The flow, stage by stage:
//!
//! ```text
//! bytes ─decode──► Listing ─normalize──► Normalized (folded + compact views, offset maps)
//!                              │
//!                              ├─ rules ──► Hits (rule id, span in the ORIGINAL text, weight)
//!                              └─ features ─► model ──► probability
//! SellerSnapshot (read by the caller before the decision) ─┐
//!                                          policy ─────────┴─► Verdict
//! ```
//!
//! [`Engine::evaluate`] is the whole thing. It is split in two halves so callers
//! can parallelise: [`Engine::analyze`] depends only on the listing (and may run
//! on any thread, in any order), [`Engine::decide`] combines an analysis with the
//! seller's history snapshot, which the caller reads from its store before the
//! decision and updates after it.
//!
//! Loading rule packs, lists, policies and models from *text* lives here too
//! (parsing is pure); reading the files is the caller's job.

pub mod contract;
pub mod decode;
pub mod engine;
pub mod eval;
pub mod extract;
pub mod features;
pub mod history;
pub mod model;
pub mod normalize;
pub mod policy;
pub mod rules;

pub use contract::{
    Action, DeadLetter, EventKind, Label, Listing, Reason, ReasonSource, SourcePos, Span,
    TextField, Verdict, Versions,
};
pub use decode::{decode_listing, InvalidEvent, Limits};
pub use engine::{Analysis, Engine, RuleSources};
pub use history::SellerSnapshot;
