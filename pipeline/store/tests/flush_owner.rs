//! The Kafka loop owns the store's flushes: a moderator's flush (review API,
//! another thread) waits for the loop's instead of making the loop's
//! half-delivered batch durable before its changelog is out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use haechi_store::Store;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn other_threads_wait_for_the_owner_flush_instead_of_flushing_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    store.own_flushes();
    // The owner's batch, judged but not yet delivered.
    store.apply_decision("l-loop", "s-loop", false).unwrap();
    let moderator = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            store.apply_decision("l-mod", "s-mod", true).unwrap();
            store.flush()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !moderator.is_finished(),
        "a moderator's flush returned before the owner flushed"
    );
    assert!(store.flush_wanted(), "the owner is told a flush is wanted");
    assert!(
        store.pending() > 0,
        "a moderator's flush wrote the owner's batch"
    );
    store.flush().unwrap();
    moderator.join().unwrap().unwrap();
    assert!(!store.flush_wanted());

    // Released (the loop stopped): flushes are direct again.
    store.release_flushes();
    let direct = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            store.apply_decision("l-late", "s-late", false).unwrap();
            store.flush()
        })
    };
    direct.join().unwrap().unwrap();
    assert_eq!(store.pending(), 0);

    // Everything is durable: a reopened store has all three.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.seller("s-loop").unwrap().unwrap().cleared, 1);
    assert_eq!(store.seller("s-mod").unwrap().unwrap().confirmed_fraud, 1);
    assert_eq!(store.seller("s-late").unwrap().unwrap().cleared, 1);
}
