//! The external contract (`shared/CONTRACT.md`) as Rust types.
//!
//! [`Listing`] is a *validated* input event: it can only be built by
//! [`crate::decode::decode_listing`], which enforces every rule of the contract
//! (required fields, types, non-negative price, size limits, known `event`
//! values, RFC 3339 timestamps). [`Verdict`] is the one output per valid event,
//! and [`DeadLetter`] is what happens to everything else.
//!
//! Serialization of these types *is* the wire format: field names and enum
//! spellings here must match the contract exactly.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What happened to the listing on the marketplace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A new listing (the default when the field is absent).
    #[default]
    Created,
    /// An edit: the new title and body are judged again.
    Updated,
    /// The listing was removed by its seller. It still gets a verdict (`allow`)
    /// and is recorded in the seller's history.
    Deleted,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [EventKind::Created, EventKind::Updated, EventKind::Deleted];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            EventKind::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The ground truth a fixture carries. Never read by a decision: only by
/// evaluation and training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub fraud: bool,
    /// The fraud kind (`off_platform_contact`, `prepayment`, ...) or, for
    /// legitimate events, `legit` or a legit sub-kind.
    #[serde(default)]
    pub kind: String,
    /// Anything else the fixture records (obfuscation family, hard case ...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A validated listing event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    pub event_id: String,
    pub listing_id: String,
    pub seller_id: String,
    pub event: EventKind,
    pub title: String,
    pub body: String,
    /// KRW; `0` is a free giveaway (나눔).
    pub price: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seller_joined_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Label>,
}

/// The action a verdict asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Publish as is.
    Allow,
    /// Publish, and put in front of a human moderator.
    Review,
    /// Hide at once, and put in front of a human moderator.
    Block,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Allow, Action::Review, Action::Block];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Review => "review",
            Action::Block => "block",
        }
    }

    /// `review` and `block` both send the listing to the review queue.
    pub fn is_flag(self) -> bool {
        self != Action::Allow
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which stage produced a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasonSource {
    /// A keyword, regex or composite rule from a rule pack.
    Rule,
    /// An identifier found on a known-bad list (rules/lists/).
    List,
    /// The trained classifier.
    Model,
    /// The seller's history and cross-account signals.
    History,
    /// The policy itself (e.g. a cap or an override).
    Policy,
}

impl ReasonSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonSource::Rule => "rule",
            ReasonSource::List => "list",
            ReasonSource::Model => "model",
            ReasonSource::History => "history",
            ReasonSource::Policy => "policy",
        }
    }
}

/// Which text of the listing a span points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextField {
    Title,
    Body,
}

impl TextField {
    pub fn as_str(self) -> &'static str {
        match self {
            TextField::Title => "title",
            TextField::Body => "body",
        }
    }
}

/// A matched region of the ORIGINAL title or body, in character (Unicode
/// scalar value) offsets, end exclusive: `title.chars().skip(start).take(end - start)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Span {
    pub field: TextField,
    pub start: u32,
    pub end: u32,
    /// The original text of the span, for people and logs.
    pub text: String,
}

/// Why a verdict is what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub source: ReasonSource,
    pub id: String,
    pub detail: String,
    /// The contribution to the combined log-odds (see `rules/policy.toml`).
    pub weight: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<Span>,
}

/// The versions of the rules and model that produced a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Versions {
    pub rules: String,
    pub model: String,
}

/// The output for one valid event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub event_id: String,
    pub listing_id: String,
    pub seller_id: String,
    pub action: Action,
    /// The combined risk, 0..1.
    pub score: f64,
    pub reasons: Vec<Reason>,
    pub versions: Versions,
}

/// Where an input came from, so a dead letter can be traced back to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourcePos {
    /// A line of a replay file (1-based).
    File { file: String, line: u64 },
    /// A Kafka message.
    Kafka {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

impl std::fmt::Display for SourcePos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourcePos::File { file, line } => write!(f, "{file}:{line}"),
            SourcePos::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}[{partition}]@{offset}"),
        }
    }
}

/// An input that is not a valid listing: kept whole, with where it came from
/// and why it was refused. `raw` holds the original bytes when they are UTF-8;
/// otherwise `raw_base64` does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub source: SourcePos,
    /// A stable machine-readable code (`invalid_json`, `missing_field`, ...).
    pub code: String,
    /// A sentence for people.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_base64: Option<String>,
    pub raw_len: usize,
}

impl DeadLetter {
    /// Wraps refused bytes, keeping them exactly.
    pub fn new(source: SourcePos, error: &crate::decode::InvalidEvent, raw: &[u8]) -> Self {
        use base64::Engine as _;
        let (raw_text, raw_base64) = match std::str::from_utf8(raw) {
            Ok(s) => (Some(s.to_owned()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(raw)),
            ),
        };
        DeadLetter {
            source,
            code: error.code().to_owned(),
            reason: error.to_string(),
            raw: raw_text,
            raw_base64,
            raw_len: raw.len(),
        }
    }

    /// The original bytes, exactly as received.
    pub fn raw_bytes(&self) -> Option<Vec<u8>> {
        use base64::Engine as _;
        match (&self.raw, &self.raw_base64) {
            (Some(s), _) => Some(s.as_bytes().to_vec()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD.decode(b).ok(),
            (None, None) => None,
        }
    }
}
