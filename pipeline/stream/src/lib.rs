//! # haechi-stream
//!
//! Sources, sinks and run loops around the engine. The same engine and the
//! same store code serve both ways haechi runs:
//!
//! * [`replay`]: a JSONL file in, a verdict file and a dead-letter file out,
//!   offline, in input order. Every production decision can be replayed.
//! * [`kafka`]: the Kafka deployment (`haechi run`).
//!
//! [`load`] reads rule packs, lists, policy and models from disk for both.

pub mod backtest;
pub mod input;
pub mod kafka;
pub mod load;
pub mod moderators;
pub mod process;
pub mod reload;
pub mod replay;
pub mod review_api;
