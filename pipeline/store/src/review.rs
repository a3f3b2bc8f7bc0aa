//! The human-review queue: every `review` or `block` verdict becomes a case.
//!
//! A case is keyed by its event id, so reprocessing an event never opens a
//! second case. Open cases are indexed by priority — blocks first, then by
//! score, then oldest first — under the `q` keyspace, so "the next case" is
//! the first key of a prefix scan.

use crate::overlay::Tx;
use crate::records::SellerRecord;
use crate::{decode, encode, keys, ms, Result};

// Cases are stored as JSON, not postcard: they embed contract types whose
// serde attributes skip empty fields, which a non-self-describing format
// cannot read back. Cases are written once per flagged listing: the cost is
// irrelevant.
pub(crate) fn encode_case(c: &Case) -> Vec<u8> {
    serde_json::to_vec(c).unwrap_or_default()
}

fn decode_case(key: &[u8], bytes: Option<impl AsRef<[u8]>>) -> Result<Option<Case>> {
    match bytes {
        None => Ok(None),
        Some(v) => {
            serde_json::from_slice(v.as_ref())
                .map(Some)
                .map_err(|e| crate::StoreError::Corrupt {
                    key: String::from_utf8_lossy(key).into_owned(),
                    message: e.to_string(),
                })
        }
    }
}
use haechi_engine::{Action, Analysis, Listing, Reason, Verdict};
use serde::{Deserialize, Serialize};

/// Where a case is in its life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Status {
    Open,
    /// A moderator holds it until `until` (ms); after that it is open again.
    Claimed {
        by: String,
        until: i64,
    },
    Decided,
}

impl Status {
    pub fn name(&self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Claimed { .. } => "claimed",
            Status::Decided => "decided",
        }
    }
}

/// What the seller looked like when the case was opened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SellerSummary {
    pub joined_at: Option<i64>,
    pub first_seen: i64,
    pub listings_total: u32,
    pub listings_7d: u32,
    pub reviewed: u32,
    pub blocked: u32,
    pub confirmed_fraud: u32,
    pub cleared: u32,
}

/// A moderator's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// `approve`, `remove` or `ban-seller`.
    pub action: String,
    pub reason: String,
    pub note: Option<String>,
    pub by: String,
    pub at: i64,
}

/// A review case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub id: String,
    pub listing_id: String,
    pub seller_id: String,
    pub action: Action,
    pub score: f64,
    /// Event time (ms).
    pub created_at: i64,
    pub title: String,
    pub body: String,
    pub price: u64,
    pub category: Option<String>,
    pub region: Option<String>,
    pub event: String,
    pub reasons: Vec<Reason>,
    pub seller: SellerSummary,
    /// `kind:value` identifiers of the listing.
    pub identifiers: Vec<String>,
    /// Other sellers who used the same identifiers.
    pub linked_sellers: Vec<String>,
    pub status: Status,
    pub decision: Option<Decision>,
    pub versions: haechi_engine::Versions,
}

/// The queue key: blocks before reviews, higher scores first, older first.
pub(crate) fn queue_key(action: Action, score: f64, created_at: i64, id: &str) -> Vec<u8> {
    let mut k = vec![keys::QUEUE, u8::from(action != Action::Block)];
    let inverted = u32::MAX - (score.clamp(0.0, 1.0) * f64::from(u32::MAX - 1)) as u32;
    k.extend_from_slice(&inverted.to_be_bytes());
    k.extend_from_slice(&(created_at as u64 ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// Opens the case of a flagged event (inside the event's transaction).
pub(crate) fn open_case(
    tx: &mut Tx<'_>,
    listing: &Listing,
    analysis: &Analysis,
    verdict: &Verdict,
    seller: &SellerRecord,
) -> Result<()> {
    let key = keys::key(keys::CASE, &listing.event_id);
    if tx.get(&key)?.is_some() {
        return Ok(());
    }
    let now = ms(listing.created_at);
    let mut linked: Vec<String> = Vec::new();
    let mut identifiers = Vec::new();
    for ident in &analysis.facts.idents {
        let ik = crate::ident_key(ident.kind, &ident.value);
        identifiers.push(format!("{}:{}", ident.kind.as_str(), ident.value));
        if let Some(rec) = decode::<crate::records::IdentRecord>(&ik, tx.get(&ik)?)? {
            for (s, _) in rec.sellers {
                if s != listing.seller_id && !linked.contains(&s) && linked.len() < 20 {
                    linked.push(s);
                }
            }
        }
    }
    let case = Case {
        id: listing.event_id.clone(),
        listing_id: listing.listing_id.clone(),
        seller_id: listing.seller_id.clone(),
        action: verdict.action,
        score: verdict.score,
        created_at: now,
        title: listing.title.clone(),
        body: listing.body.clone(),
        price: listing.price,
        category: listing.category.clone(),
        region: listing.region.clone(),
        event: listing.event.as_str().to_owned(),
        reasons: verdict.reasons.clone(),
        seller: SellerSummary {
            joined_at: seller.joined_at,
            first_seen: seller.first_seen,
            listings_total: seller.total,
            listings_7d: seller.recent.len() as u32,
            reviewed: seller.reviewed,
            blocked: seller.blocked,
            confirmed_fraud: seller.confirmed_fraud,
            cleared: seller.cleared,
        },
        identifiers,
        linked_sellers: linked,
        status: Status::Open,
        decision: None,
        versions: verdict.versions.clone(),
    };
    tx.put(
        queue_key(case.action, case.score, now, &case.id),
        Vec::new(),
    );
    tx.put(key, encode_case(&case));
    Ok(())
}

/// The reason codes a decision may carry.
pub const REASON_CODES: &[&str] = &[
    "off_platform_contact",
    "prepayment",
    "fake_escrow",
    "too_cheap",
    "counterfeit",
    "prohibited",
    "giftcard_ticket",
    "bait_and_switch",
    "spam",
    "legit",
    "false_positive",
    "other",
];

/// The decisions a moderator can take.
pub const DECISIONS: &[&str] = &["approve", "remove", "ban-seller"];

/// Why a review operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("no case {0}")]
    NotFound(String),
    #[error("case {id} is claimed by {by} until {until}")]
    ClaimedByOther {
        id: String,
        by: String,
        until: String,
    },
    #[error("case {id} was already decided by {by} ({action})")]
    AlreadyDecided {
        id: String,
        by: String,
        action: String,
    },
    #[error("case {id} is not claimed by {moderator}")]
    NotYours { id: String, moderator: String },
    #[error("{0}")]
    Invalid(String),
}

/// One line of the append-only audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    /// Wall-clock time of the action (ms).
    pub at: i64,
    pub moderator: String,
    pub case_id: String,
    /// `claim`, `release` or `decide`.
    pub what: String,
    pub from: String,
    pub to: String,
    pub decision: Option<Decision>,
}

/// Which cases to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaseFilter {
    pub status: Option<String>,
    /// A reason kind or rule id prefix (`prepayment`, `ko.contact`).
    pub kind: Option<String>,
    pub seller: Option<String>,
    pub limit: usize,
}

/// Queue and decision figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReviewStats {
    pub open: u64,
    pub claimed: u64,
    pub decided: u64,
    /// Age (hours, by event time vs now) of the oldest open case.
    pub oldest_open_hours: Option<f64>,
    /// moderator -> decision -> count.
    pub decisions: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
    /// Per reason id: decided cases it flagged, of which confirmed fraud, and the precision.
    pub reasons: Vec<ReasonPrecision>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReasonPrecision {
    pub reason: String,
    pub decided: u64,
    pub confirmed: u64,
    pub precision: f64,
}

impl Case {
    /// Refuses a case that is decided or held by another moderator.
    fn available_to(&self, moderator: &str, now: i64) -> Result<()> {
        if let Some(d) = &self.decision {
            return Err(review_err(ReviewError::AlreadyDecided {
                id: self.id.clone(),
                by: d.by.clone(),
                action: d.action.clone(),
            }));
        }
        match self.held(now) {
            Some((by, until)) if by != moderator => Err(review_err(ReviewError::ClaimedByOther {
                id: self.id.clone(),
                by: by.into(),
                until: fmt_ms(until),
            })),
            _ => Ok(()),
        }
    }

    /// Does it match a `kind` filter (a reason id prefix or a label-like kind)?
    pub fn matches_kind(&self, kind: &str) -> bool {
        self.reasons
            .iter()
            .any(|r| r.id.starts_with(kind) || r.detail.contains(kind))
            || self
                .reasons
                .iter()
                .any(|r| r.id.contains(&format!(".{kind}")))
    }

    /// A lease still held at `now`?
    fn held(&self, now: i64) -> Option<(&str, i64)> {
        match &self.status {
            Status::Claimed { by, until } if *until > now => Some((by, *until)),
            _ => None,
        }
    }
}

fn fmt_ms(ms: i64) -> String {
    crate::time(ms).map_or_else(|| ms.to_string(), |t| t.to_rfc3339())
}

fn next_seq(tx: &mut Tx<'_>) -> Result<u64> {
    let k = keys::key(keys::META, "audit_seq");
    let seq: u64 = decode(&k, tx.get(&k)?)?.unwrap_or(0) + 1;
    tx.put(k, encode(&seq));
    Ok(seq)
}

fn audit(tx: &mut Tx<'_>, entry: AuditEntry) {
    tx.put(
        keys::key_bytes(keys::AUDIT, &entry.seq.to_be_bytes()),
        encode(&entry),
    );
}

fn load(tx: &mut Tx<'_>, id: &str) -> Result<Case> {
    let key = keys::key(keys::CASE, id);
    decode_case(&key, tx.get(&key)?)?
        .ok_or_else(|| crate::StoreError::Review(ReviewError::NotFound(id.to_owned()).to_string()))
}

fn review_err(e: ReviewError) -> crate::StoreError {
    crate::StoreError::Review(e.to_string())
}

impl crate::Store {
    /// One case.
    pub fn case(&self, id: &str) -> Result<Option<Case>> {
        let key = keys::key(keys::CASE, id);
        decode_case(&key, self.overlay.get(&key)?)
    }

    /// Cases matching a filter, highest priority first for open ones.
    pub fn cases(&self, f: &CaseFilter, now: i64) -> Result<Vec<Case>> {
        let mut out = Vec::new();
        for (k, v) in self.overlay.scan_prefix(&[keys::CASE])? {
            let Some(case) = decode_case(&k, Some(v))? else {
                continue;
            };
            let status = match (&case.status, case.held(now)) {
                (Status::Claimed { .. }, None) => "open",
                (s, _) => s.name(),
            };
            if f.status.as_deref().is_some_and(|s| s != status)
                || f.seller.as_deref().is_some_and(|s| s != case.seller_id)
                || f.kind.as_deref().is_some_and(|k| !case.matches_kind(k))
            {
                continue;
            }
            out.push(case);
        }
        out.sort_by(|a, b| {
            queue_key(a.action, a.score, a.created_at, &a.id).cmp(&queue_key(
                b.action,
                b.score,
                b.created_at,
                &b.id,
            ))
        });
        if f.limit > 0 {
            out.truncate(f.limit);
        }
        Ok(out)
    }

    /// Gives the highest-priority case nobody holds to `moderator` for
    /// `lease_ms`. Atomic: two claimers never get the same case.
    pub fn claim_next(&self, moderator: &str, lease_ms: i64, now: i64) -> Result<Option<Case>> {
        let mut tx = self.overlay.begin();
        for (k, _) in tx.scan_prefix(&[keys::QUEUE])? {
            let id = String::from_utf8_lossy(&k[1 + 1 + 4 + 8..]).into_owned();
            let mut case = load(&mut tx, &id)?;
            if case.status == Status::Decided || case.held(now).is_some() {
                continue;
            }
            let from = case.status.name().to_owned();
            case.status = Status::Claimed {
                by: moderator.to_owned(),
                until: now + lease_ms,
            };
            tx.put(keys::key(keys::CASE, &id), encode_case(&case));
            let seq = next_seq(&mut tx)?;
            audit(
                &mut tx,
                AuditEntry {
                    seq,
                    at: now,
                    moderator: moderator.to_owned(),
                    case_id: id,
                    what: "claim".into(),
                    from,
                    to: "claimed".into(),
                    decision: None,
                },
            );
            tx.commit();
            self.flush()?;
            return Ok(Some(case));
        }
        Ok(None)
    }

    /// Gives a specific case to `moderator`.
    pub fn claim(&self, id: &str, moderator: &str, lease_ms: i64, now: i64) -> Result<Case> {
        let mut tx = self.overlay.begin();
        let mut case = load(&mut tx, id)?;
        case.available_to(moderator, now)?;
        let from = case.status.name().to_owned();
        case.status = Status::Claimed {
            by: moderator.to_owned(),
            until: now + lease_ms,
        };
        tx.put(keys::key(keys::CASE, id), encode_case(&case));
        let seq = next_seq(&mut tx)?;
        audit(
            &mut tx,
            AuditEntry {
                seq,
                at: now,
                moderator: moderator.into(),
                case_id: id.into(),
                what: "claim".into(),
                from,
                to: "claimed".into(),
                decision: None,
            },
        );
        tx.commit();
        self.flush()?;
        Ok(case)
    }

    /// Gives a claimed case back to the queue.
    pub fn release(&self, id: &str, moderator: &str, now: i64) -> Result<Case> {
        let mut tx = self.overlay.begin();
        let mut case = load(&mut tx, id)?;
        match case.held(now) {
            Some((by, _)) if by == moderator => {}
            _ => {
                return Err(review_err(ReviewError::NotYours {
                    id: id.into(),
                    moderator: moderator.into(),
                }))
            }
        }
        case.status = Status::Open;
        tx.put(keys::key(keys::CASE, id), encode_case(&case));
        let seq = next_seq(&mut tx)?;
        audit(
            &mut tx,
            AuditEntry {
                seq,
                at: now,
                moderator: moderator.into(),
                case_id: id.into(),
                what: "release".into(),
                from: "claimed".into(),
                to: "open".into(),
                decision: None,
            },
        );
        tx.commit();
        self.flush()?;
        Ok(case)
    }

    /// Decides a case. Durable when it returns: the decision, the audit
    /// entry and the history update (a confirmed fraud marks the seller and
    /// the identifiers it used) are flushed together.
    pub fn decide(
        &self,
        id: &str,
        moderator: &str,
        action: &str,
        reason: &str,
        note: Option<String>,
        now: i64,
    ) -> Result<Case> {
        if !DECISIONS.contains(&action) {
            return Err(review_err(ReviewError::Invalid(format!(
                "decision {action:?} is not one of {}",
                DECISIONS.join(", ")
            ))));
        }
        if !REASON_CODES.contains(&reason) {
            return Err(review_err(ReviewError::Invalid(format!(
                "reason code {reason:?} is not one of {}",
                REASON_CODES.join(", ")
            ))));
        }
        let mut tx = self.overlay.begin();
        let mut case = load(&mut tx, id)?;
        case.available_to(moderator, now)?;
        let from = case.status.name().to_owned();
        let decision = Decision {
            action: action.into(),
            reason: reason.into(),
            note,
            by: moderator.into(),
            at: now,
        };
        case.status = Status::Decided;
        case.decision = Some(decision.clone());
        tx.put(keys::key(keys::CASE, id), encode_case(&case));
        tx.remove(queue_key(
            case.action,
            case.score,
            case.created_at,
            &case.id,
        ));
        let seq = next_seq(&mut tx)?;
        audit(
            &mut tx,
            AuditEntry {
                seq,
                at: now,
                moderator: moderator.into(),
                case_id: id.into(),
                what: "decide".into(),
                from,
                to: "decided".into(),
                decision: Some(decision),
            },
        );
        tx.commit();
        self.apply_decision(&case.listing_id, &case.seller_id, action != "approve")?;
        self.flush()?;
        Ok(case)
    }

    /// The audit log, newest last (the last `limit` entries; 0 = all).
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let all = self.overlay.scan_prefix(&[keys::AUDIT])?;
        let skip = if limit == 0 {
            0
        } else {
            all.len().saturating_sub(limit)
        };
        let mut out = Vec::with_capacity(all.len() - skip);
        for (k, v) in all.into_iter().skip(skip) {
            out.extend(decode::<AuditEntry>(&k, Some(v))?);
        }
        Ok(out)
    }

    /// Queue depth, decisions per moderator, precision of each reason.
    pub fn review_stats(&self, now: i64) -> Result<ReviewStats> {
        let mut s = ReviewStats::default();
        let mut per_reason: std::collections::BTreeMap<String, (u64, u64)> =
            std::collections::BTreeMap::new();
        for case in self.cases(&CaseFilter::default(), now)? {
            match (&case.status, case.held(now)) {
                (Status::Decided, _) => s.decided += 1,
                (Status::Claimed { .. }, Some(_)) => s.claimed += 1,
                _ => {
                    s.open += 1;
                    let age = (now - case.created_at) as f64 / 3_600_000.0;
                    s.oldest_open_hours =
                        Some(s.oldest_open_hours.map_or(age, |o: f64| o.max(age)));
                }
            }
            if let Some(d) = &case.decision {
                *s.decisions
                    .entry(d.by.clone())
                    .or_default()
                    .entry(d.action.clone())
                    .or_default() += 1;
                let fraud = d.action != "approve";
                for r in case.reasons.iter().filter(|r| r.weight > 0.0) {
                    let e = per_reason.entry(r.id.clone()).or_default();
                    e.0 += 1;
                    e.1 += u64::from(fraud);
                }
            }
        }
        s.reasons = per_reason
            .into_iter()
            .map(|(reason, (decided, confirmed))| ReasonPrecision {
                reason,
                decided,
                confirmed,
                precision: confirmed as f64 / decided.max(1) as f64,
            })
            .collect();
        s.reasons
            .sort_by(|a, b| b.decided.cmp(&a.decided).then(a.reason.cmp(&b.reason)));
        Ok(s)
    }

    /// Decided cases as labeled events (the contract's input format) for
    /// `haechi train`: labels come from moderators, never from verdicts.
    pub fn export_labels<W: std::io::Write>(&self, mut w: W) -> Result<usize> {
        let mut n = 0;
        for case in self.cases(
            &CaseFilter {
                status: Some("decided".into()),
                ..CaseFilter::default()
            },
            i64::MAX,
        )? {
            let Some(d) = &case.decision else { continue };
            let fraud = d.action != "approve";
            let kind = if !fraud {
                "legit".to_owned()
            } else if haechi_engine::rules::KINDS.contains(&d.reason.as_str()) {
                d.reason.clone()
            } else {
                "moderator_confirmed".to_owned()
            };
            let line = serde_json::json!({
                "event_id": case.id,
                "listing_id": case.listing_id,
                "seller_id": case.seller_id,
                "event": case.event,
                "title": case.title,
                "body": case.body,
                "price": case.price,
                "category": case.category,
                "region": case.region,
                "created_at": fmt_ms(case.created_at),
                "seller_joined_at": case.seller.joined_at.map(fmt_ms),
                "label": { "fraud": fraud, "kind": kind, "source": "moderator", "reason": d.reason, "moderator": d.by },
            });
            serde_json::to_writer(&mut w, &line)
                .map_err(|e| crate::StoreError::Review(e.to_string()))?;
            w.write_all(b"\n")
                .map_err(|e| crate::StoreError::Review(e.to_string()))?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A moderator can name every fraud kind a rule can (else a decision on
    /// a new kind is exported for training as "moderator_confirmed"), and
    /// every reason code that is not a kind is one of the few known others.
    #[test]
    fn reason_codes_keep_in_step_with_the_rules_fraud_kinds() {
        let kinds = haechi_engine::rules::KINDS;
        for kind in kinds.iter().filter(|k| **k != "legit_signal") {
            assert!(
                REASON_CODES.contains(kind),
                "fraud kind {kind} is not a review reason code"
            );
        }
        for code in REASON_CODES.iter().filter(|c| !kinds.contains(c)) {
            assert!(
                ["spam", "legit", "false_positive", "other"].contains(code),
                "reason code {code} is neither a fraud kind nor a known other"
            );
        }
    }
}
