//! `/metrics` and `/healthz` after a known workload.

use std::net::SocketAddr;

use clawfleet_testkit::agent_config;
use clawfleet_testkit::client::{submit, wait_final};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Fleet, FINISH};

pub(crate) fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address")
}

/// `GET path` over HTTP/1.1; (status, body).
pub(crate) async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let body = buf
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// The value of the series `name` whose labels include all of `labels`.
pub(crate) fn value(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (lbls, v) = match rest.strip_prefix('{') {
            Some(r) => r.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(k, v)| lbls.contains(&format!("{k}=\"{v}\"")))
            .then(|| v.trim().parse().ok())?
    })
}

#[tokio::test]
async fn metrics_count_a_known_workload_and_healthz_answers() {
    let dispatcher_addr = free_addr();
    let mut fleet = Fleet::with(|c| c.metrics_addr = Some(dispatcher_addr)).await;
    let agent_addr = free_addr();
    let mut config = agent_config(fleet.server.url(), "metered", &[]);
    config.metrics_addr = Some(agent_addr);
    fleet.agent_with(config).await;

    let mut ids = Vec::new();
    for i in 0..5 {
        let t = json!({"tenant": "metered-t", "payload": {"op": "echo", "data": i}});
        ids.push(submit(&fleet.client, &t).await.unwrap().id);
    }
    for _ in 0..2 {
        let t = json!({"tenant": "metered-t", "payload": {"op": "fatal"}});
        ids.push(submit(&fleet.client, &t).await.unwrap().id);
    }
    let refused = submit(&fleet.client, &json!({"tenant": "metered-t", "bogus": 1})).await;
    assert!(refused.is_err());
    for id in &ids {
        wait_final(&fleet.client, id, FINISH).await;
    }

    let (status, agent) = get(agent_addr, "/metrics").await;
    assert_eq!(status, 200);
    let agent_label = ("agent", "metered");
    assert_eq!(
        value(
            &agent,
            "clawfleet_attempts_total",
            &[agent_label, ("outcome", "succeeded")]
        ),
        Some(5.0),
        "{agent}"
    );
    assert_eq!(
        value(
            &agent,
            "clawfleet_attempts_total",
            &[agent_label, ("outcome", "failed")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&agent, "clawfleet_task_seconds_count", &[agent_label]),
        Some(7.0)
    );
    assert_eq!(value(&agent, "clawfleet_slots", &[agent_label]), Some(4.0));

    let (_, dispatcher) = get(dispatcher_addr, "/metrics").await;
    assert_eq!(
        value(
            &dispatcher,
            "clawfleet_tasks_queued_total",
            &[("tenant", "metered-t"), ("priority", "normal")]
        ),
        Some(7.0),
        "{dispatcher}"
    );
    assert!(value(
        &dispatcher,
        "clawfleet_tasks_rejected_total",
        &[("code", "unknown_field")]
    )
    .is_some_and(|n| n >= 1.0));
    assert!(value(&dispatcher, "clawfleet_dispatch_seconds_count", &[]).is_some_and(|n| n >= 7.0));

    let (status, body) = get(dispatcher_addr, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, _) = get(agent_addr, "/healthz").await;
    assert_eq!(status, 200);
}
