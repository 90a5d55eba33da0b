//! Fleet analytics and cost: what agents report per attempt reaches the log
//! aggregator's attempt history, and `clawfleet.api.analytics.*` answers
//! from it.

use std::collections::HashMap;
use std::time::Duration;

use clawfleet_log_aggregator::config::{ModelPrice, Prices};
use clawfleet_shared::analytics::{
    BelowAverageReply, BelowAverageRequest, CorrelationsReply, CorrelationsRequest, GroupBy,
    SummaryReply, SummaryRequest, Window,
};
use clawfleet_shared::task::Outcome;
use clawfleet_shared::{subjects, TaskRecord, TaskStatus};
use clawfleet_testkit::client::{request, submit, wait_final};
use clawfleet_testkit::{log_aggregator_config, start_log_aggregator, wait_for, Service};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::metrics::{free_addr, get, value};
use crate::{Fleet, FINISH};

/// Reports take a moment to be sent, streamed and recorded.
const RECORDED: Duration = Duration::from_secs(20);

async fn aggregator(
    fleet: &Fleet,
    configure: impl FnOnce(&mut clawfleet_log_aggregator::Config),
) -> (Service, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = log_aggregator_config(fleet.server.url(), dir.path());
    configure(&mut config);
    (start_log_aggregator(config).await, dir)
}

async fn ask<T: serde::de::DeserializeOwned>(fleet: &Fleet, subject: &str, body: Value) -> T {
    request(&fleet.client, subject, serde_json::to_vec(&body).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{subject}: {e:?}"))
}

/// Submits `tasks` and waits for each to finish; returns their records.
async fn run_all(fleet: &Fleet, tasks: Vec<Value>) -> Vec<TaskRecord> {
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(submit(&fleet.client, &t).await.expect("accepted").id);
    }
    let mut records = Vec::new();
    for id in ids {
        records.push(wait_final(&fleet.client, &id, FINISH).await);
    }
    records
}

/// Waits until the history holds `n` attempts.
async fn wait_recorded(fleet: &Fleet, n: u64) -> SummaryReply {
    wait_for("every attempt recorded", RECORDED, || async {
        let s: SummaryReply = ask(fleet, subjects::API_ANALYTICS_SUMMARY, json!({})).await;
        (s.total.attempts >= n).then_some(s)
    })
    .await
}

#[tokio::test]
async fn analytics_flag_the_agent_that_fails_far_more_than_the_rest() {
    let mut fleet = Fleet::new().await;
    let (_aggregator, _dir) = aggregator(&fleet, |_| {}).await;
    for id in ["steady-1", "steady-2", "sloppy"] {
        fleet.agent(id, &[], None).await;
    }
    // Every task fails on `sloppy` and succeeds on a retry elsewhere.
    let tasks = (0..90)
        .map(|i| {
            json!({"tenant": "acme", "labels": {"team": if i % 2 == 0 { "web" } else { "data" }},
            "payload": {"op": "fail", "on": ["sloppy"], "data": i}})
        })
        .collect();
    let records = run_all(&fleet, tasks).await;
    assert!(records.iter().all(|r| r.status == TaskStatus::Succeeded));
    let attempts: u64 = records.iter().map(|r| r.attempts.len() as u64).sum();
    let on_sloppy = records
        .iter()
        .flat_map(|r| &r.attempts)
        .filter(|a| a.agent == "sloppy")
        .count() as u64;
    assert!(on_sloppy >= 3, "sloppy took {on_sloppy} attempts");

    let summary = wait_recorded(&fleet, attempts).await;
    assert_eq!(summary.total.attempts, attempts);
    assert_eq!(summary.total.tasks, 90);
    assert_eq!(summary.total.succeeded, 90);
    assert_eq!(summary.total.failed, attempts - 90);
    let by_agent: HashMap<&str, _> = summary.groups.iter().map(|g| (g.key.as_str(), g)).collect();
    assert_eq!(by_agent["sloppy"].attempts, on_sloppy);
    assert_eq!(by_agent["sloppy"].success_rate, Some(0.0));
    assert_eq!(by_agent["steady-1"].success_rate, Some(1.0));

    let below: BelowAverageReply = ask(
        &fleet,
        subjects::API_ANALYTICS_BELOW_AVERAGE,
        serde_json::to_value(BelowAverageRequest {
            min_attempts: 3,
            ..Default::default()
        })
        .unwrap(),
    )
    .await;
    let flagged: Vec<&str> = below.below.iter().map(|a| a.agent.as_str()).collect();
    assert_eq!(flagged, ["sloppy"], "{below:?}");
    let sloppy = &below.below[0];
    assert_eq!(sloppy.others_success_rate, 1.0);
    assert_eq!(sloppy.rate_gap, 1.0);
    assert!(
        sloppy.reasons[0].contains("success rate"),
        "{:?}",
        sloppy.reasons
    );

    // Grouped by a label, each value has its own tasks.
    let by_team: SummaryReply = ask(
        &fleet,
        subjects::API_ANALYTICS_SUMMARY,
        serde_json::to_value(SummaryRequest {
            window: Window::default(),
            by: GroupBy::Label("team".into()),
        })
        .unwrap(),
    )
    .await;
    let teams: HashMap<&str, u64> = by_team
        .groups
        .iter()
        .map(|g| (g.key.as_str(), g.tasks))
        .collect();
    assert_eq!(teams, HashMap::from([("team=web", 45), ("team=data", 45)]));
}

#[tokio::test]
async fn the_failing_characteristic_stands_out_in_correlations() {
    let mut fleet = Fleet::new().await;
    let (_aggregator, _dir) = aggregator(&fleet, |_| {}).await;
    fleet.agent("worker", &[], None).await;
    // Tasks labelled kind=scrape fail for good; the others succeed.
    let tasks = (0..40)
        .map(|i| {
            let scrape = i % 4 == 0;
            json!({"tenant": "acme", "max_attempts": 1,
                "labels": {"kind": if scrape { "scrape" } else { "summarise" }},
                "payload": {"op": if scrape { "fatal" } else { "echo" }, "data": i}})
        })
        .collect();
    run_all(&fleet, tasks).await;
    wait_recorded(&fleet, 40).await;
    let reply: CorrelationsReply = ask(
        &fleet,
        subjects::API_ANALYTICS_CORRELATIONS,
        serde_json::to_value(CorrelationsRequest {
            min_attempts: 5,
            ..Default::default()
        })
        .unwrap(),
    )
    .await;
    assert_eq!(reply.fleet_failure_rate, Some(0.25));
    let top = &reply.correlations[0];
    assert_eq!(
        (top.characteristic.as_str(), top.value.as_str()),
        ("label", "kind=scrape"),
        "{reply:?}"
    );
    assert_eq!(top.failure_rate, 1.0);
    assert_eq!(top.lift, Some(4.0));
    let summarise = reply
        .correlations
        .iter()
        .find(|c| c.value == "kind=summarise")
        .unwrap();
    assert_eq!(summarise.failure_rate, 0.0);
}

#[tokio::test]
async fn cost_totals_are_the_sum_of_the_priced_attempts() {
    let mut fleet = Fleet::new().await;
    let metrics_addr = free_addr();
    let prices = Prices {
        currency: "EUR".into(),
        per_agent_hour: 36.0,
        models: [(
            "big".to_string(),
            ModelPrice {
                input_per_million: 3.0,
                output_per_million: 15.0,
            },
        )]
        .into(),
        default_model: ModelPrice {
            input_per_million: 1.0,
            output_per_million: 2.0,
        },
    };
    let (_aggregator, _dir) = aggregator(&fleet, |c| {
        c.analytics.prices = prices.clone();
        c.metrics_addr = Some(metrics_addr);
    })
    .await;
    fleet.agent("a1", &[], None).await;
    fleet.agent("a2", &[], None).await;
    // Tasks with usage on two models, one tenant's tasks failing once first
    // (a retry costs too), and some that sleep so wall time counts.
    let tasks = (0..30)
        .map(|i| {
            let model = if i % 3 == 0 { "big" } else { "small" };
            let usage = json!({"tokens_in": 1000 + i, "tokens_out": 100 + i, "model": model});
            if i % 5 == 0 {
                json!({"tenant": "beta", "payload": {"op": "flaky", "fail_attempts": 1, "data": i, "usage": usage}})
            } else {
                json!({"tenant": "acme", "payload": {"op": "sleep", "ms": 20, "usage": usage}})
            }
        })
        .collect::<Vec<_>>();
    let records = run_all(&fleet, tasks.clone()).await;
    let attempts: u64 = records.iter().map(|r| r.attempts.len() as u64).sum();
    assert!(attempts > 30, "the flaky tasks were retried");

    // What each attempt should cost: its wall time, plus its tokens when it
    // succeeded (a failed simulated attempt reports none).
    let mut expected: HashMap<String, i64> = HashMap::new();
    let mut expected_failed = 0i64;
    let mut expected_retries = 0i64;
    for (record, task) in records.iter().zip(&tasks) {
        let usage = &task["payload"]["usage"];
        for a in &record.attempts {
            let wall_ms = (a.ended_at.unwrap() - a.started_at).whole_milliseconds() as u64;
            let ok = a.outcome == Some(Outcome::Succeeded);
            let (tin, tout) = if ok {
                (
                    usage["tokens_in"].as_u64().unwrap(),
                    usage["tokens_out"].as_u64().unwrap(),
                )
            } else {
                (0, 0)
            };
            let model = ok.then(|| usage["model"].as_str().unwrap());
            let cost = prices.cost_micros(wall_ms, model, tin, tout);
            *expected.entry(a.agent.clone()).or_default() += cost;
            if !ok {
                expected_failed += cost;
            }
            if a.attempt > 1 {
                expected_retries += cost;
            }
        }
    }
    let micros = |v: f64| (v * 1e6).round() as i64;

    wait_recorded(&fleet, attempts).await;
    let cost: SummaryReply = ask(&fleet, subjects::API_ANALYTICS_COST, json!({})).await;
    assert_eq!(cost.currency, "EUR");
    let by_agent: HashMap<String, i64> = cost
        .groups
        .iter()
        .map(|g| (g.key.clone(), micros(g.cost)))
        .collect();
    assert_eq!(by_agent, expected);
    assert_eq!(micros(cost.total.cost), expected.values().sum::<i64>());
    assert_eq!(micros(cost.total.cost_failed), expected_failed);
    assert_eq!(micros(cost.total.cost_retries), expected_retries);
    assert!(expected_failed > 0 && expected_retries > 0);

    // By tenant and by model, the groups add up to the same total.
    for by in [GroupBy::Tenant, GroupBy::Model] {
        let reply: SummaryReply = ask(
            &fleet,
            subjects::API_ANALYTICS_COST,
            serde_json::to_value(SummaryRequest {
                window: Window::default(),
                by: by.clone(),
            })
            .unwrap(),
        )
        .await;
        let sum: i64 = reply.groups.iter().map(|g| micros(g.cost)).sum();
        assert_eq!(sum, micros(cost.total.cost), "{by:?}");
        if by == GroupBy::Model {
            let keys: Vec<&str> = reply.groups.iter().map(|g| g.key.as_str()).collect();
            assert!(
                keys.contains(&"big") && keys.contains(&"small") && keys.contains(&"-"),
                "{keys:?}"
            );
        }
    }

    // Prometheus sees the same cost, per agent.
    let (status, body) = get(metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
    for (agent, micros) in &expected {
        let seen: f64 = ["acme", "beta"]
            .iter()
            .filter_map(|t| {
                value(
                    &body,
                    "clawfleet_cost_micros_total",
                    &[("agent", agent), ("tenant", t)],
                )
            })
            .sum();
        assert_eq!(seen as i64, *micros, "{agent}");
    }
}
