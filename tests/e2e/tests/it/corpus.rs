//! The hostile-input corpus (`tests/e2e/corpus/cases.jsonl`) against a live
//! fleet: every request gets a bounded, defined answer, every bad intake or
//! queue message becomes exactly one dead letter that fits its stream, log
//! lines from anyone are cut to the line limits, nothing loops, and the
//! fleet still runs work afterwards.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer;
use clawfleet_shared::api::{reply_budget, DlqEntry, DlqReason};
use clawfleet_shared::error::ErrorReply;
use clawfleet_shared::logs::{LogSearchReply, LogSearchRequest, MAX_MESSAGE_BYTES};
use clawfleet_shared::{subjects, ErrorCode, TaskStatus};
use clawfleet_testkit::client::{request, submit, wait_final};
use clawfleet_testkit::{
    log_aggregator_config, monitor_config, start_health_monitor, start_log_aggregator, wait_for,
};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{Fleet, FINISH};

/// Largest error reply: an error quotes its input only briefly.
const MAX_ERROR_REPLY: usize = 64 * 1024;
/// Largest dead letter the corpus may produce: a summary, never the body.
const MAX_DEAD_LETTER: usize = 70 * 1024;

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    to: To,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    hex: Option<String>,
    #[serde(default)]
    gen: Option<Gen>,
    #[serde(default)]
    expect: Expect,
    #[serde(default)]
    expect_on: BTreeMap<String, Expect>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum To {
    Kind(String),
    Subjects(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct Gen {
    template: String,
    #[serde(default)]
    fill: Option<String>,
    #[serde(default)]
    fill_hex: Option<String>,
    bytes: usize,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    code: Option<ErrorCode>,
    #[serde(default)]
    ok: bool,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

impl Case {
    fn body(&self) -> Vec<u8> {
        if let Some(b) = &self.body {
            return b.clone().into_bytes();
        }
        if let Some(h) = &self.hex {
            return hex(h);
        }
        let g = self.gen.as_ref().expect("a case has body, hex or gen");
        let fill = match (&g.fill, &g.fill_hex) {
            (Some(f), _) => f.clone().into_bytes(),
            (_, Some(h)) => hex(h),
            _ => panic!("{}: gen needs fill or fill_hex", self.name),
        };
        let (head, tail) = g.template.split_once('@').expect("template has @");
        let mut out = head.as_bytes().to_vec();
        while out.len() + fill.len() + tail.len() <= g.bytes {
            out.extend_from_slice(&fill);
        }
        out.extend_from_slice(tail.as_bytes());
        out
    }

    fn subjects(&self) -> Vec<String> {
        match &self.to {
            To::Kind(k) if k == "api" => subjects::DISPATCHER_API
                .iter()
                .chain(&subjects::MONITOR_API)
                .chain(&subjects::LOG_AGGREGATOR_API)
                .map(|s| s.to_string())
                .collect(),
            To::Kind(k) => vec![k.clone()],
            To::Subjects(list) => list.clone(),
        }
    }
}

fn corpus() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/cases.jsonl");
    let text = std::fs::read_to_string(path).expect("corpus file");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad corpus line {l}: {e}")))
        .collect()
}

/// Dead letters of `reason`, read straight from the stream with their sizes.
async fn stored_dead_letters(fleet: &Fleet, reason: DlqReason) -> Vec<(usize, DlqEntry)> {
    let stream = fleet.js.get_stream(subjects::STREAM_DLQ).await.unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subjects::dlq(reason.as_str(), "*"),
            ..Default::default()
        })
        .await
        .unwrap();
    if consumer.cached_info().num_pending == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut messages = consumer.messages().await.unwrap();
    while let Ok(Some(Ok(msg))) =
        tokio::time::timeout(Duration::from_secs(2), messages.next()).await
    {
        let entry: DlqEntry = serde_json::from_slice(&msg.payload).expect("a dead letter");
        out.push((msg.payload.len(), entry));
        if msg.info().unwrap().pending == 0 {
            break;
        }
    }
    out
}

/// Whether a durable consumer has nothing waiting and nothing unacknowledged.
async fn drained(fleet: &Fleet, stream: &str, consumer: &str) -> bool {
    let s = fleet.js.get_stream(stream).await.unwrap();
    let Ok(info) = s.consumer_info(consumer).await else {
        return false;
    };
    info.num_pending == 0 && info.num_ack_pending == 0
}

#[tokio::test]
async fn a_corpus_of_hostile_inputs_gets_bounded_answers_and_nothing_loops() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &["code"], None).await;
    let _monitor = start_health_monitor(monitor_config(fleet.server.url())).await;
    let logs_dir = tempfile::tempdir().unwrap();
    let _logs =
        start_log_aggregator(log_aggregator_config(fleet.server.url(), logs_dir.path())).await;
    let budget = reply_budget(fleet.client.server_info().max_payload);

    // A queue that exists, for the poison cases.
    let first = submit(
        &fleet.client,
        &json!({"tenant": "acme", "requires": ["code"], "payload": {"op": "echo"}}),
    )
    .await
    .unwrap();
    let done = wait_final(&fleet.client, &first.id, FINISH).await;
    assert_eq!(done.status, TaskStatus::Succeeded);
    let queue = done.queue.clone();

    let cases = corpus();
    assert!(cases.len() >= 50, "the corpus has {} cases", cases.len());
    let mut requests = 0;
    let mut intake_codes = Vec::new();
    let mut poison = 0;
    let mut log_lines = 0;
    for case in &cases {
        let body = case.body();
        for subject in case.subjects() {
            match subject.as_str() {
                "intake" => {
                    fleet
                        .js
                        .publish(subjects::intake("acme"), body.clone().into())
                        .await
                        .unwrap()
                        .await
                        .unwrap_or_else(|e| panic!("{}: intake refused it: {e}", case.name));
                    intake_codes.push(case.expect.code.expect("intake cases name a code"));
                }
                "queue" => {
                    fleet
                        .js
                        .publish(queue.clone(), body.clone().into())
                        .await
                        .unwrap()
                        .await
                        .unwrap_or_else(|e| panic!("{}: the queue refused it: {e}", case.name));
                    poison += 1;
                }
                "logs" => {
                    fleet
                        .client
                        .publish("clawfleet.logs.hostile.info._", body.clone().into())
                        .await
                        .unwrap();
                    log_lines += 1;
                }
                api => {
                    requests += 1;
                    let expect = case.expect_on.get(api).unwrap_or(&case.expect);
                    let reply = tokio::time::timeout(
                        Duration::from_secs(5),
                        fleet.client.request(api.to_string(), body.clone().into()),
                    )
                    .await
                    .unwrap_or_else(|_| panic!("{}: no reply on {api} within 5 s", case.name))
                    .unwrap_or_else(|e| panic!("{}: request on {api} failed: {e}", case.name));
                    let error = serde_json::from_slice::<ErrorReply>(&reply.payload).ok();
                    match &error {
                        Some(_) => assert!(
                            reply.payload.len() <= MAX_ERROR_REPLY,
                            "{}: {api} answered a {}-byte error",
                            case.name,
                            reply.payload.len()
                        ),
                        None => {
                            assert!(
                                reply.payload.len() <= budget,
                                "{}: {api} answered {} bytes",
                                case.name,
                                reply.payload.len()
                            );
                            serde_json::from_slice::<Value>(&reply.payload).unwrap_or_else(|e| {
                                panic!("{}: {api} answered something not JSON: {e}", case.name)
                            });
                        }
                    }
                    match (expect.code, expect.ok, &error) {
                        (Some(code), _, Some(e)) => assert_eq!(
                            e.error.code, code,
                            "{}: {api}: {}",
                            case.name, e.error.message
                        ),
                        (Some(code), _, None) => {
                            panic!("{}: {api} succeeded, expected {code}", case.name)
                        }
                        (None, true, Some(e)) => {
                            panic!("{}: {api} failed: {}", case.name, e.error)
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    assert!(requests >= 400, "only {requests} requests in the corpus");

    // Each bad intake message is one dead letter, small whatever it held.
    let rejected = wait_for(
        "the rejected intake cases' dead letters",
        FINISH,
        || async {
            let found = stored_dead_letters(&fleet, DlqReason::Rejected).await;
            (found.len() >= intake_codes.len()).then_some(found)
        },
    )
    .await;
    assert_eq!(rejected.len(), intake_codes.len(), "one dead letter each");
    let mut got: Vec<ErrorCode> = rejected.iter().map(|(_, e)| e.failure.code).collect();
    got.sort_by_key(|c| c.as_str());
    intake_codes.sort_by_key(|c| c.as_str());
    assert_eq!(got, intake_codes);
    for (size, entry) in &rejected {
        assert!(*size <= MAX_DEAD_LETTER, "a {size}-byte dead letter");
        assert!(entry.failure.message.len() <= 1024);
    }
    assert!(
        rejected
            .iter()
            .any(|(_, e)| e.body.as_ref().is_some_and(|b| b.bytes >= 999_000)),
        "a huge body is kept as its summary"
    );
    wait_for("intake to drain", FINISH, || async {
        drained(
            &fleet,
            subjects::STREAM_INTAKE,
            subjects::CONSUMER_DISPATCHER,
        )
        .await
        .then_some(())
    })
    .await;

    // Each poison message is one dead letter, and the queue drains.
    let poisoned = wait_for("the poison cases' dead letters", FINISH, || async {
        let found = stored_dead_letters(&fleet, DlqReason::Poison).await;
        (found.len() >= poison).then_some(found)
    })
    .await;
    assert_eq!(poisoned.len(), poison);
    assert!(poisoned.iter().all(|(size, _)| *size <= MAX_DEAD_LETTER));
    let info = fleet
        .js
        .get_stream(subjects::STREAM_QUEUE)
        .await
        .unwrap()
        .consumer_info(&subjects::queue_consumer(
            done.spec.priority,
            &subjects::queue_key(&done.spec.tenant, None, &done.spec.requires),
        ))
        .await
        .unwrap();
    assert_eq!(
        info.num_redelivered, 0,
        "nothing in the queue came back: {info:?}"
    );

    // Huge log lines from any publisher are stored cut to the line limits.
    let found = wait_for("the hostile log lines", FINISH, || async {
        let reply: LogSearchReply = request(
            &fleet.client,
            subjects::API_LOGS_SEARCH,
            serde_json::to_vec(&LogSearchRequest {
                text: Some("corpusline".into()),
                limit: Some(1000),
                ..Default::default()
            })
            .unwrap(),
        )
        .await
        .ok()?;
        (reply.lines.len() >= log_lines).then_some(reply)
    })
    .await;
    for line in &found.lines {
        assert!(line.line.message.len() <= MAX_MESSAGE_BYTES);
        assert_eq!(line.line.fields.get("truncated"), Some(&Value::Bool(true)));
        let size = serde_json::to_vec(line).unwrap().len();
        assert!(size < 80 * 1024, "a {size}-byte line");
    }

    // The fleet still runs work, and nothing it was sent is still pending.
    let after = submit(
        &fleet.client,
        &json!({"tenant": "acme", "requires": ["code"], "payload": {"op": "echo"}}),
    )
    .await
    .unwrap();
    assert_eq!(
        wait_final(&fleet.client, &after.id, FINISH).await.status,
        TaskStatus::Succeeded
    );
}
