//! Client-side helpers: what a user of the public subjects would do.

use std::time::Duration;

use async_nats::jetstream;
use clawfleet_shared::api::{ApiReply, SubmitReply, TaskGetRequest};
use clawfleet_shared::logs::{LogSearchReply, LogSearchRequest, LogStatsReply};
use clawfleet_shared::{subjects, ErrorBody, ErrorCode, TaskRecord, TaskStatus};
use serde_json::Value;

/// Submits a task by request/reply.
pub async fn submit(client: &async_nats::Client, task: &Value) -> Result<SubmitReply, ErrorBody> {
    request(
        client,
        subjects::API_SUBMIT,
        serde_json::to_vec(task).unwrap(),
    )
    .await
}

/// Submits raw bytes by request/reply.
pub async fn submit_raw(
    client: &async_nats::Client,
    body: Vec<u8>,
) -> Result<SubmitReply, ErrorBody> {
    request(client, subjects::API_SUBMIT, body).await
}

/// Sends a request and decodes the reply.
pub async fn request<T: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    subject: &str,
    body: Vec<u8>,
) -> Result<T, ErrorBody> {
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(subject.to_string(), body.into()),
    )
    .await
    .expect("request timed out")
    .expect("request failed");
    serde_json::from_slice::<ApiReply<T>>(&reply.payload)
        .unwrap_or_else(|e| {
            panic!(
                "undecodable reply {:?}: {e}",
                String::from_utf8_lossy(&reply.payload)
            )
        })
        .into_result()
}

/// Reads a task record; `None` when not found. Any other error fails the test.
///
/// A read is safe to repeat, so a request that gets no answer is asked
/// again, up to three times: on a loaded two-core machine, with a
/// dispatcher just restarted, an answer can be lost to a reconnect or come
/// too late. Every answer that does come is checked in full.
pub async fn task_get(client: &async_nats::Client, id: &str) -> Option<TaskRecord> {
    let req = TaskGetRequest {
        id: id.to_string(),
        tenant: None,
    };
    let body = serde_json::to_vec(&req).unwrap();
    let mut tries = 0;
    let reply = loop {
        tries += 1;
        let asked = tokio::time::timeout(
            Duration::from_secs(10),
            client.request(subjects::API_TASK_GET.to_string(), body.clone().into()),
        )
        .await;
        match asked {
            Ok(Ok(reply)) => break reply,
            Ok(Err(e)) if tries < 3 => eprintln!("task.get {id}: {e}; asking again"),
            Err(_) if tries < 3 => eprintln!("task.get {id}: no answer; asking again"),
            Ok(Err(e)) => panic!("task.get {id} failed {tries} times: {e}"),
            Err(_) => panic!("task.get {id}: no answer {tries} times"),
        }
    };
    let decoded: ApiReply<TaskRecord> =
        serde_json::from_slice(&reply.payload).unwrap_or_else(|e| {
            panic!(
                "undecodable reply {:?}: {e}",
                String::from_utf8_lossy(&reply.payload)
            )
        });
    match decoded.into_result() {
        Ok(record) => Some(record),
        Err(e) if e.code == ErrorCode::NotFound => None,
        Err(e) => panic!("task.get {id}: {e:?}"),
    }
}

/// Publishes a task to `clawfleet.intake.<tenant>` and waits for the stream's ack.
pub async fn publish_intake(js: &jetstream::Context, tenant: &str, body: Vec<u8>) {
    js.publish(subjects::intake(tenant), body.into())
        .await
        .expect("publish intake")
        .await
        .expect("intake ack");
}

/// Publishes many tasks to intake, each to its own tenant's subject, and
/// waits for every stream ack. Acks are awaited a chunk at a time: the client
/// caps acks in flight, so holding them all until the end would stall.
pub async fn publish_intake_many(js: &jetstream::Context, tasks: impl IntoIterator<Item = Value>) {
    const CHUNK: usize = 500;
    let mut acks = Vec::with_capacity(CHUNK);
    for task in tasks {
        let tenant = task["tenant"].as_str().expect("each task names its tenant");
        let body = serde_json::to_vec(&task).unwrap();
        acks.push(
            js.publish(subjects::intake(tenant), body.into())
                .await
                .expect("publish intake"),
        );
        if acks.len() == CHUNK {
            for ack in acks.drain(..) {
                ack.await.expect("intake ack");
            }
        }
    }
    for ack in acks {
        ack.await.expect("intake ack");
    }
}

/// Polls until the task's record is final; on timeout the panic shows the
/// last record seen.
pub async fn wait_final(client: &async_nats::Client, id: &str, timeout: Duration) -> TaskRecord {
    wait_record(client, id, "finish", timeout, |r| r.status.is_final()).await
}

/// Polls until the task's record says it is running.
pub async fn wait_running(client: &async_nats::Client, id: &str, timeout: Duration) -> TaskRecord {
    wait_record(client, id, "start", timeout, |r| {
        r.status == TaskStatus::Running
    })
    .await
}

async fn wait_record(
    client: &async_nats::Client,
    id: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&TaskRecord) -> bool,
) -> TaskRecord {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let record = task_get(client, id).await;
        match record {
            Some(r) if done(&r) => return r,
            _ if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for task {id} to {what}; last seen: {record:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Messages currently in a stream.
pub async fn stream_messages(js: &jetstream::Context, stream: &str) -> u64 {
    let mut s = js.get_stream(stream).await.expect("stream exists");
    s.info().await.expect("stream info").state.messages
}

/// Searches the log index (`clawfleet.api.logs.search`).
pub async fn search_logs(
    client: &async_nats::Client,
    req: &LogSearchRequest,
) -> Result<LogSearchReply, ErrorBody> {
    request(
        client,
        subjects::API_LOGS_SEARCH,
        serde_json::to_vec(req).unwrap(),
    )
    .await
}

/// What the log index holds (`clawfleet.api.logs.stats`).
pub async fn log_stats(client: &async_nats::Client) -> LogStatsReply {
    request(client, subjects::API_LOGS_STATS, Vec::new())
        .await
        .expect("logs.stats answers")
}

/// Polls a search until `done` accepts its reply; on timeout the panic
/// shows the last reply.
pub async fn wait_logs(
    client: &async_nats::Client,
    req: &LogSearchRequest,
    what: &str,
    timeout: Duration,
    done: impl Fn(&LogSearchReply) -> bool,
) -> LogSearchReply {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let reply = search_logs(client, req).await.expect("search succeeds");
        if done(&reply) {
            return reply;
        }
        if tokio::time::Instant::now() >= deadline {
            let lines: Vec<_> = reply
                .lines
                .iter()
                .map(|l| serde_json::to_string(&l.line).unwrap())
                .collect();
            panic!(
                "timed out after {timeout:?} waiting for {what}; last search found:\n{}",
                lines.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
