//! The verdict dictionary (store format 5): the strings every stored verdict
//! repeats, kept once.
//!
//! A listing's record keeps the verdict of each of its events, so that a
//! redelivered event gets the very same bytes. Two thirds of a stored
//! verdict were strings from a small vocabulary: reason ids, the rule and
//! policy explanations, the rules and model versions (338 bytes per listing
//! record on the 400k day set, 286 of them its verdicts). Those are stored
//! under `d` + the 8 bytes of their stable hash ([`fxhash64`]) and a verdict
//! refers to them by that id ([`Text::Ref`]); strings drawn from the listing
//! or the seller's history (a price, a domain, the features that pushed the
//! model) stay in the record ([`Text::Inline`]), so the dictionary only grows
//! with new rules and model versions.
//!
//! Invariants:
//! * an entry is written in the same transaction as the first record that
//!   refers to it (the same log, the same flush), and never removed or
//!   changed: ids are content hashes, so writing it twice is harmless;
//! * a string whose hash is already taken by another string is kept inline
//!   (the id of an entry always names that entry's string);
//! * with change capture on, every transaction writes again the entries its
//!   verdict refers to, so a changelog partition carries every entry its
//!   listings need, whichever partition wrote it first;
//! * lock order: the overlay's, then the dictionary's ([`Dict::store`] runs
//!   inside a transaction; [`Dict::verdict`] reads the store without the
//!   dictionary's lock).

use crate::records::{StoredReason, StoredVerdict, Text};
use crate::{keys, Result, StoreError};
use haechi_engine::history::fxhash64;
use haechi_engine::{Reason, ReasonSource, Verdict, Versions};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The dictionary entries a process has met (read or written): a few
/// hundred strings per rules version.
#[derive(Debug, Default)]
pub(crate) struct Dict {
    known: Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    by_text: HashMap<Arc<str>, [u8; 8], foldhash::fast::RandomState>,
    by_id: HashMap<[u8; 8], Arc<str>, foldhash::fast::RandomState>,
}

impl Known {
    fn learn(&mut self, id: [u8; 8], s: Arc<str>) {
        self.by_text.insert(s.clone(), id);
        self.by_id.insert(id, s);
    }
}

/// What storing a verdict needs written besides the record: entries to put
/// (new ones, or all referenced ones under change capture), and the new
/// ones to remember once the transaction is committed
/// ([`Dict::committed`]).
#[derive(Default)]
pub(crate) struct Entries {
    pub writes: Vec<(Vec<u8>, Vec<u8>)>,
    new: Vec<([u8; 8], Arc<str>)>,
}

/// The store key of a dictionary entry.
pub(crate) fn key(id: [u8; 8]) -> Vec<u8> {
    keys::key_bytes(keys::DICT, &id)
}

/// Whether a reason's explanation comes from a bounded vocabulary rather
/// than from the listing or the history: the rule packs' and the policy's,
/// and the model's probability alone ("fraud probability 0.004": at most
/// 1,001 per model; with the features that pushed it, for flagged listings,
/// it is longer and stays inline).
fn shared_detail(r: &Reason) -> bool {
    match r.source {
        ReasonSource::Rule | ReasonSource::Policy => true,
        ReasonSource::Model => r.detail.len() <= 32,
        ReasonSource::List | ReasonSource::History => false,
    }
}

impl Dict {
    /// `v` as a listing record keeps it. `get` reads the store (through the
    /// transaction that will carry `entries`); `capture`: write every
    /// referenced entry again (see the module documentation).
    pub fn store(
        &self,
        v: &Verdict,
        capture: bool,
        mut get: impl FnMut(&[u8]) -> Result<Option<sled::IVec>>,
        entries: &mut Entries,
    ) -> Result<StoredVerdict> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut intern = |s: &str| intern(&mut known, s, capture, &mut get, entries);
        let mut reasons = Vec::with_capacity(v.reasons.len());
        for r in &v.reasons {
            reasons.push(StoredReason {
                source: r.source,
                id: intern(&r.id)?,
                detail: if shared_detail(r) {
                    intern(&r.detail)?
                } else {
                    Text::Inline(r.detail.clone())
                },
                weight: r.weight,
                spans: r.spans.clone(),
            });
        }
        Ok(StoredVerdict {
            seller_id: v.seller_id.clone(),
            action: v.action,
            score: v.score,
            reasons,
            rules: intern(&v.versions.rules)?,
            model: intern(&v.versions.model)?,
        })
    }

    /// The new entries of a committed transaction are known from now on
    /// (before, a failed transaction would have left ids without entries).
    pub fn committed(&self, entries: Entries) {
        if entries.new.is_empty() {
            return;
        }
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        for (id, s) in entries.new {
            known.learn(id, s);
        }
    }

    /// The verdict of event `event_id` of listing `listing_id`, as first
    /// emitted. A reference without its entry is a corrupt store.
    pub fn verdict(
        &self,
        sv: &StoredVerdict,
        event_id: &str,
        listing_id: &str,
        mut get: impl FnMut(&[u8]) -> Result<Option<sled::IVec>>,
    ) -> Result<Verdict> {
        let mut text = |t: &Text| self.resolve(t, &mut get);
        let mut reasons = Vec::with_capacity(sv.reasons.len());
        for r in &sv.reasons {
            reasons.push(Reason {
                source: r.source,
                id: text(&r.id)?,
                detail: text(&r.detail)?,
                weight: r.weight,
                spans: r.spans.clone(),
            });
        }
        Ok(Verdict {
            event_id: event_id.to_owned(),
            listing_id: listing_id.to_owned(),
            seller_id: sv.seller_id.clone(),
            action: sv.action,
            score: sv.score,
            reasons,
            versions: Versions {
                rules: text(&sv.rules)?,
                model: text(&sv.model)?,
            },
        })
    }

    /// The string `t` stands for. `get` is called without the dictionary's
    /// lock held: it may take the overlay's, which [`Dict::store`] holds
    /// (through its transaction) while it takes the dictionary's.
    fn resolve(
        &self,
        t: &Text,
        get: &mut impl FnMut(&[u8]) -> Result<Option<sled::IVec>>,
    ) -> Result<String> {
        let id = match t {
            Text::Inline(s) => return Ok(s.clone()),
            Text::Ref(id) => *id,
        };
        let lock = || self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = lock().by_id.get(&id) {
            return Ok(s.to_string());
        }
        let corrupt = |message: String| StoreError::Corrupt {
            key: format!("verdict dictionary entry {:016x}", u64::from_le_bytes(id)),
            message,
        };
        let bytes =
            get(&key(id))?.ok_or_else(|| corrupt("missing: a verdict refers to it".into()))?;
        let s = std::str::from_utf8(&bytes).map_err(|e| corrupt(e.to_string()))?;
        lock().learn(id, s.into());
        Ok(s.to_owned())
    }
}

/// `s` as a stored verdict keeps it (see the module documentation).
fn intern(
    known: &mut Known,
    s: &str,
    capture: bool,
    get: &mut impl FnMut(&[u8]) -> Result<Option<sled::IVec>>,
    entries: &mut Entries,
) -> Result<Text> {
    let inline = || Ok(Text::Inline(s.to_owned()));
    if s.len() <= 8 {
        // No longer than its reference.
        return inline();
    }
    let mut write = |id| entries.writes.push((key(id), s.as_bytes().to_vec()));
    if let Some(&id) = known.by_text.get(s) {
        if capture {
            write(id);
        }
        return Ok(Text::Ref(id));
    }
    let id = fxhash64(s.as_bytes()).to_le_bytes();
    if known.by_id.contains_key(&id) {
        // Its hash names another string.
        return inline();
    }
    match get(&key(id))? {
        None => {
            write(id);
            entries.new.push((id, s.into()));
            Ok(Text::Ref(id))
        }
        Some(stored) if *stored == *s.as_bytes() => {
            known.learn(id, s.into());
            if capture {
                write(id);
            }
            Ok(Text::Ref(id))
        }
        Some(stored) => {
            if let Ok(other) = std::str::from_utf8(&stored) {
                known.learn(id, other.into());
            }
            inline()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haechi_engine::{Action, Span};
    use std::collections::BTreeMap;

    fn reason(source: ReasonSource, id: &str, detail: &str) -> Reason {
        Reason {
            source,
            id: id.into(),
            detail: detail.into(),
            weight: 1.5,
            spans: vec![],
        }
    }

    fn verdict() -> Verdict {
        let mut rule = reason(
            ReasonSource::Rule,
            "ko.prepay.demand",
            "Asks for money first",
        );
        rule.spans.push(Span {
            field: haechi_engine::TextField::Body,
            start: 3,
            end: 7,
            text: "선입금".into(),
        });
        Verdict {
            event_id: "e1".into(),
            listing_id: "l1".into(),
            seller_id: "s1".into(),
            action: Action::Review,
            score: 0.8123,
            reasons: vec![
                rule,
                reason(
                    ReasonSource::History,
                    "history.burst",
                    "5 listings within the hour",
                ),
                reason(
                    ReasonSource::Model,
                    "model.default",
                    "fraud probability 0.912",
                ),
                reason(
                    ReasonSource::Policy,
                    "policy.deleted",
                    "nothing left to moderate",
                ),
            ],
            versions: Versions {
                rules: "r-9aebd41468ee".into(),
                model: "m-default-b11cb518".into(),
            },
        }
    }

    /// The store: a map the writes go into.
    type Kv = BTreeMap<Vec<u8>, Vec<u8>>;

    fn store(d: &Dict, kv: &mut Kv, v: &Verdict, capture: bool) -> (StoredVerdict, usize) {
        let mut entries = Entries::default();
        let sv = d
            .store(
                v,
                capture,
                |k| Ok(kv.get(k).map(|v| v[..].into())),
                &mut entries,
            )
            .unwrap();
        let n = entries.writes.len();
        kv.extend(std::mem::take(&mut entries.writes));
        d.committed(entries);
        (sv, n)
    }

    fn back(d: &Dict, kv: &Kv, sv: &StoredVerdict) -> Result<Verdict> {
        d.verdict(sv, "e1", "l1", |k| Ok(kv.get(k).map(|v| v[..].into())))
    }

    #[test]
    fn shared_strings_are_stored_once_and_the_verdict_comes_back_the_same() {
        let (d, mut kv) = (Dict::default(), Kv::new());
        let v = verdict();
        let (sv, n) = store(&d, &mut kv, &v, false);
        // 4 ids, the rule's, the policy's and the model's explanations, 2
        // versions; the history's explanation stays in the record.
        assert_eq!((n, kv.len()), (9, 9));
        assert!(matches!(sv.reasons[0].detail, Text::Ref(_)));
        assert!(matches!(sv.reasons[3].detail, Text::Ref(_)));
        assert_eq!(
            sv.reasons[1].detail,
            Text::Inline("5 listings within the hour".into())
        );
        assert!(matches!(sv.reasons[2].detail, Text::Ref(_)));
        assert!(matches!(sv.rules, Text::Ref(_)) && matches!(sv.model, Text::Ref(_)));
        // Known now: the next verdict writes nothing, unless captured.
        assert_eq!(store(&d, &mut kv, &v, false).1, 0);
        assert_eq!(store(&d, &mut kv, &v, true).1, 9);
        // Another process reads the entries from the store.
        let fresh = Dict::default();
        let again = back(&fresh, &kv, &sv).unwrap();
        assert_eq!(
            serde_json::to_string(&again).unwrap(),
            serde_json::to_string(&v).unwrap()
        );
        // Smaller than with every string inline (as format 4 kept them),
        // and short strings stay inline.
        let inline = |t: &Text| {
            Text::Inline(
                back(
                    &fresh,
                    &kv,
                    &StoredVerdict {
                        rules: t.clone(),
                        ..sv.clone()
                    },
                )
                .unwrap()
                .versions
                .rules,
            )
        };
        let all_inline = StoredVerdict {
            reasons: sv
                .reasons
                .iter()
                .map(|r| StoredReason {
                    id: inline(&r.id),
                    detail: inline(&r.detail),
                    ..r.clone()
                })
                .collect(),
            rules: inline(&sv.rules),
            model: inline(&sv.model),
            ..sv.clone()
        };
        let (refs, inline) = (crate::encode(&sv).len(), crate::encode(&all_inline).len());
        assert!(refs + 40 < inline, "{refs} vs {inline} bytes");
        let short = Verdict {
            versions: Versions {
                rules: "r-1".into(),
                model: "m-1".into(),
            },
            ..v.clone()
        };
        let (sv, _) = store(&d, &mut kv, &short, false);
        let explained = "fraud probability 0.912; top features: prepay +1.20, fresh +0.80";
        assert_eq!(
            sv.reasons[2].detail,
            Text::Ref(fxhash64(b"fraud probability 0.912").to_le_bytes())
        );
        let mut long = v.clone();
        long.reasons[2].detail = explained.into();
        let (lv, _) = store(&d, &mut kv, &long, false);
        assert_eq!(lv.reasons[2].detail, Text::Inline(explained.into()));
        assert_eq!(
            (sv.rules, sv.model),
            (Text::Inline("r-1".into()), Text::Inline("m-1".into()))
        );
    }

    #[test]
    fn a_string_whose_hash_names_another_one_stays_inline() {
        let (d, mut kv) = (Dict::default(), Kv::new());
        let v = verdict();
        let id = fxhash64(b"r-9aebd41468ee").to_le_bytes();
        kv.insert(key(id), b"something else".to_vec());
        let (sv, _) = store(&d, &mut kv, &v, false);
        assert_eq!(sv.rules, Text::Inline("r-9aebd41468ee".into()));
        assert_eq!(kv[&key(id)], b"something else");
        assert_eq!(back(&d, &kv, &sv).unwrap(), v);
        // Known as taken: the next one stays inline without reading.
        let (sv, _) = store(&d, &mut kv, &v, false);
        assert_eq!(sv.rules, Text::Inline("r-9aebd41468ee".into()));
    }

    #[test]
    fn entries_of_an_uncommitted_transaction_are_written_again() {
        let (d, kv) = (Dict::default(), Kv::new());
        // The second time as the first: the first transaction's entries
        // were dropped (it failed), nothing was learned.
        for _ in 0..2 {
            let mut entries = Entries::default();
            d.store(
                &verdict(),
                false,
                |k| Ok(kv.get(k).map(|v| v[..].into())),
                &mut entries,
            )
            .unwrap();
            assert_eq!(entries.writes.len(), 9);
        }
    }

    #[test]
    fn a_reference_without_its_entry_is_a_corrupt_store() {
        let (d, mut kv) = (Dict::default(), Kv::new());
        let (sv, _) = store(&d, &mut kv, &verdict(), false);
        kv.remove(&key(fxhash64(b"m-default-b11cb518").to_le_bytes()));
        let err = back(&Dict::default(), &kv, &sv).unwrap_err().to_string();
        assert!(
            err.contains("verdict dictionary entry") && err.contains("missing"),
            "{err}"
        );
    }
}
