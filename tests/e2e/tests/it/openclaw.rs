//! An agent with the `openclaw` executor, attached to a fake gateway that
//! speaks the OpenClaw HTTP shapes, runs tasks submitted through the
//! dispatcher.

use clawfleet_agent::config::Secret;
use clawfleet_agent::ExecutorConfig;
use clawfleet_shared::{ErrorCode, TaskStatus};
use clawfleet_testkit::agent_config;
use clawfleet_testkit::client::{submit, wait_final};
use clawfleet_testkit::openclaw::FakeGateway;
use serde_json::json;
use std::time::Duration;

use crate::{Fleet, FINISH};

const TOKEN: &str = "e2e-token";

async fn fleet_with_openclaw_agent(gw: &FakeGateway) -> Fleet {
    let mut fleet = Fleet::new().await;
    let mut config = agent_config(fleet.server.url(), "oc1", &["openclaw"]);
    config.executor = ExecutorConfig::Openclaw {
        url: Some(gw.url()),
        token: Some(Secret::new(TOKEN)),
        agent: "main".into(),
        request_timeout: Duration::from_secs(10),
        ready_timeout: Some(Duration::from_secs(5)),
        session_prefix: "fleet".into(),
        supervise: None,
    };
    fleet.agent_with(config).await;
    fleet
}

#[tokio::test]
async fn an_openclaw_task_succeeds_with_the_gateways_answer() {
    let gw = FakeGateway::start(TOKEN).await;
    let fleet = fleet_with_openclaw_agent(&gw).await;
    let reply = submit(
        &fleet.client,
        &json!({"tenant": "acme", "requires": ["openclaw"],
                "payload": {"message": "summarise the logs", "session": "ops-42"}}),
    )
    .await
    .expect("accepted");
    let record = wait_final(&fleet.client, &reply.id, FINISH).await;
    assert_eq!(record.status, TaskStatus::Succeeded, "{:?}", record.failure);
    let result = record.result.expect("a result");
    assert_eq!(result["text"], "ECHO: summarise the logs");
    assert_eq!(result["model"], "openclaw/main");
    assert_eq!(result["session_key"], "fleet:acme:session:ops-42");
    assert_eq!(result["usage"], json!({"tokens_in": 3, "tokens_out": 4}));
    assert_eq!(record.attempts.len(), 1);
    assert_eq!(record.attempts[0].agent, "oc1");
    let seen = gw.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].session_key.as_deref(),
        Some("fleet:acme:session:ops-42")
    );
}

#[tokio::test]
async fn an_openclaw_task_for_an_unknown_agent_fails_at_once() {
    let gw = FakeGateway::start(TOKEN).await;
    let fleet = fleet_with_openclaw_agent(&gw).await;
    let reply = submit(
        &fleet.client,
        &json!({"tenant": "acme", "requires": ["openclaw"], "max_attempts": 3,
                "payload": {"message": "hi", "agent": "nosuch"}}),
    )
    .await
    .expect("accepted");
    let record = wait_final(&fleet.client, &reply.id, FINISH).await;
    assert_eq!(record.status, TaskStatus::Failed);
    assert_eq!(record.attempts.len(), 1);
    let failure = record.failure.expect("a failure");
    assert_eq!(failure.code, ErrorCode::ExecutorRejected);
    assert!(
        failure.message.contains("Unknown agent 'nosuch'"),
        "{failure:?}"
    );
}
