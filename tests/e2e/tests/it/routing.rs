//! Routing guarantees: capabilities, residency, priority, order.

use std::collections::HashMap;
use std::time::Duration;

use clawfleet_shared::{subjects, TaskStatus};
use clawfleet_testkit::client::{
    publish_intake, publish_intake_many, stream_messages, submit, task_get, wait_final,
};
use clawfleet_testkit::wait_for;
use futures::StreamExt;
use serde_json::json;

use crate::{Fleet, FINISH};

#[tokio::test]
async fn no_task_ever_runs_on_an_agent_lacking_a_capability_or_outside_its_region() {
    let mut fleet = Fleet::new().await;
    let agents: [(&str, &[&str], Option<&str>); 5] = [
        ("general-any", &["general"], None),
        ("coder-eu", &["code", "general"], Some("eu")),
        ("coder-us", &["code", "git"], Some("us")),
        ("web-eu", &["web"], Some("eu")),
        ("all-us", &["code", "general", "git", "web"], Some("us")),
    ];
    let mut fleet_caps = HashMap::new();
    for (id, caps, region) in agents {
        fleet.agent(id, caps, region).await;
        fleet_caps.insert(id.to_string(), (caps.to_vec(), region));
    }
    let shapes: [(&[&str], Option<&str>); 8] = [
        (&[], None),
        (&["general"], None),
        (&["code"], Some("eu")),
        (&["code"], Some("us")),
        (&["code", "git"], None),
        (&["web"], Some("eu")),
        (&["web", "git"], Some("us")),
        (&["general"], Some("eu")),
    ];
    let mut ids = Vec::new();
    for i in 0..240 {
        let (requires, region) = shapes[i % shapes.len()];
        let reply = submit(
            &fleet.client,
            &json!({"tenant": "acme", "requires": requires, "region": region, "payload": {"op": "echo", "data": i}}),
        )
        .await
        .expect("every shape is served by some agent");
        ids.push((reply.id, requires, region));
    }
    for (id, requires, region) in ids {
        let record = wait_final(&fleet.client, &id, FINISH).await;
        assert_eq!(record.status, TaskStatus::Succeeded);
        for attempt in &record.attempts {
            let (caps, agent_region) = &fleet_caps[&attempt.agent];
            for need in requires {
                assert!(
                    caps.contains(need),
                    "task {id} needing {requires:?} ran on {} with {caps:?}",
                    attempt.agent
                );
            }
            if region.is_some() {
                assert_eq!(
                    *agent_region, region,
                    "task {id} bound to {region:?} ran on {}",
                    attempt.agent
                );
            }
        }
    }
}

/// A one-slot agent whose profile is registered but which is not pulling,
/// so work queues up until it is started again with the returned config.
async fn registered_but_stopped_solo_agent(fleet: &mut Fleet) -> clawfleet_agent::Config {
    let mut config = clawfleet_testkit::agent_config(fleet.server.url(), "solo", &[]);
    config.max_concurrency = 1;
    fleet.agent_with(config.clone()).await;
    fleet.take_agent("solo").stop().await;
    config
}

#[tokio::test]
async fn a_critical_task_behind_ten_thousand_queued_low_ones_runs_next() {
    let mut fleet = Fleet::new().await;
    let config = registered_but_stopped_solo_agent(&mut fleet).await;
    publish_intake_many(
        &fleet.js,
        (0..10_000).map(|i| json!({"id": format!("low-{i:05}"), "tenant": "acme", "priority": "low", "payload": {"op": "echo", "data": i}})),
    )
    .await;
    wait_for(
        "all low tasks to be queued",
        Duration::from_secs(120),
        || async {
            (stream_messages(&fleet.js, subjects::STREAM_QUEUE).await == 10_000).then_some(())
        },
    )
    .await;

    // The agent works through the low queue one task at a time...
    fleet.agent_with(config).await;
    wait_for("low work to be under way", FINISH, || async {
        task_get(&fleet.client, "low-00050")
            .await
            .filter(|r| r.status == TaskStatus::Succeeded)
    })
    .await;

    // ...when a critical task reaches the queue. Agents learn of new work
    // from the dispatcher's wake-up signal; the test hears the same signal,
    // at the same moment as the agent.
    let mut signals = fleet.client.subscribe(subjects::SIGNAL_WORK).await.unwrap();
    publish_intake(
        &fleet.js,
        "acme",
        br#"{"id": "urgent", "priority": "critical", "payload": {"op": "echo", "data": "now"}}"#
            .to_vec(),
    )
    .await;
    loop {
        let msg = tokio::time::timeout(FINISH, signals.next())
            .await
            .expect("a wake-up signal for the critical task")
            .unwrap();
        let body = String::from_utf8_lossy(&msg.payload);
        if body.trim().is_empty() || body.contains("clawfleet.queue.critical.") {
            break;
        }
    }
    let queued_at = clawfleet_shared::timefmt::now();
    let critical = wait_final(&fleet.client, "urgent", FINISH).await;
    let critical_start = critical.attempts[0].started_at;

    // With one slot and nothing hoarded, at most the low task already taken
    // when the signal arrived can start between the two moments.
    let mut started_between = Vec::new();
    for i in 0..10_000 {
        let low = task_get(&fleet.client, &format!("low-{i:05}"))
            .await
            .unwrap();
        match low.attempts.first() {
            Some(a) if a.started_at > queued_at && a.started_at < critical_start => {
                started_between.push(low.spec.id)
            }
            Some(_) => {}
            // Records are written in order, so the rest have not started.
            None => break,
        }
    }
    assert!(
        started_between.len() <= 1,
        "low tasks started ahead of the critical one: {started_between:?}"
    );
    let pending = task_get(&fleet.client, "low-09999").await.unwrap();
    assert_eq!(
        pending.status,
        TaskStatus::Queued,
        "the critical task did not wait for the low backlog"
    );
}

#[tokio::test]
async fn within_a_priority_tasks_start_in_order_of_arrival() {
    let mut fleet = Fleet::new().await;
    let config = registered_but_stopped_solo_agent(&mut fleet).await;
    publish_intake_many(
        &fleet.js,
        (0..300).map(|i| {
            let priority = if i % 3 == 0 { "high" } else { "normal" };
            json!({"id": format!("t-{i:03}"), "tenant": "acme", "priority": priority, "payload": {"op": "echo", "data": i}})
        }),
    )
    .await;
    wait_for("tasks to be queued", FINISH, || async {
        (stream_messages(&fleet.js, subjects::STREAM_QUEUE).await == 300).then_some(())
    })
    .await;
    fleet.agent_with(config).await;

    let mut starts = Vec::new();
    for i in 0..300 {
        let record = wait_final(&fleet.client, &format!("t-{i:03}"), FINISH).await;
        starts.push((i, record.attempts[0].started_at));
    }
    let order = |high: bool| {
        let mut v: Vec<_> = starts
            .iter()
            .filter(|(i, _)| (i % 3 == 0) == high)
            .copied()
            .collect();
        v.sort_by_key(|(_, t)| *t);
        v.into_iter().map(|(i, _)| i).collect::<Vec<_>>()
    };
    let high = order(true);
    let normal = order(false);
    assert!(
        high.windows(2).all(|w| w[0] < w[1]),
        "high tasks started out of order: {high:?}"
    );
    assert!(
        normal.windows(2).all(|w| w[0] < w[1]),
        "normal tasks started out of order: {normal:?}"
    );
    let last_high = starts
        .iter()
        .filter(|(i, _)| i % 3 == 0)
        .map(|(_, t)| *t)
        .max()
        .unwrap();
    let first_normal = starts
        .iter()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, t)| *t)
        .min()
        .unwrap();
    assert!(
        last_high < first_normal,
        "every queued high task starts before any normal one"
    );
}
