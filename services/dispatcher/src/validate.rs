//! Turning a submitted body into a [`TaskSpec`], or a precise error.
//!
//! Validation is strict on purpose: an unknown field is usually a typo whose
//! silent acceptance would change what runs (`"priorty": "critical"`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clawfleet_shared::agent::Strategy;
use clawfleet_shared::names::{Capability, Region, TaskId, Tenant};
use clawfleet_shared::strict::{self, echo, echo_value, DecodeError};
use clawfleet_shared::task::{ReplayOf, RetryPolicy, DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT};
use clawfleet_shared::timefmt::{self, Timestamp};
use clawfleet_shared::{ErrorBody, ErrorCode, Priority, TaskSpec};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;

pub use clawfleet_shared::names::{MAX_ID_LEN, MAX_NAME_LEN, MAX_TENANT_LEN};
/// Most capabilities a task may require.
pub const MAX_REQUIRES: usize = 16;
/// Most labels a task may carry.
pub const MAX_LABELS: usize = 32;
/// Shortest allowed task timeout.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);

/// A task as submitted: every field the wire contract knows, each still
/// raw JSON, to be checked one by one below with its own error code. It is
/// decoded strictly ([`strict::object`]): one object, no repeated key, no
/// unknown field. As every field takes any JSON value, the only shape error
/// left for it is an unknown field.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Submitted {
    id: Option<Value>,
    tenant: Option<Value>,
    priority: Option<Value>,
    requires: Option<Value>,
    region: Option<Value>,
    payload: Option<Value>,
    timeout: Option<Value>,
    max_attempts: Option<Value>,
    labels: Option<Value>,
    submitted_at: Option<Value>,
    retry: Option<Value>,
    preemptible: Option<Value>,
    prefer_region: Option<Value>,
    prefer_region_until: Option<Value>,
    not_before: Option<Value>,
    delay: Option<Value>,
    replay_of: Option<Value>,
}

/// Bounds and defaults that come from the dispatcher's config.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Largest payload, in bytes of its JSON encoding.
    pub max_payload_bytes: usize,
    /// Largest `max_attempts`.
    pub max_attempts: u32,
    /// Longest `timeout`.
    pub max_timeout: Duration,
    /// The fleet's retry policy, for tasks and tenants that give none.
    pub retry: RetryPolicy,
    /// Per-tenant defaults.
    pub tenants: Arc<BTreeMap<String, TenantConfig>>,
    /// How long a task waits for its `prefer_region` before any region may run it.
    pub prefer_region_wait: Duration,
    /// Longest a task may wait for its `not_before`, counted from acceptance.
    pub max_delay: Duration,
}

/// One tenant's policy: defaults for its tasks, its share of the fleet,
/// isolation, and quotas.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantConfig {
    /// `max_attempts` of the tenant's tasks that give none.
    pub max_attempts: Option<u32>,
    /// Retry policy of the tenant's tasks that give none (fields a task
    /// gives override it one by one).
    pub retry: Option<RetryPolicy>,
    /// Share of an agent's time against other tenants with work of the same
    /// priority (1 to 1000; default 1: equal shares).
    pub weight: u32,
    /// How agents share this tenant's tasks; the fleet's `routing.strategy` when unset.
    pub strategy: Option<Strategy>,
    /// Run this tenant's tasks only on agents dedicated to it.
    pub dedicated_only: bool,
    /// Limits; unset ones do not apply.
    pub quota: Quota,
}

impl Default for TenantConfig {
    fn default() -> Self {
        Self {
            max_attempts: None,
            retry: None,
            weight: 1,
            strategy: None,
            dedicated_only: false,
            quota: Quota::default(),
        }
    }
}

/// A tenant's limits.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quota {
    /// Most tasks waiting in the tenant's queues; more are refused with
    /// `quota_exceeded`.
    pub max_queued: Option<u64>,
    /// Most tasks of one of the tenant's queues (priority × capability set ×
    /// region) running at once; JetStream holds back the rest.
    pub max_running: Option<u32>,
    /// Sustained submissions per second (token bucket); more are refused
    /// with `rate_limited`.
    pub submit_rate: Option<f64>,
    /// Submissions allowed in a burst above the rate (default: one second's worth).
    pub submit_burst: Option<u32>,
}

/// A validated task whose id may still have to be assigned.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The submitter's idempotency key, if any.
    pub id: Option<String>,
    /// The task; `spec.id` is empty until [`Draft::into_spec`].
    pub spec: TaskSpec,
}

impl Draft {
    /// Completes the task with its id (the submitter's, or `generated`).
    pub fn into_spec(self, generated: impl FnOnce() -> String) -> TaskSpec {
        let mut spec = self.spec;
        spec.id = self.id.unwrap_or_else(generated);
        spec
    }
}

/// Whether `s` is a valid tenant name: `[a-z0-9][a-z0-9_-]{0,63}`.
pub fn is_tenant(s: &str) -> bool {
    Tenant::is_valid(s)
}

/// Whether `s` is a valid task id: `[A-Za-z0-9_-]{1,MAX_ID_LEN}`.
pub fn is_id(s: &str) -> bool {
    TaskId::is_valid(s)
}

fn err(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

/// The error of a task body that did not decode.
pub fn decode_error(e: DecodeError) -> ErrorBody {
    let code = match &e {
        DecodeError::Syntax(_) => ErrorCode::InvalidJson,
        DecodeError::NotObject(_) => ErrorCode::InvalidTask,
        DecodeError::DuplicateKey(_) => ErrorCode::InvalidRequest,
        // The only shape error a [`Submitted`] can have.
        DecodeError::Shape(_) => ErrorCode::UnknownField,
    };
    err(code, e.to_string())
}

/// Validates a submitted body. `subject_tenant` is the tenant token of an
/// intake subject (`clawfleet.intake.<tenant>`); a body tenant must match it.
pub fn parse(
    body: &[u8],
    subject_tenant: Option<&str>,
    bounds: &Bounds,
) -> Result<Draft, ErrorBody> {
    let task: Submitted = strict::object(body).map_err(decode_error)?;

    let tenant = tenant(task.tenant, subject_tenant)?;
    let id = id(task.id)?;
    let priority = match task.priority {
        None => Priority::default(),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|m: String| err(ErrorCode::InvalidPriority, m))?,
        Some(other) => {
            return Err(err(
                ErrorCode::InvalidPriority,
                format!("priority must be a string, got {}", echo_value(&other)),
            ))
        }
    };
    let requires = requires(task.requires)?;
    let region = region_field(task.region, "region", ErrorCode::InvalidRegion)?;
    let payload = task.payload.unwrap_or(Value::Null);
    // The whole body bounds the payload, so only a large body needs measuring.
    if body.len() > bounds.max_payload_bytes {
        let size = serde_json::to_vec(&payload)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > bounds.max_payload_bytes {
            return Err(err(
                ErrorCode::PayloadTooLarge,
                format!(
                    "payload is {size} bytes; the limit is {} bytes",
                    bounds.max_payload_bytes
                ),
            ));
        }
    }
    let timeout = timeout(task.timeout, bounds)?;
    let tenant_defaults = bounds.tenants.get(tenant.as_str());
    let retry = retry(
        task.retry,
        tenant_defaults
            .and_then(|t| t.retry.as_ref())
            .unwrap_or(&bounds.retry),
    )?;
    let max_attempts = match task.max_attempts {
        None => tenant_defaults
            .and_then(|t| t.max_attempts)
            .unwrap_or(DEFAULT_MAX_ATTEMPTS)
            .min(bounds.max_attempts),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v >= 1 && v <= u64::from(bounds.max_attempts) => v as u32,
            _ => {
                return Err(err(
                    ErrorCode::InvalidMaxAttempts,
                    format!(
                        "max_attempts must be between 1 and {}, got {}",
                        bounds.max_attempts,
                        echo_value(&Value::Number(n))
                    ),
                ))
            }
        },
        Some(other) => {
            return Err(err(
                ErrorCode::InvalidMaxAttempts,
                format!("max_attempts must be a number, got {}", echo_value(&other)),
            ))
        }
    };
    let preemptible = match task.preemptible {
        None => true,
        Some(Value::Bool(b)) => b,
        Some(other) => {
            return Err(err(
                ErrorCode::InvalidTask,
                format!(
                    "preemptible must be true or false, got {}",
                    echo_value(&other)
                ),
            ))
        }
    };
    let prefer_region = region_field(
        task.prefer_region,
        "prefer_region",
        ErrorCode::InvalidPreferRegion,
    )?;
    let prefer_region = match (&region, prefer_region) {
        (Some(hard), Some(soft)) if *hard != soft => {
            return Err(err(
                ErrorCode::InvalidPreferRegion,
                format!("prefer_region {soft:?} contradicts region {hard:?}, which is binding"),
            ))
        }
        // Bound to that region anyway: the preference adds nothing.
        (Some(_), Some(_)) => None,
        (_, soft) => soft,
    };
    let prefer_region_until = time_field(
        task.prefer_region_until,
        "prefer_region_until",
        ErrorCode::InvalidPreferRegion,
    )?;
    let labels = labels(task.labels)?;
    let submitted_at = time_field(task.submitted_at, "submitted_at", ErrorCode::InvalidTask)?
        .unwrap_or_else(timefmt::now);
    let not_before = not_before(task.not_before, task.delay, bounds)?;
    let replay_of = replay_of(task.replay_of)?;
    let prefer_region_until = match (&prefer_region, prefer_region_until) {
        (None, _) => None,
        (Some(_), Some(until)) => Some(until),
        (Some(_), None) => Some(
            submitted_at
                .checked_add(duration(bounds.prefer_region_wait))
                .ok_or_else(|| {
                    err(
                        ErrorCode::InvalidTask,
                        "submitted_at is too close to the end of time for prefer_region",
                    )
                })?,
        ),
    };

    Ok(Draft {
        id: id.map(TaskId::into_string),
        spec: TaskSpec {
            id: String::new(),
            tenant: tenant.into_string(),
            priority,
            requires,
            region,
            payload,
            timeout,
            max_attempts,
            labels,
            submitted_at,
            retry,
            preemptible,
            prefer_region_until,
            prefer_region,
            not_before,
            replay_of,
        },
    })
}

/// A std duration as a `time` one, saturating (a duration this large is
/// out of range for any timestamp anyway, which `checked_add` reports).
fn duration(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

/// An optional RFC 3339 time field.
fn time_field(
    value: Option<Value>,
    name: &str,
    code: ErrorCode,
) -> Result<Option<Timestamp>, ErrorBody> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => {
            time::OffsetDateTime::parse(&s, &Rfc3339)
                .map(Some)
                .map_err(|e| {
                    err(
                        code,
                        format!("{name} {} is not an RFC 3339 time: {e}", echo(&s)),
                    )
                })
        }
        Some(other) => Err(err(
            code,
            format!(
                "{name} must be an RFC 3339 string, got {}",
                echo_value(&other)
            ),
        )),
    }
}

/// An optional region name (`region` or `prefer_region`).
fn region_field(
    value: Option<Value>,
    name: &str,
    code: ErrorCode,
) -> Result<Option<String>, ErrorBody> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Region::parse(s)
            .map(|r| Some(r.into_string()))
            .map_err(|e| err(code, format!("{name} must match {}, got {}", e.rule, e.got))),
        Some(other) => Err(err(
            code,
            format!(
                "{name} must match {}, got {}",
                Region::RULE,
                echo_value(&other)
            ),
        )),
    }
}

/// `not_before` (RFC 3339) or `delay` (a duration from now), at most one of
/// them, as the absolute time before which no attempt starts. A time in the
/// past is kept as given: it means "now".
fn not_before(
    at: Option<Value>,
    delay: Option<Value>,
    bounds: &Bounds,
) -> Result<Option<Timestamp>, ErrorBody> {
    let now = timefmt::now();
    let too_far = || {
        err(
            ErrorCode::InvalidDelay,
            format!(
                "a task may wait at most {} before it starts",
                humantime::format_duration(bounds.max_delay)
            ),
        )
    };
    let at = match (at, delay) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(err(
                ErrorCode::InvalidDelay,
                "give not_before or delay, not both",
            ))
        }
        (at @ Some(_), None) => {
            time_field(at, "not_before", ErrorCode::InvalidDelay)?.expect("a value was given")
        }
        (None, Some(Value::String(s))) => {
            let delay = humantime::parse_duration(&s).map_err(|e| {
                err(
                    ErrorCode::InvalidDelay,
                    format!(
                        "delay {} is not a duration like \"30s\" or \"2h\": {e}",
                        echo(&s)
                    ),
                )
            })?;
            if delay > bounds.max_delay {
                return Err(too_far());
            }
            now.checked_add(duration(delay)).ok_or_else(too_far)?
        }
        (None, Some(other)) => {
            return Err(err(
                ErrorCode::InvalidDelay,
                format!(
                    "delay must be a duration string like \"30s\", got {}",
                    echo_value(&other)
                ),
            ))
        }
    };
    if at - now > duration(bounds.max_delay) {
        return Err(too_far());
    }
    Ok(Some(at))
}

/// The link to a dead letter, set by `dlq.replay` (and checked like any
/// other field, since it comes back through intake).
fn replay_of(value: Option<Value>) -> Result<Option<ReplayOf>, ErrorBody> {
    let value = match value {
        None => return Ok(None),
        Some(v @ Value::Object(_)) => v,
        Some(other) => {
            return Err(err(
                ErrorCode::InvalidTask,
                format!(
                    "replay_of must be {{\"dlq_seq\": N, \"id\"?: \"...\"}}, got {}",
                    echo_value(&other)
                ),
            ))
        }
    };
    let bad = |why: String| {
        err(
            ErrorCode::InvalidTask,
            format!("replay_of must be {{\"dlq_seq\": N, \"id\"?: \"...\"}}: {why}"),
        )
    };
    let link: ReplayOf = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    if link.dlq_seq == 0 {
        return Err(bad("dlq_seq starts at 1".into()));
    }
    if link.id.as_deref().is_some_and(|id| !is_id(id)) {
        return Err(bad("id is not a task id".into()));
    }
    Ok(Some(link))
}

/// A submitted retry policy: each field given overrides the default's.
fn retry(value: Option<Value>, default: &RetryPolicy) -> Result<RetryPolicy, ErrorBody> {
    let given = match value {
        None => return Ok(default.clone()),
        Some(Value::Object(o)) => o,
        Some(other) => {
            return Err(err(
                ErrorCode::InvalidRetry,
                format!("retry must be an object, got {}", echo_value(&other)),
            ))
        }
    };
    let Ok(Value::Object(mut merged)) = serde_json::to_value(default) else {
        unreachable!("a retry policy encodes as an object")
    };
    merged.extend(given);
    let policy: RetryPolicy = serde_json::from_value(Value::Object(merged)).map_err(|e| {
        err(
            ErrorCode::InvalidRetry,
            format!("retry: {} (fields: backoff, backoff_max, on, different_agent; on takes timeout, executor_error, agent_lost)", strict::cut(&e.to_string(), 200)),
        )
    })?;
    policy
        .check()
        .map_err(|m| err(ErrorCode::InvalidRetry, m))?;
    Ok(policy)
}

fn tenant(value: Option<Value>, subject_tenant: Option<&str>) -> Result<Tenant, ErrorBody> {
    let body_tenant = match value {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(err(
                ErrorCode::InvalidTenant,
                format!("tenant must be a string, got {}", echo_value(&other)),
            ))
        }
    };
    let tenant = match (body_tenant, subject_tenant) {
        (None, None) => return Err(err(ErrorCode::MissingTenant, "the task has no tenant")),
        (Some(b), Some(s)) if b != s => {
            return Err(err(
                ErrorCode::TenantMismatch,
                format!(
                    "body tenant {} differs from subject tenant {}",
                    echo(&b),
                    echo(s)
                ),
            ))
        }
        (Some(t), _) => t,
        (None, Some(s)) => s.to_string(),
    };
    Tenant::parse(tenant).map_err(|e| err(ErrorCode::InvalidTenant, e.to_string()))
}

fn id(value: Option<Value>) -> Result<Option<TaskId>, ErrorBody> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => match TaskId::parse(s) {
            Ok(id) => Ok(Some(id)),
            Err(e) if e.too_long => Err(err(
                ErrorCode::IdTooLong,
                format!("id is {}; the limit is {MAX_ID_LEN} characters", e.got),
            )),
            Err(e) => Err(err(ErrorCode::InvalidId, e.to_string())),
        },
        Some(other) => Err(err(
            ErrorCode::InvalidId,
            format!("id must be a string, got {}", echo_value(&other)),
        )),
    }
}

fn requires(value: Option<Value>) -> Result<Vec<String>, ErrorBody> {
    let items = match value {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(err(
                ErrorCode::InvalidCapability,
                format!(
                    "requires must be a list of capability names, got {}",
                    echo_value(&other)
                ),
            ))
        }
    };
    if items.len() > MAX_REQUIRES {
        return Err(err(
            ErrorCode::InvalidCapability,
            format!(
                "at most {MAX_REQUIRES} capabilities may be required, got {}",
                items.len()
            ),
        ));
    }
    let mut caps = Vec::with_capacity(items.len());
    for item in items {
        let parsed = match item {
            Value::String(s) => Capability::parse(s).map_err(|e| e.got),
            other => Err(echo_value(&other)),
        };
        match parsed {
            Ok(cap) => caps.push(cap.into_string()),
            Err(got) => {
                return Err(err(
                    ErrorCode::InvalidCapability,
                    format!(
                        "capability names must match {}, got {got}",
                        Capability::RULE
                    ),
                ))
            }
        }
    }
    caps.sort();
    caps.dedup();
    Ok(caps)
}

fn timeout(value: Option<Value>, bounds: &Bounds) -> Result<Duration, ErrorBody> {
    let timeout = match value {
        None => return Ok(DEFAULT_TIMEOUT),
        Some(Value::String(s)) => humantime::parse_duration(&s).map_err(|e| {
            err(
                ErrorCode::InvalidTimeout,
                format!(
                    "timeout {} is not a duration like \"30s\" or \"5m\": {e}",
                    echo(&s)
                ),
            )
        })?,
        Some(other) => {
            return Err(err(
                ErrorCode::InvalidTimeout,
                format!(
                    "timeout must be a duration string like \"30s\", got {}",
                    echo_value(&other)
                ),
            ))
        }
    };
    if timeout < MIN_TIMEOUT || timeout > bounds.max_timeout {
        return Err(err(
            ErrorCode::InvalidTimeout,
            format!(
                "timeout must be between {} and {}",
                humantime::format_duration(MIN_TIMEOUT),
                humantime::format_duration(bounds.max_timeout)
            ),
        ));
    }
    Ok(timeout)
}

fn labels(value: Option<Value>) -> Result<BTreeMap<String, String>, ErrorBody> {
    let obj = match value {
        None => return Ok(BTreeMap::new()),
        Some(Value::Object(obj)) => obj,
        Some(other) => {
            return Err(err(
                ErrorCode::InvalidLabels,
                format!(
                    "labels must be an object of strings, got {}",
                    echo_value(&other)
                ),
            ))
        }
    };
    if obj.len() > MAX_LABELS {
        return Err(err(
            ErrorCode::InvalidLabels,
            format!("at most {MAX_LABELS} labels, got {}", obj.len()),
        ));
    }
    let mut labels = BTreeMap::new();
    for (k, v) in obj {
        match v {
            Value::String(v) if !k.is_empty() && k.len() <= 64 && v.len() <= 256 => {
                labels.insert(k, v);
            }
            _ => {
                return Err(err(
                    ErrorCode::InvalidLabels,
                    format!(
                        "label {} must be a string of at most 256 bytes with a key of 1-64 bytes",
                        echo(&k)
                    ),
                ))
            }
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds {
            max_payload_bytes: 1024,
            max_attempts: 10,
            max_timeout: Duration::from_secs(3600),
            retry: RetryPolicy::default(),
            tenants: Arc::new(BTreeMap::from([(
                "strict".to_string(),
                TenantConfig {
                    max_attempts: Some(7),
                    retry: Some(RetryPolicy {
                        backoff: Duration::from_secs(5),
                        ..RetryPolicy::default()
                    }),
                    ..Default::default()
                },
            )])),
            prefer_region_wait: Duration::from_secs(30),
            max_delay: Duration::from_secs(3600),
        }
    }

    #[test]
    fn retry_policies_come_from_the_tenant_then_the_fleet_and_fields_override_one_by_one() {
        let plain = parse(br#"{"tenant":"acme"}"#, None, &bounds())
            .unwrap()
            .spec;
        assert_eq!(plain.retry, RetryPolicy::default());
        let strict = parse(br#"{"tenant":"strict"}"#, None, &bounds())
            .unwrap()
            .spec;
        assert_eq!(strict.max_attempts, 7);
        assert_eq!(strict.retry.backoff, Duration::from_secs(5));
        let own = parse(
            br#"{"tenant":"strict","retry":{"on":["timeout"],"different_agent":false}}"#,
            None,
            &bounds(),
        )
        .unwrap()
        .spec;
        assert_eq!(own.retry.backoff, Duration::from_secs(5));
        assert_eq!(own.retry.on, vec![clawfleet_shared::task::RetryOn::Timeout]);
        assert!(!own.retry.different_agent);
    }

    #[test]
    fn a_validated_task_parses_again_to_the_same_task() {
        let first = parse(
            br#"{"tenant":"acme","prefer_region":"eu","preemptible":false,"retry":{"on":["timeout"]}}"#,
            None,
            &bounds(),
        )
        .unwrap()
        .into_spec(|| "t1".into());
        let body = serde_json::to_vec(&first).unwrap();
        let again = parse(&body, Some("acme"), &bounds())
            .unwrap()
            .into_spec(|| "x".into());
        assert_eq!(again, first);
    }

    #[test]
    fn a_bad_retry_policy_is_refused() {
        assert_eq!(
            code(r#"{"tenant":"a","retry":{"on":["sometimes"]}}"#),
            ErrorCode::InvalidRetry
        );
        assert_eq!(
            code(r#"{"tenant":"a","retry":{"backof":"1s"}}"#),
            ErrorCode::InvalidRetry
        );
        assert_eq!(
            code(r#"{"tenant":"a","retry":{"backoff":"2m","backoff_max":"1m"}}"#),
            ErrorCode::InvalidRetry
        );
        assert_eq!(code(r#"{"tenant":"a","retry":3}"#), ErrorCode::InvalidRetry);
    }

    fn code(body: &str) -> ErrorCode {
        parse(body.as_bytes(), None, &bounds()).unwrap_err().code
    }

    #[test]
    fn a_minimal_task_gets_defaults() {
        let draft = parse(br#"{"tenant":"acme"}"#, None, &bounds()).unwrap();
        assert_eq!(draft.id, None);
        assert_eq!(draft.spec.priority, Priority::Normal);
        assert_eq!(draft.spec.timeout, DEFAULT_TIMEOUT);
        assert_eq!(draft.spec.max_attempts, DEFAULT_MAX_ATTEMPTS);
    }

    #[test]
    fn requirements_are_sorted_and_deduplicated() {
        let draft = parse(
            br#"{"tenant":"a","requires":["web","code","web"]}"#,
            None,
            &bounds(),
        )
        .unwrap();
        assert_eq!(draft.spec.requires, vec!["code", "web"]);
    }

    #[test]
    fn each_kind_of_bad_input_has_its_own_code() {
        assert_eq!(code("nope"), ErrorCode::InvalidJson);
        assert_eq!(code("[1]"), ErrorCode::InvalidTask);
        assert_eq!(
            code(r#"{"tenant":"a","priorty":"low"}"#),
            ErrorCode::UnknownField
        );
        assert_eq!(code(r#"{"payload":1}"#), ErrorCode::MissingTenant);
        assert_eq!(code(r#"{"tenant":"A B"}"#), ErrorCode::InvalidTenant);
        assert_eq!(
            code(r#"{"tenant":"a","priority":"urgent"}"#),
            ErrorCode::InvalidPriority
        );
        assert_eq!(
            code(r#"{"tenant":"a","timeout":"soon"}"#),
            ErrorCode::InvalidTimeout
        );
        assert_eq!(
            code(r#"{"tenant":"a","timeout":"100d"}"#),
            ErrorCode::InvalidTimeout
        );
        assert_eq!(
            code(r#"{"tenant":"a","max_attempts":0}"#),
            ErrorCode::InvalidMaxAttempts
        );
        assert_eq!(
            code(r#"{"tenant":"a","requires":["Bad Cap"]}"#),
            ErrorCode::InvalidCapability
        );
        assert_eq!(
            code(r#"{"tenant":"a","region":"EU"}"#),
            ErrorCode::InvalidRegion
        );
        assert_eq!(
            code(r#"{"tenant":"a","labels":{"k":1}}"#),
            ErrorCode::InvalidLabels
        );
        assert_eq!(code(r#"{"tenant":"a","id":"a.b"}"#), ErrorCode::InvalidId);
        let long = format!(r#"{{"tenant":"a","id":"{}"}}"#, "x".repeat(65));
        assert_eq!(code(&long), ErrorCode::IdTooLong);
        let big = format!(r#"{{"tenant":"a","payload":"{}"}}"#, "x".repeat(2000));
        assert_eq!(code(&big), ErrorCode::PayloadTooLarge);
    }

    #[test]
    fn a_delay_becomes_an_absolute_not_before_within_max_delay() {
        let spec = parse(br#"{"tenant":"a","delay":"90s"}"#, None, &bounds())
            .unwrap()
            .spec;
        let wait = spec.not_before.unwrap() - spec.submitted_at;
        assert!(wait >= time::Duration::seconds(90) && wait < time::Duration::seconds(91));
        let past = parse(
            br#"{"tenant":"a","not_before":"2020-01-01T00:00:00Z"}"#,
            None,
            &bounds(),
        )
        .unwrap()
        .spec;
        assert_eq!(
            past.wait_left(timefmt::now()),
            None,
            "a past time means now"
        );
        assert_eq!(
            code(r#"{"tenant":"a","delay":"1s","not_before":"2020-01-01T00:00:00Z"}"#),
            ErrorCode::InvalidDelay
        );
        assert_eq!(
            code(r#"{"tenant":"a","delay":"2h"}"#),
            ErrorCode::InvalidDelay
        );
        assert_eq!(
            code(r#"{"tenant":"a","delay":30}"#),
            ErrorCode::InvalidDelay
        );
        assert_eq!(
            code(r#"{"tenant":"a","not_before":"next week"}"#),
            ErrorCode::InvalidDelay
        );
    }

    #[test]
    fn a_replay_link_must_name_a_dead_letter() {
        let spec = parse(
            br#"{"tenant":"a","replay_of":{"id":"t1","dlq_seq":4}}"#,
            None,
            &bounds(),
        )
        .unwrap()
        .spec;
        assert_eq!(spec.replay_of.unwrap().dlq_seq, 4);
        assert_eq!(
            code(r#"{"tenant":"a","replay_of":{"dlq_seq":0}}"#),
            ErrorCode::InvalidTask
        );
        assert_eq!(
            code(r#"{"tenant":"a","replay_of":{"id":"a.b","dlq_seq":1}}"#),
            ErrorCode::InvalidTask
        );
    }

    #[test]
    fn repeated_keys_and_non_objects_are_refused_and_errors_quote_little() {
        assert_eq!(
            code(r#"{"tenant":"a","tenant":"b"}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(r#"{"tenant":"a","labels":{"k":"1","k":"2"}}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(code("[]"), ErrorCode::InvalidTask);
        assert_eq!(code("null"), ErrorCode::InvalidTask);
        for body in [
            format!(r#"{{"tenant":"{}"}}"#, "x".repeat(1 << 20)),
            format!(r#"{{"tenant":"a","priority":"{}"}}"#, "p".repeat(1 << 20)),
            format!(r#"{{"tenant":"a","{}":1}}"#, "k".repeat(1 << 20)),
            format!(r#"{{"tenant":"a","requires":["{}"]}}"#, "C".repeat(1 << 20)),
            format!(r#"{{"tenant":"a","delay":"{}"}}"#, "9".repeat(1 << 20)),
        ] {
            let e = parse(body.as_bytes(), None, &bounds()).unwrap_err();
            assert!(e.message.len() < 400, "{}: {}", e.code, e.message.len());
        }
    }

    #[test]
    fn times_near_the_ends_of_the_calendar_are_refused_not_a_panic() {
        assert_eq!(
            code(r#"{"tenant":"a","prefer_region":"eu","submitted_at":"9999-12-31T23:59:59Z"}"#),
            ErrorCode::InvalidTask
        );
        assert_eq!(
            code(r#"{"tenant":"a","not_before":"9999-12-31T23:59:59Z"}"#),
            ErrorCode::InvalidDelay
        );
        assert_eq!(
            code(r#"{"tenant":"a","delay":"18446744073709551615s"}"#),
            ErrorCode::InvalidDelay
        );
    }

    #[test]
    fn the_subject_tenant_fills_in_and_must_match() {
        let draft = parse(b"{}", Some("acme"), &bounds()).unwrap();
        assert_eq!(draft.spec.tenant, "acme");
        let e = parse(br#"{"tenant":"other"}"#, Some("acme"), &bounds()).unwrap_err();
        assert_eq!(e.code, ErrorCode::TenantMismatch);
    }
}
