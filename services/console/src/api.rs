//! The HTTP API, `/api/v1`, over the same contract as the NATS API.
//!
//! Every route but `/healthz` needs a token ([`crate::auth`]). Errors are
//! `{"error": {"code", "message"}}` with the NATS API's stable codes and the
//! matching HTTP status; bodies are bounded (`max_body_bytes`), and every
//! mutating call is audited ([`crate::audit`]) whatever its outcome.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clawfleet_shared::error::ErrorReply;
use clawfleet_shared::{strict, subjects, ErrorBody, ErrorCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::audit::Audit;
use crate::auth::{Principal, Tokens};
use crate::config::Config;

/// What every handler shares.
pub struct Shared {
    pub(crate) client: async_nats::Client,
    pub(crate) config: Config,
    pub(crate) tokens: Tokens,
    pub(crate) audit: Audit,
}

type AppState = Arc<Shared>;

/// An API error as an HTTP response.
pub struct ApiError(pub ErrorBody);

impl From<ErrorBody> for ApiError {
    fn from(e: ErrorBody) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (status_of(self.0.code), Json(ErrorReply { error: self.0 })).into_response()
    }
}

/// The HTTP status of an error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    use ErrorCode::*;
    match code {
        Unauthorized => StatusCode::UNAUTHORIZED,
        Forbidden => StatusCode::FORBIDDEN,
        NotFound => StatusCode::NOT_FOUND,
        AlreadyFinal | IdConflict => StatusCode::CONFLICT,
        PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        RateLimited | QuotaExceeded | BudgetExceeded => StatusCode::TOO_MANY_REQUESTS,
        Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The routes.
pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/tasks", post(submit))
        .route("/api/v1/tasks/{id}", get(task_get))
        .route("/api/v1/tasks/{id}/cancel", post(cancel))
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/queues", get(queues))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/audit", get(audit))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn healthz(State(s): State<AppState>) -> StatusCode {
    match s.client.connection_state() {
        async_nats::connection::State::Connected => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The caller of a request, from its `Authorization` header and address:
/// a handler that takes one refuses everyone without a valid token.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let from = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        Ok(Caller(s.tokens.check(header, from)?))
    }
}

async fn whoami(Caller(p): Caller) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({"name": p.name, "role": p.role.as_str(), "tenant": p.tenant}),
    ))
}

/// Sends a NATS API request; the service's error reply becomes the error.
async fn call<Q: Serialize, R: DeserializeOwned>(
    s: &Shared,
    subject: &'static str,
    body: &Q,
) -> Result<R, ApiError> {
    let body = serde_json::to_vec(body).expect("requests encode");
    call_raw(s, subject, body.into()).await
}

async fn call_raw<R: DeserializeOwned>(
    s: &Shared,
    subject: &'static str,
    body: Bytes,
) -> Result<R, ApiError> {
    clawfleet_shared::api::request(&s.client, subject, body, s.config.request_timeout)
        .await
        .map_err(ApiError)
}

async fn submit(
    State(s): State<AppState>,
    Caller(p): Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let outcome = submit_as(&s, &p, &body).await;
    s.audit
        .record(&p, "task.submit", outcome_target(&outcome, "id"), &outcome)
        .await;
    outcome.map(Json)
}

async fn submit_as(s: &Shared, p: &Principal, body: &[u8]) -> Result<Value, ApiError> {
    p.may_mutate(s.config.read_only)?;
    let mut task: serde_json::Map<String, Value> = strict::object(body).map_err(|e| {
        ErrorBody::new(
            ErrorCode::InvalidJson,
            format!("the body is not a task object: {e}"),
        )
    })?;
    if let Some(own) = &p.tenant {
        match task.get("tenant") {
            None => {
                task.insert("tenant".into(), Value::String(own.clone()));
            }
            Some(Value::String(t)) if t == own => {}
            Some(_) => {
                return Err(ErrorBody::new(
                    ErrorCode::TenantMismatch,
                    format!("this token submits for tenant {own:?} only"),
                )
                .into())
            }
        }
    }
    call(s, subjects::API_SUBMIT, &task).await
}

fn outcome_target(outcome: &Result<Value, ApiError>, field: &str) -> String {
    outcome
        .as_ref()
        .ok()
        .and_then(|v| v.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

async fn task_get(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record: Value = call(
        &s,
        subjects::API_TASK_GET,
        &json!({"id": id, "tenant": p.tenant}),
    )
    .await?;
    Ok(Json(record))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn cancel(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let outcome = async {
        p.may_mutate(s.config.read_only)?;
        let body: CancelBody = if body.is_empty() {
            CancelBody::default()
        } else {
            strict::object(&body).map_err(|e| {
                ErrorBody::new(ErrorCode::InvalidRequest, format!("bad cancel body: {e}"))
            })?
        };
        call(
            &s,
            subjects::API_TASK_CANCEL,
            &json!({"id": id, "tenant": p.tenant, "reason": body.reason}),
        )
        .await
    }
    .await;
    s.audit
        .record(&p, "task.cancel", strict::cut(&id, 256), &outcome)
        .await;
    outcome.map(Json)
}

async fn agents(
    State(s): State<AppState>,
    Caller(p): Caller,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    fleet_view(
        &s,
        &p,
        subjects::API_FLEET_STATE,
        json!({"cursor": page.cursor}),
    )
    .await
}

async fn queues(
    State(s): State<AppState>,
    Caller(p): Caller,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    fleet_view(
        &s,
        &p,
        subjects::API_QUEUES_LIST,
        json!({"cursor": page.cursor}),
    )
    .await
}

async fn alerts(State(s): State<AppState>, Caller(p): Caller) -> Result<Json<Value>, ApiError> {
    fleet_view(&s, &p, subjects::API_ALERTS_LIST, json!({})).await
}

/// A fleet-wide listing, which a tenant token may not see.
async fn fleet_view(
    s: &Shared,
    p: &Principal,
    subject: &'static str,
    body: Value,
) -> Result<Json<Value>, ApiError> {
    p.fleet_wide()?;
    Ok(Json(call(s, subject, &body).await?))
}

/// A page of a listing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn audit(
    State(s): State<AppState>,
    Caller(p): Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    p.fleet_wide()?;
    let since = match q.since.as_deref() {
        None => Duration::from_secs(24 * 3600),
        Some(text) => humantime::parse_duration(text).map_err(|e| {
            ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("since {}: {e}", strict::echo(text)),
            )
        })?,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = s.audit.read(since, limit).await?;
    Ok(Json(json!({ "entries": entries })))
}
