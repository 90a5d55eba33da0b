//! Contract tests of the `openclaw` executor against an in-process fake
//! gateway that speaks the real gateway's HTTP shapes.

use std::time::{Duration, Instant};

use clawfleet_agent::config::Secret;
use clawfleet_agent::executor::{
    Attempt, ExecError, Executor, Health, OpenclawExecutor, OpenclawSettings, Usage,
};
use clawfleet_shared::TaskSpec;
use clawfleet_testkit::openclaw::FakeGateway;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-token";
/// Bound on anything that should return "at once".
const PROMPT: Duration = Duration::from_secs(5);

fn settings(url: &str) -> OpenclawSettings {
    OpenclawSettings {
        url: url.to_string(),
        token: Secret::new(TOKEN),
        agent: "main".into(),
        request_timeout: Duration::from_secs(10),
        ready_timeout: Duration::from_millis(300),
        session_prefix: "clawfleet".into(),
    }
}

fn executor(gw: &FakeGateway) -> OpenclawExecutor {
    OpenclawExecutor::new(settings(&gw.url())).unwrap()
}

fn task(id: &str, payload: Value) -> TaskSpec {
    serde_json::from_value(json!({
        "id": id, "tenant": "acme", "priority": "normal", "requires": [],
        "payload": payload, "timeout": "1m", "max_attempts": 3, "labels": {},
        "submitted_at": "2026-01-01T00:00:00Z"
    }))
    .expect("a valid spec")
}

fn attempt() -> Attempt {
    Attempt {
        number: 1,
        cancel: CancellationToken::new(),
    }
}

async fn run(
    exec: &OpenclawExecutor,
    payload: Value,
) -> Result<clawfleet_agent::executor::Output, ExecError> {
    tokio::time::timeout(
        Duration::from_secs(20),
        exec.run(&task("T-1", payload), &attempt()),
    )
    .await
    .expect("the attempt ends")
}

#[tokio::test]
async fn openclaw_a_turn_returns_the_text_and_the_usage() {
    let gw = FakeGateway::start(TOKEN).await;
    let out = run(&executor(&gw), json!({"message": "hello there"}))
        .await
        .unwrap();
    assert_eq!(out.result["text"], "ECHO: hello there");
    assert_eq!(out.result["model"], "openclaw/main");
    assert_eq!(out.result["finish_reason"], "stop");
    assert_eq!(
        out.result["usage"],
        json!({"tokens_in": 2, "tokens_out": 3})
    );
    assert_eq!(
        out.usage,
        Some(Usage {
            tokens_in: 2,
            tokens_out: 3,
            model: Some("openclaw/main".into())
        })
    );
    let seen = gw.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].model.as_deref(), Some("openclaw/main"));
    assert_eq!(
        seen[0].session_key.as_deref(),
        Some("clawfleet:acme:task:t-1")
    );
    assert_eq!(
        seen[0].messages,
        json!([{"role": "user", "content": "hello there"}])
    );
}

#[tokio::test]
async fn openclaw_payload_agent_session_and_system_reach_the_gateway() {
    let gw = FakeGateway::start(TOKEN).await;
    let exec = executor(&gw);
    let payload =
        json!({"message": "next", "agent": "ops", "session": "Conv-1", "system": "be brief"});
    let out = run(&exec, payload.clone()).await.unwrap();
    assert_eq!(out.result["session_key"], "clawfleet:acme:session:conv-1");
    // A follow-up task in the same session sends the same key.
    exec.run(&task("T-2", payload), &attempt()).await.unwrap();
    let seen = gw.seen();
    assert_eq!(seen[0].model.as_deref(), Some("openclaw/ops"));
    assert_eq!(seen[0].session_key, seen[1].session_key);
    assert_eq!(
        seen[0].messages,
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "next"}])
    );
}

#[tokio::test]
async fn openclaw_payloads_of_another_shape_are_fatal_and_never_sent() {
    let gw = FakeGateway::start(TOKEN).await;
    let exec = executor(&gw);
    for payload in [
        json!("just text"),
        json!({"op": "echo"}),
        json!({"message": "hi", "extra": 1}),
        json!({"message": "  "}),
        json!({"message": "hi", "agent": "../etc"}),
        json!({"message": "hi", "session": "has space"}),
    ] {
        let err = run(&exec, payload.clone()).await.unwrap_err();
        assert!(matches!(err, ExecError::Fatal(_)), "{payload}: {err:?}");
    }
    assert!(gw.seen().is_empty());
}

#[tokio::test]
async fn openclaw_a_slow_answer_within_the_timeout_succeeds() {
    let gw = FakeGateway::start(TOKEN).await;
    let mut s = settings(&gw.url());
    s.request_timeout = Duration::from_secs(3);
    let exec = OpenclawExecutor::new(s).unwrap();
    let out = run(&exec, json!({"message": "FAKE_SLEEP_700 slow"}))
        .await
        .unwrap();
    assert_eq!(out.result["text"], "ECHO: FAKE_SLEEP_700 slow");
}

#[tokio::test]
async fn openclaw_upstream_timeouts_rate_limits_and_5xx_are_retryable() {
    let gw = FakeGateway::start(TOKEN).await;
    let exec = executor(&gw);
    for code in [408, 429, 500, 502, 503, 504] {
        let err = run(&exec, json!({"message": format!("FAKE_FAIL_{code}")}))
            .await
            .unwrap_err();
        match err {
            ExecError::Retryable(m) => assert!(m.contains(&code.to_string()), "{m}"),
            other => panic!("{code}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn openclaw_a_refused_token_is_fatal_and_says_so() {
    let gw = FakeGateway::start("another-token").await;
    let err = run(&executor(&gw), json!({"message": "hi"}))
        .await
        .unwrap_err();
    match err {
        ExecError::Fatal(m) => assert!(m.contains("401") && m.contains("token"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn openclaw_an_unknown_agent_is_fatal_with_the_gateways_message() {
    let gw = FakeGateway::start(TOKEN).await;
    let err = run(&executor(&gw), json!({"message": "hi", "agent": "nosuch"}))
        .await
        .unwrap_err();
    match err {
        ExecError::Fatal(m) => assert!(m.contains("Unknown agent 'nosuch'"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn openclaw_a_malformed_answer_is_retryable() {
    let gw = FakeGateway::start(TOKEN).await;
    let err = run(&executor(&gw), json!({"message": "FAKE_MALFORMED"}))
        .await
        .unwrap_err();
    match err {
        ExecError::Retryable(m) => assert!(m.contains("not a chat completion"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn openclaw_a_hang_past_the_request_timeout_is_retryable_and_prompt() {
    let gw = FakeGateway::start(TOKEN).await;
    let mut s = settings(&gw.url());
    s.request_timeout = Duration::from_millis(300);
    let exec = OpenclawExecutor::new(s).unwrap();
    let started = Instant::now();
    let err = run(&exec, json!({"message": "FAKE_HANG"}))
        .await
        .unwrap_err();
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    match err {
        ExecError::Retryable(m) => assert!(m.contains("did not answer within 300ms"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn openclaw_cancelling_an_attempt_drops_the_request() {
    let gw = FakeGateway::start(TOKEN).await;
    let exec = executor(&gw);
    let spec = task("T-1", json!({"message": "FAKE_HANG"}));
    let a = attempt();
    let cancel = a.cancel.clone();
    let run = tokio::spawn(async move { exec.run(&spec, &a).await });
    clawfleet_testkit::wait_for("the request reaches the gateway", PROMPT, || async {
        (gw.in_flight() == 1).then_some(())
    })
    .await;
    let started = Instant::now();
    cancel.cancel();
    let err = tokio::time::timeout(PROMPT, run)
        .await
        .expect("prompt")
        .unwrap()
        .unwrap_err();
    assert_eq!(err, ExecError::Cancelled);
    assert!(started.elapsed() < PROMPT);
    clawfleet_testkit::wait_for("the gateway sees the request go", PROMPT, || async {
        (gw.in_flight() == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn openclaw_an_unreachable_gateway_is_retryable_and_down() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let exec = OpenclawExecutor::new(settings(&url)).unwrap();
    let err = run(&exec, json!({"message": "hi"})).await.unwrap_err();
    assert!(
        matches!(&err, ExecError::Retryable(m) if m.contains("could not connect")),
        "{err:?}"
    );
    assert_eq!(exec.health().await, Health::Down);
}

#[tokio::test]
async fn openclaw_health_follows_readyz() {
    let gw = FakeGateway::start(TOKEN).await;
    let exec = executor(&gw);
    assert_eq!(exec.health().await, Health::Ready);
    gw.set_ready(false);
    assert_eq!(exec.health().await, Health::NotReady);
    gw.set_ready(true);
    assert_eq!(exec.health().await, Health::Ready);
}

#[tokio::test]
async fn openclaw_start_refuses_a_wrong_token_but_not_a_gateway_still_starting() {
    let gw = FakeGateway::start("another-token").await;
    let err = executor(&gw).start().await.unwrap_err();
    assert!(
        matches!(&err, ExecError::Fatal(m) if m.contains("refused the token")),
        "{err:?}"
    );

    let gw = FakeGateway::start(TOKEN).await;
    gw.set_ready(false);
    let started = Instant::now();
    executor(&gw)
        .start()
        .await
        .expect("an unready gateway does not stop the agent");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < PROMPT);

    gw.set_ready(true);
    executor(&gw)
        .start()
        .await
        .expect("a ready gateway with the right token");
}
