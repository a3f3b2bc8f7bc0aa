//! The decoder on arbitrary bytes: an error or a listing, never a panic.
#![no_main]

use haechi_engine::{decode_listing, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = decode_listing(data, &Limits::default()) {
        assert!(!e.to_string().is_empty());
        assert!(!e.code().is_empty());
    }
});
