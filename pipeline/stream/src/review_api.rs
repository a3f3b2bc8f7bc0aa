//! The review queue over HTTP: a small JSON API served by `haechi serve`
//! and inside `haechi run`, so many moderators (and their CLIs and TUIs)
//! work one queue while the pipeline keeps writing to it. sled allows one
//! process per database; this process is it.
//!
//! Every request carries `Authorization: Bearer TOKEN`; the token names the
//! moderator (see [`crate::moderators`]). Errors are `{"error": "..."}` with
//! 400 (bad request), 401 (unknown token), 404 (no such case) or 409
//! (claimed by someone else, already decided).

use crate::moderators::Moderators;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use haechi_store::review::{CaseFilter, REASON_CODES};
use haechi_store::{Store, StoreError};
use serde::Deserialize;
use std::sync::Arc;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ReviewState {
    pub store: Arc<Store>,
    pub moderators: Arc<Moderators>,
    /// Lease of a claim, in milliseconds.
    pub lease_ms: i64,
}

/// An API error with its status.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        let status = match &e {
            StoreError::Review(m) if m.starts_with("no case") => StatusCode::NOT_FOUND,
            StoreError::Review(m)
                if m.contains("claimed by")
                    || m.contains("already decided")
                    || m.contains("not claimed by") =>
            {
                StatusCode::CONFLICT
            }
            StoreError::Review(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, msg)
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn moderator(state: &ReviewState, headers: &HeaderMap) -> Result<String, ApiError> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "missing `Authorization: Bearer TOKEN`".into(),
            )
        })?;
    state
        .moderators
        .identify(token)
        .map(str::to_owned)
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "unknown token".into()))
}

/// Runs blocking store work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub status: Option<String>,
    pub kind: Option<String>,
    pub seller: Option<String>,
    pub limit: Option<usize>,
}

async fn list(
    State(s): State<ReviewState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    moderator(&s, &headers)?;
    let f = CaseFilter {
        status: q.status,
        kind: q.kind,
        seller: q.seller,
        limit: q.limit.unwrap_or(50),
    };
    let cases = blocking(move || s.store.cases(&f, now_ms())).await?;
    Ok(Json(cases).into_response())
}

async fn show(
    State(s): State<ReviewState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    moderator(&s, &headers)?;
    let case = blocking(move || s.store.case(&id).map(|c| (c, id))).await?;
    match case {
        (Some(c), _) => Ok(Json(c).into_response()),
        (None, id) => Err(ApiError(StatusCode::NOT_FOUND, format!("no case {id}"))),
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct NextBody {
    pub lease_secs: Option<i64>,
}

async fn next(
    State(s): State<ReviewState>,
    headers: HeaderMap,
    body: Option<Json<NextBody>>,
) -> Result<Response, ApiError> {
    let who = moderator(&s, &headers)?;
    let lease = body
        .and_then(|b| b.0.lease_secs)
        .map_or(s.lease_ms, |x| x * 1000);
    let case = blocking(move || s.store.claim_next(&who, lease, now_ms())).await?;
    Ok(match case {
        Some(c) => Json(c).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn claim(
    State(s): State<ReviewState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = moderator(&s, &headers)?;
    let lease = s.lease_ms;
    let case = blocking(move || s.store.claim(&id, &who, lease, now_ms())).await?;
    Ok(Json(case).into_response())
}

async fn release(
    State(s): State<ReviewState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = moderator(&s, &headers)?;
    let case = blocking(move || s.store.release(&id, &who, now_ms())).await?;
    Ok(Json(case).into_response())
}

#[derive(Debug, Deserialize)]
pub struct DecideBody {
    pub action: String,
    pub reason: String,
    pub note: Option<String>,
}

async fn decide(
    State(s): State<ReviewState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(b): Json<DecideBody>,
) -> Result<Response, ApiError> {
    let who = moderator(&s, &headers)?;
    let case = blocking(move || {
        s.store
            .decide(&id, &who, &b.action, &b.reason, b.note, now_ms())
    })
    .await?;
    Ok(Json(case).into_response())
}

async fn stats(State(s): State<ReviewState>, headers: HeaderMap) -> Result<Response, ApiError> {
    moderator(&s, &headers)?;
    let st = blocking(move || s.store.review_stats(now_ms())).await?;
    Ok(Json(st).into_response())
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    pub limit: Option<usize>,
}

async fn audit(
    State(s): State<ReviewState>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    moderator(&s, &headers)?;
    let log = blocking(move || s.store.audit_log(q.limit.unwrap_or(0))).await?;
    Ok(Json(log).into_response())
}

async fn export(State(s): State<ReviewState>, headers: HeaderMap) -> Result<Response, ApiError> {
    moderator(&s, &headers)?;
    let body = blocking(move || {
        let mut out = Vec::new();
        s.store.export_labels(&mut out)?;
        Ok(out)
    })
    .await?;
    Ok(([("content-type", "application/x-ndjson")], body).into_response())
}

async fn reasons() -> Json<&'static [&'static str]> {
    Json(REASON_CODES)
}

/// The review routes, under `/v1` (the caller adds its own `/healthz`).
pub fn router(state: ReviewState) -> Router {
    Router::new()
        .route("/v1/cases", get(list))
        .route("/v1/cases/next", post(next))
        .route("/v1/cases/{id}", get(show))
        .route("/v1/cases/{id}/claim", post(claim))
        .route("/v1/cases/{id}/release", post(release))
        .route("/v1/cases/{id}/decide", post(decide))
        .route("/v1/stats", get(stats))
        .route("/v1/audit", get(audit))
        .route("/v1/export-labels", get(export))
        .route("/v1/reason-codes", get(reasons))
        .with_state(state)
}
