//! The human-review queue: every `review` or `block` verdict becomes a case.
//!
//! A case is keyed by its event id, so reprocessing an event never opens a
//! second case. Open cases are indexed by priority — blocks first, then by
//! score, then oldest first — under the `q` keyspace, so "the next case" is
//! the first key of a prefix scan.

use crate::overlay::Tx;
use crate::records::SellerRecord;
use crate::{decode, encode, keys, ms, Result};
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
        let ik = keys::key(
            keys::IDENT,
            &format!("{}:{}", ident.kind.as_str(), ident.value),
        );
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
    tx.put(key, encode(&case));
    Ok(())
}
