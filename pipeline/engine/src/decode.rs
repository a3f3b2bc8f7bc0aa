//! Decoding and validating one input event.
//!
//! The contract is strict and every refusal explains itself: each way an
//! event can be invalid has its own [`InvalidEvent`] variant with a stable
//! [`InvalidEvent::code`] for machines and a sentence for people (its
//! `Display`). Nothing here panics, whatever the bytes.
//!
//! Size limits are part of the contract and documented in the README:
//! the whole event at most [`Limits::max_event_bytes`] (checked before any
//! parsing, so a 10 MB line costs nothing but a length check), title and body
//! at most [`Limits::max_title_chars`] / [`Limits::max_body_chars`] characters,
//! identifiers at most [`Limits::max_id_bytes`].

use crate::contract::{EventKind, Label, Listing};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::borrow::Cow;

/// Size limits applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_event_bytes: usize,
    pub max_title_chars: usize,
    pub max_body_chars: usize,
    pub max_id_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 256 * 1024,
            max_title_chars: 300,
            max_body_chars: 20_000,
            max_id_bytes: 128,
        }
    }
}

/// Why an input is not a valid listing event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidEvent {
    #[error("empty line: no JSON object")]
    Empty,
    #[error("event is {len} bytes, over the {limit}-byte limit")]
    TooLarge { len: usize, limit: usize },
    #[error("invalid UTF-8 at byte {valid_up_to}")]
    InvalidUtf8 { valid_up_to: usize },
    #[error("invalid JSON: {message}")]
    InvalidJson { message: String },
    #[error("not a JSON object: the event is {found}")]
    NotAnObject { found: &'static str },
    #[error("missing required field `{field}`")]
    MissingField { field: &'static str },
    #[error("field `{field}` has the wrong type: {message}")]
    WrongType { field: String, message: String },
    #[error("field `{field}` must not be empty")]
    EmptyField { field: &'static str },
    #[error("field `price` is negative ({price}); prices are KRW >= 0 (0 is a free giveaway)")]
    NegativePrice { price: i64 },
    #[error("field `{field}` is {len} {unit}, over the limit of {limit}")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        limit: usize,
        unit: &'static str,
    },
    #[error("field `event` is {value:?}; expected one of \"created\", \"updated\", \"deleted\"")]
    UnknownEvent { value: String },
    #[error("field `{field}` is not an RFC 3339 timestamp: {value:?} ({message})")]
    BadTimestamp {
        field: &'static str,
        value: String,
        message: String,
    },
}

impl InvalidEvent {
    /// A stable, machine-readable name for the kind of problem.
    pub fn code(&self) -> &'static str {
        match self {
            InvalidEvent::Empty => "empty",
            InvalidEvent::TooLarge { .. } => "too_large",
            InvalidEvent::InvalidUtf8 { .. } => "invalid_utf8",
            InvalidEvent::InvalidJson { .. } => "invalid_json",
            InvalidEvent::NotAnObject { .. } => "not_an_object",
            InvalidEvent::MissingField { .. } => "missing_field",
            InvalidEvent::WrongType { .. } => "wrong_type",
            InvalidEvent::EmptyField { .. } => "empty_field",
            InvalidEvent::NegativePrice { .. } => "negative_price",
            InvalidEvent::FieldTooLong { .. } => "field_too_long",
            InvalidEvent::UnknownEvent { .. } => "unknown_event",
            InvalidEvent::BadTimestamp { .. } => "bad_timestamp",
        }
    }
}

/// The event as it arrives: every field optional so that a missing one gets
/// our own message, unknown fields ignored. Fields read and dropped here
/// borrow from the input when they can (no escapes).
#[derive(Deserialize)]
struct Wire<'a> {
    event_id: Option<String>,
    listing_id: Option<String>,
    seller_id: Option<String>,
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    title: Option<String>,
    body: Option<String>,
    price: Option<i64>,
    category: Option<String>,
    region: Option<String>,
    #[serde(borrow)]
    created_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    seller_joined_at: Option<Cow<'a, str>>,
    image_count: Option<u32>,
    label: Option<Label>,
}

/// Decodes and validates one event from raw bytes (a Kafka payload or a file
/// line without its newline).
pub fn decode_listing(bytes: &[u8], limits: &Limits) -> Result<Listing, InvalidEvent> {
    if bytes.len() > limits.max_event_bytes {
        return Err(InvalidEvent::TooLarge {
            len: bytes.len(),
            limit: limits.max_event_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| InvalidEvent::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(InvalidEvent::Empty);
    }
    if !trimmed.starts_with('{') {
        // Give a precise answer for valid JSON that is not an object.
        return Err(match serde_json::from_str::<serde_json::Value>(trimmed) {
            Ok(v) => InvalidEvent::NotAnObject {
                found: json_type_name(&v),
            },
            Err(e) => InvalidEvent::InvalidJson {
                message: e.to_string(),
            },
        });
    }
    // Valid events decode without tracking where the parser is (a quarter
    // of the decoding time); an invalid one is parsed again to name the field.
    match serde_json::from_str::<Wire>(trimmed) {
        Ok(wire) => validate(wire, limits),
        Err(plain) => Err(explain(trimmed, plain)),
    }
}

/// Why `text` (which failed to decode with `plain`) is not a [`Wire`]: the
/// same parse again, tracking the path to the field at fault.
fn explain(text: &str, plain: serde_json::Error) -> InvalidEvent {
    let mut de = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, Wire>(&mut de) {
        Err(e) => classify(e),
        Ok(_) => InvalidEvent::InvalidJson {
            message: de.end().err().unwrap_or(plain).to_string(),
        },
    }
}

fn classify(e: serde_path_to_error::Error<serde_json::Error>) -> InvalidEvent {
    let path = e.path().to_string();
    let inner = e.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data if path != "." => InvalidEvent::WrongType {
            field: path,
            message: strip_position(&inner.to_string()),
        },
        _ => InvalidEvent::InvalidJson {
            message: inner.to_string(),
        },
    }
}

/// serde_json appends " at line L column C" to data errors; for a field type
/// error the field name says more than the position does.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn json_type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn required<T>(v: Option<T>, field: &'static str) -> Result<T, InvalidEvent> {
    v.ok_or(InvalidEvent::MissingField { field })
}

fn id(v: Option<String>, field: &'static str, limits: &Limits) -> Result<String, InvalidEvent> {
    let v = required(v, field)?;
    if v.trim().is_empty() {
        return Err(InvalidEvent::EmptyField { field });
    }
    if v.len() > limits.max_id_bytes {
        return Err(InvalidEvent::FieldTooLong {
            field,
            len: v.len(),
            limit: limits.max_id_bytes,
            unit: "bytes",
        });
    }
    Ok(v)
}

fn text(v: Option<String>, field: &'static str, limit: usize) -> Result<String, InvalidEvent> {
    let v = required(v, field)?;
    // Byte length bounds char count from above: skip the count when it cannot exceed.
    if v.len() > limit {
        let len = v.chars().count();
        if len > limit {
            return Err(InvalidEvent::FieldTooLong {
                field,
                len,
                limit,
                unit: "characters",
            });
        }
    }
    Ok(v)
}

fn timestamp(v: &str, field: &'static str) -> Result<DateTime<Utc>, InvalidEvent> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| InvalidEvent::BadTimestamp {
            field,
            value: v.chars().take(64).collect(),
            message: e.to_string(),
        })
}

fn validate(w: Wire, limits: &Limits) -> Result<Listing, InvalidEvent> {
    let event_id = id(w.event_id, "event_id", limits)?;
    let listing_id = id(w.listing_id, "listing_id", limits)?;
    let seller_id = id(w.seller_id, "seller_id", limits)?;
    let event = match w.event {
        None => EventKind::Created,
        Some(s) => EventKind::parse(&s).ok_or_else(|| InvalidEvent::UnknownEvent {
            value: s.into_owned(),
        })?,
    };
    let title = text(w.title, "title", limits.max_title_chars)?;
    let body = text(w.body, "body", limits.max_body_chars)?;
    let price = required(w.price, "price")?;
    let price = u64::try_from(price).map_err(|_| InvalidEvent::NegativePrice { price })?;
    let created_at = timestamp(&required(w.created_at, "created_at")?, "created_at")?;
    let seller_joined_at = match w.seller_joined_at {
        Some(s) => Some(timestamp(&s, "seller_joined_at")?),
        None => None,
    };
    Ok(Listing {
        event_id,
        listing_id,
        seller_id,
        event,
        title,
        body,
        price,
        category: w.category,
        region: w.region,
        created_at,
        seller_joined_at,
        image_count: w.image_count,
        label: w.label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"event_id":"e1","listing_id":"l1","seller_id":"s1","title":"아이폰 13 팝니다","body":"깨끗해요","price":450000,"created_at":"2026-11-01T10:00:00+09:00"}"#;

    fn check(input: &str, code: &str) {
        let err = decode_listing(input.as_bytes(), &Limits::default())
            .expect_err(&format!("{input} should be invalid"));
        assert_eq!(err.code(), code, "{input}: {err}");
        assert!(!err.to_string().is_empty());
    }

    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    fn without(field: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        v.as_object_mut().unwrap().remove(field);
        v.to_string()
    }

    /// The decoder before the fast path: one parse, the path always
    /// tracked. The reference the fast path must answer like.
    fn decode_tracked(text: &str, limits: &Limits) -> Result<Listing, InvalidEvent> {
        let mut de = serde_json::Deserializer::from_str(text);
        let wire: Wire = serde_path_to_error::deserialize(&mut de).map_err(classify)?;
        de.end().map_err(|e| InvalidEvent::InvalidJson {
            message: e.to_string(),
        })?;
        validate(wire, limits)
    }

    #[test]
    fn the_fast_path_answers_like_the_tracked_parse() {
        let values = [
            "null",
            "1",
            "-1",
            "1.5",
            "1e3",
            "99999999999999999999",
            "\"\"",
            "\"x\"",
            "\"created\"",
            "\"2026-11-01T10:00:00Z\"",
            "\"2026-13-01T10:00:00Z\"",
            "[]",
            "{}",
            "true",
            r#"{"fraud":true}"#,
            r#"{"fraud":"yes"}"#,
        ];
        let fields = [
            "event_id",
            "listing_id",
            "seller_id",
            "event",
            "title",
            "body",
            "price",
            "category",
            "region",
            "created_at",
            "seller_joined_at",
            "image_count",
            "label",
            "other",
        ];
        let mut inputs: Vec<String> = vec![GOOD.to_owned()];
        for f in fields {
            inputs.push(without(f));
            for v in values {
                inputs.push(with(f, v));
            }
        }
        // Every prefix of a valid event (cut mid-token, mid-string, mid-char
        // boundary excluded: the input is a str), and trailing bytes.
        for (i, _) in GOOD.char_indices() {
            inputs.push(GOOD[..i].to_owned());
        }
        for tail in [" ", "\n", " x", "{}", ",", "]"] {
            inputs.push(format!("{GOOD}{tail}"));
        }
        let limits = Limits::default();
        for text in &inputs {
            let trimmed = text.trim();
            if trimmed.is_empty() || !trimmed.starts_with('{') {
                continue; // answered before either parse
            }
            assert_eq!(
                decode_listing(text.as_bytes(), &limits),
                decode_tracked(trimmed, &limits),
                "{text}"
            );
        }
        assert!(inputs.len() > 300, "{}", inputs.len());
    }

    #[test]
    fn good_event_decodes_with_defaults() {
        let l = decode_listing(GOOD.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(l.event, EventKind::Created);
        assert_eq!(l.price, 450_000);
        assert_eq!(l.created_at.to_rfc3339(), "2026-11-01T01:00:00+00:00");
        assert_eq!(l.label, None);
    }

    #[test]
    fn unknown_fields_are_ignored_and_free_is_valid() {
        let l = decode_listing(
            with("shipping", r#"{"x":1}"#).as_bytes(),
            &Limits::default(),
        );
        assert!(l.is_ok());
        let l = decode_listing(with("price", "0").as_bytes(), &Limits::default()).unwrap();
        assert_eq!(l.price, 0);
    }

    #[test]
    fn every_bad_input_has_its_own_reason() {
        check("", "empty");
        check("   \t ", "empty");
        check("{\"event_id\": ", "invalid_json");
        check("{\"a\":1} trailing", "invalid_json");
        check("nope", "invalid_json");
        check("[1,2]", "not_an_object");
        check("42", "not_an_object");
        for f in [
            "event_id",
            "listing_id",
            "seller_id",
            "title",
            "body",
            "price",
            "created_at",
        ] {
            check(&without(f), "missing_field");
            check(&with(f, "null"), "missing_field");
        }
        check(&with("price", r#""450000""#), "wrong_type");
        check(&with("price", "12.5"), "wrong_type");
        check(&with("price", "99999999999999999999"), "wrong_type");
        check(&with("title", "42"), "wrong_type");
        check(&with("image_count", "-1"), "wrong_type");
        check(&with("label", r#"{"fraud":"yes"}"#), "wrong_type");
        check(&with("event_id", r#""  ""#), "empty_field");
        check(&with("price", "-1"), "negative_price");
        check(&with("event", r#""edited""#), "unknown_event");
        check(&with("created_at", r#""yesterday""#), "bad_timestamp");
        check(
            &with("seller_joined_at", r#""2026-13-01""#),
            "bad_timestamp",
        );
        let long_title = format!("\"{}\"", "가".repeat(301));
        check(&with("title", &long_title), "field_too_long");
        let long_body = format!("\"{}\"", "a".repeat(20_001));
        check(&with("body", &long_body), "field_too_long");
    }

    #[test]
    fn invalid_utf8_is_named_with_its_position() {
        let mut bytes = GOOD.as_bytes().to_vec();
        bytes[30] = 0xff;
        let err = decode_listing(&bytes, &Limits::default()).unwrap_err();
        assert_eq!(err, InvalidEvent::InvalidUtf8 { valid_up_to: 30 });
    }

    #[test]
    fn a_ten_megabyte_line_is_refused_before_parsing() {
        let big = format!("{{\"title\":\"{}\"}}", "x".repeat(10 << 20));
        let err = decode_listing(big.as_bytes(), &Limits::default()).unwrap_err();
        assert_eq!(err.code(), "too_large");
        assert!(err.to_string().contains("10485772 bytes"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err =
            decode_listing(with("price", r#""cheap""#).as_bytes(), &Limits::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `price` has the wrong type: invalid type: string \"cheap\", expected i64"
        );
    }
}
