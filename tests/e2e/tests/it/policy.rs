//! The policy layer: strategies, preemption, residency, isolation,
//! fairness, quotas and pause/resume.

use std::collections::HashMap;
use std::time::Duration;

use clawfleet_dispatcher::config::StaticProfile;
use clawfleet_dispatcher::validate::{Quota, TenantConfig};
use clawfleet_shared::agent::Strategy;
use clawfleet_shared::api::{PauseRule, PausedReply, QueuesReply};
use clawfleet_shared::task::Outcome;
use clawfleet_shared::{subjects, ErrorCode, Priority, TaskRecord, TaskStatus};
use clawfleet_testkit::client::{
    publish_intake_many, request, submit, task_get, wait_final, wait_running,
};
use clawfleet_testkit::{agent_config, dispatcher_config, start_dispatcher, wait_for};
use serde_json::{json, Value};

use crate::{events_per_task, Fleet, FINISH};

async fn submit_all(fleet: &Fleet, tasks: impl IntoIterator<Item = Value>) -> Vec<String> {
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(submit(&fleet.client, &t).await.expect("accepted").id);
    }
    ids
}

async fn finals(fleet: &Fleet, ids: &[String]) -> Vec<TaskRecord> {
    let mut out = Vec::new();
    for id in ids {
        out.push(wait_final(&fleet.client, id, FINISH).await);
    }
    out
}

/// Tasks whose first attempt ran on each agent.
fn first_agents(records: &[TaskRecord]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in records {
        *counts.entry(r.attempts[0].agent.clone()).or_insert(0) += 1;
    }
    counts
}

async fn agent(
    fleet: &mut Fleet,
    id: &str,
    slots: u32,
    f: impl FnOnce(&mut clawfleet_agent::Config),
) {
    let mut config = agent_config(fleet.server.url(), id, &[]);
    config.max_concurrency = slots;
    f(&mut config);
    fleet.agent_with(config).await;
}

fn tenant(f: impl FnOnce(&mut TenantConfig)) -> TenantConfig {
    let mut t = TenantConfig::default();
    f(&mut t);
    t
}

/// A tenant with this quota and nothing else set.
fn limited(quota: Quota) -> TenantConfig {
    tenant(|t| t.quota = quota)
}

#[tokio::test]
async fn round_robin_deals_equal_tasks_evenly_over_idle_agents() {
    let mut fleet = Fleet::with(|c| c.routing.strategy = Strategy::RoundRobin).await;
    for n in 1..=4 {
        agent(&mut fleet, &format!("rr-{n}"), 16, |_| {}).await;
    }
    // Let every agent discover the queue and wait on it: route one task first.
    let warm = submit_all(
        &fleet,
        [json!({"tenant": "acme", "payload": {"op": "echo"}})],
    )
    .await;
    finals(&fleet, &warm).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let tasks =
        (0..40).map(|i| json!({"tenant": "acme", "payload": {"op": "sleep", "ms": 300, "i": i}}));
    let ids = submit_all(&fleet, tasks).await;
    let counts = first_agents(&finals(&fleet, &ids).await);
    assert_eq!(counts.len(), 4, "{counts:?}");
    for (agent, n) in &counts {
        assert!(
            (9..=11).contains(n),
            "{agent} ran {n} of 40 tasks (expected 10 ± 1): {counts:?}"
        );
    }
}

#[tokio::test]
async fn least_loaded_sends_more_work_to_spare_capacity_and_none_to_a_saturated_agent() {
    let mut fleet = Fleet::new().await;
    agent(&mut fleet, "small", 2, |_| {}).await;
    // Saturate the small agent before the big one exists.
    let long = submit_all(
        &fleet,
        (0..2).map(|_| json!({"tenant": "acme", "payload": {"op": "sleep", "ms": 2500}})),
    )
    .await;
    for id in &long {
        assert_eq!(
            wait_running(&fleet.client, id, FINISH).await.attempts[0].agent,
            "small"
        );
    }
    agent(&mut fleet, "big", 8, |_| {}).await;
    let short = submit_all(
        &fleet,
        (0..12).map(|_| json!({"tenant": "acme", "payload": {"op": "sleep", "ms": 100}})),
    )
    .await;
    let counts = first_agents(&finals(&fleet, &short).await);
    assert_eq!(
        counts.get("small"),
        None,
        "a saturated agent takes nothing: {counts:?}"
    );
    finals(&fleet, &long).await;

    // Both idle: the one with four times the slots takes several times the work.
    let many = submit_all(
        &fleet,
        (0..60).map(|_| json!({"tenant": "acme", "payload": {"op": "sleep", "ms": 150}})),
    )
    .await;
    let counts = first_agents(&finals(&fleet, &many).await);
    let (big, small) = (
        counts.get("big").copied().unwrap_or(0),
        counts.get("small").copied().unwrap_or(0),
    );
    assert!(big >= 2 * small.max(1), "big {big}, small {small}");
}

#[tokio::test]
async fn a_waiting_critical_task_preempts_a_low_one_but_not_one_that_opted_out() {
    let mut fleet = Fleet::new().await;
    agent(&mut fleet, "busy", 2, |c| {
        c.preemption.check_interval = Duration::from_millis(100);
    })
    .await;
    let low = submit_all(
        &fleet,
        [
            json!({"tenant": "acme", "priority": "low", "id": "low-yes", "payload": {"op": "sleep", "ms": 4000}}),
            json!({"tenant": "acme", "priority": "low", "id": "low-no", "preemptible": false, "payload": {"op": "sleep", "ms": 4000}}),
        ],
    )
    .await;
    for id in &low {
        wait_running(&fleet.client, id, FINISH).await;
    }
    let submitted = time::OffsetDateTime::now_utc();
    let critical = submit_all(
        &fleet,
        [json!({"tenant": "acme", "priority": "critical", "payload": {"op": "echo", "data": "urgent"}})],
    )
    .await
    .remove(0);
    let c = wait_final(&fleet.client, &critical, FINISH).await;
    assert_eq!(c.status, TaskStatus::Succeeded);
    let waited = c.attempts[0].started_at - submitted;
    assert!(
        waited < time::Duration::seconds(2),
        "the critical task waited {waited} (the low tasks run 4 s)"
    );

    let yes = task_get(&fleet.client, "low-yes").await.unwrap();
    assert_eq!(yes.attempts[0].outcome, Some(Outcome::Preempted), "{yes:?}");
    assert_eq!(
        yes.attempts[0].error.as_ref().unwrap().code,
        ErrorCode::Preempted
    );
    let no = task_get(&fleet.client, "low-no").await.unwrap();
    assert_eq!(no.attempts.len(), 1, "{no:?}");
    assert_eq!(no.attempts[0].outcome, None, "still running: {no:?}");

    // The preempted task runs again at its own priority, without losing an attempt.
    let yes = wait_final(&fleet.client, "low-yes", FINISH).await;
    assert_eq!(yes.status, TaskStatus::Succeeded);
    assert_eq!(yes.attempts.len(), 2);
    assert_eq!(
        yes.attempts[1].attempt, 1,
        "a preempted attempt is not charged"
    );
    assert_eq!(
        events_per_task(&fleet, "preempted").await.get("low-yes"),
        Some(&1)
    );
    assert_eq!(
        wait_final(&fleet.client, "low-no", FINISH)
            .await
            .attempts
            .len(),
        1
    );
}

#[tokio::test]
async fn residency_holds_under_a_mixed_load_and_a_preference_falls_back_after_its_wait() {
    let mut fleet =
        Fleet::with(|c| c.routing.prefer_region_wait = Duration::from_millis(1500)).await;
    fleet.agent("eu-1", &[], Some("eu")).await;
    fleet.agent("eu-2", &[], Some("eu")).await;
    fleet.agent("us-1", &[], Some("us")).await;
    fleet.agent("anywhere", &[], None).await;
    let regions = [Some("eu"), Some("us"), None];
    let tasks: Vec<Value> = (0..1000)
        .map(|i| {
            let mut t = json!({"tenant": format!("t{}", i % 3), "id": format!("mix-{i}"), "payload": {"op": "echo"}});
            if let Some(r) = regions[i % 3] {
                t["region"] = json!(r);
            }
            t
        })
        .collect();
    publish_intake_many(&fleet.js, tasks).await;
    let region_of = |agent: &str| agent.split('-').next().unwrap_or_default().to_string();
    for i in 0..1000 {
        let r = wait_final(&fleet.client, &format!("mix-{i}"), FINISH).await;
        assert_eq!(r.status, TaskStatus::Succeeded);
        if let Some(want) = regions[i % 3] {
            for a in &r.attempts {
                assert_eq!(region_of(&a.agent), want, "task mix-{i} ran on {}", a.agent);
            }
        }
    }

    // A preference is honoured while an agent of that region is free...
    let preferred = submit_all(
        &fleet,
        (0..10)
            .map(|_| json!({"tenant": "acme", "prefer_region": "eu", "payload": {"op": "echo"}})),
    )
    .await;
    for r in finals(&fleet, &preferred).await {
        assert!(r.attempts[0].agent.starts_with("eu-"), "{r:?}");
    }
    // ...and without any, the task runs elsewhere, but not before its wait.
    let lonely = submit_all(
        &fleet,
        [json!({"tenant": "acme", "prefer_region": "ap", "payload": {"op": "echo"}})],
    )
    .await
    .remove(0);
    let r = wait_final(&fleet.client, &lonely, FINISH).await;
    assert_eq!(r.status, TaskStatus::Succeeded);
    let waited = r.attempts[0].started_at - r.spec.submitted_at;
    assert!(
        waited >= time::Duration::milliseconds(1400),
        "ran {waited} after submission, before its 1.5 s preference ran out"
    );
}

#[tokio::test]
async fn dedicated_agents_never_cross_tenants_and_a_dedicated_only_tenant_uses_only_its_own() {
    let mut fleet = Fleet::with(|c| {
        c.tenants
            .insert("vip".into(), tenant(|t| t.dedicated_only = true));
        c.tenants
            .insert("solo".into(), tenant(|t| t.dedicated_only = true));
    })
    .await;
    agent(&mut fleet, "vip-agent", 8, |c| {
        c.tenants = vec!["vip".into()]
    })
    .await;
    agent(&mut fleet, "acme-agent", 8, |c| {
        c.tenants = vec!["acme".into()]
    })
    .await;
    agent(&mut fleet, "shared", 8, |_| {}).await;
    let tasks: Vec<Value> = (0..300)
        .map(|i| {
            let tenant = ["vip", "acme", "other"][i % 3];
            json!({"tenant": tenant, "id": format!("iso-{i}"), "payload": {"op": "echo"}})
        })
        .collect();
    publish_intake_many(&fleet.js, tasks).await;
    for i in 0..300 {
        let r = wait_final(&fleet.client, &format!("iso-{i}"), FINISH).await;
        let agent = &r.attempts[0].agent;
        match r.spec.tenant.as_str() {
            "vip" => assert_eq!(agent, "vip-agent", "a dedicated-only tenant ran elsewhere"),
            "acme" => assert_ne!(agent, "vip-agent"),
            _ => assert_eq!(
                agent, "shared",
                "another tenant's task ran on a dedicated agent"
            ),
        }
    }
    // A dedicated-only tenant without an agent of its own is refused, saying why.
    let refused = submit(&fleet.client, &json!({"tenant": "solo", "payload": {}}))
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::UnknownCapability);
    assert!(
        refused.message.contains("dedicated to tenant \"solo\""),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_flooding_tenant_does_not_starve_another_and_weights_share_the_fleet() {
    let mut fleet = Fleet::with(|c| {
        c.tenants.insert("heavy".into(), tenant(|t| t.weight = 3));
    })
    .await;
    for n in 1..=2 {
        agent(&mut fleet, &format!("f-{n}"), 8, |_| {}).await;
    }
    // The trickle tenant's queue exists already (its first task ever pays
    // for creating it, flood or not).
    let first = submit_all(
        &fleet,
        [json!({"tenant": "trickle", "payload": {"op": "echo"}})],
    )
    .await;
    finals(&fleet, &first).await;
    // 4,000 tasks of 20 ms on 16 slots: about 5 s of work ahead of anyone else.
    let flood = (0..4000).map(|i| {
        json!({"tenant": "flood", "id": format!("flood-{i}"), "payload": {"op": "sleep", "ms": 20}})
    });
    publish_intake_many(&fleet.js, flood).await;
    // Routed in arrival order (intake is one stream), then shared fairly.
    wait_for("the flood to be routed", FINISH, || async {
        let q: QueuesReply = request(&fleet.client, subjects::API_QUEUES_LIST, vec![])
            .await
            .unwrap();
        (q.intake_pending == 0).then_some(())
    })
    .await;
    let trickle = submit_all(
        &fleet,
        (0..5).map(|_| json!({"tenant": "trickle", "payload": {"op": "echo"}})),
    )
    .await;
    let mut worst = time::Duration::ZERO;
    for r in finals(&fleet, &trickle).await {
        worst = worst.max(r.attempts[0].started_at - r.spec.submitted_at);
    }
    let behind = task_get(&fleet.client, "flood-3999").await.unwrap();
    eprintln!("fairness: a trickle task waited at most {worst} behind a 4,000-task flood");
    assert_eq!(
        behind.status,
        TaskStatus::Queued,
        "the flood was still queued"
    );
    assert!(worst < time::Duration::milliseconds(500), "waited {worst}");

    // Weights: `heavy` (3) and `light` (1) both flood; over the first
    // second and a half, starts split about 3:1.
    let both = (0..2000).map(|i| {
        let t = if i % 2 == 0 { "heavy" } else { "light" };
        json!({"tenant": t, "id": format!("w-{i}"), "payload": {"op": "sleep", "ms": 20}})
    });
    let from = time::OffsetDateTime::now_utc();
    publish_intake_many(&fleet.js, both).await;
    let cutoff = from + time::Duration::milliseconds(1500);
    let mut started = HashMap::new();
    for i in 0..2000 {
        let r = wait_final(&fleet.client, &format!("w-{i}"), FINISH).await;
        if r.attempts[0].started_at < cutoff {
            *started.entry(r.spec.tenant.clone()).or_insert(0usize) += 1;
        }
    }
    let (heavy, light) = (started["heavy"] as f64, started["light"] as f64);
    eprintln!("weights 3:1 → started in the first 1.5 s {heavy} : {light}");
    assert!(
        (2.0..=4.5).contains(&(heavy / light)),
        "heavy {heavy} : light {light}"
    );
}

#[tokio::test]
async fn each_quota_gives_its_error_and_max_running_caps_a_tenants_concurrency() {
    let mut fleet = Fleet::with(|c| {
        c.profiles = vec![StaticProfile {
            name: "later".into(),
            capabilities: vec!["later".into()],
            region: None,
            tenants: vec![],
        }];
        c.tenants.insert(
            "hasty".into(),
            limited(Quota {
                submit_rate: Some(2.0),
                submit_burst: Some(3),
                ..Default::default()
            }),
        );
        c.tenants.insert(
            "hoarder".into(),
            limited(Quota {
                max_queued: Some(3),
                ..Default::default()
            }),
        );
        c.tenants.insert(
            "narrow".into(),
            limited(Quota {
                max_running: Some(2),
                ..Default::default()
            }),
        );
    })
    .await;
    agent(&mut fleet, "wide", 8, |_| {}).await;

    // Rate: a burst of 3, then refused with a clear error.
    for _ in 0..3 {
        submit(&fleet.client, &json!({"tenant": "hasty", "payload": {}}))
            .await
            .expect("within the burst");
    }
    let e = submit(&fleet.client, &json!({"tenant": "hasty", "payload": {}}))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::RateLimited, "{e:?}");

    // Queued: nothing can run `later` tasks yet, so they stay queued.
    for _ in 0..3 {
        submit(
            &fleet.client,
            &json!({"tenant": "hoarder", "requires": ["later"], "payload": {}}),
        )
        .await
        .expect("within the quota");
    }
    let e = submit(
        &fleet.client,
        &json!({"tenant": "hoarder", "requires": ["later"], "payload": {}}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::QuotaExceeded, "{e:?}");

    // Over the rate on intake: recorded as rejections, never dropped.
    publish_intake_many(
        &fleet.js,
        (0..10).map(|i| json!({"tenant": "hasty", "id": format!("hasty-{i}"), "payload": {}})),
    )
    .await;
    let dlq = subjects::dlq("rejected", "hasty");
    wait_for(
        "rate-limited intake to be dead-lettered",
        FINISH,
        || async {
            let n =
                crate::stream_subject_count(&fleet, clawfleet_shared::subjects::STREAM_DLQ, &dlq)
                    .await;
            (n >= 5).then_some(())
        },
    )
    .await;

    // Running: never more than 2 of the tenant's tasks at once on an 8-slot agent.
    let ids = submit_all(
        &fleet,
        (0..8).map(|_| json!({"tenant": "narrow", "payload": {"op": "sleep", "ms": 300}})),
    )
    .await;
    let records = finals(&fleet, &ids).await;
    assert_eq!(peak_running(&records), 2, "at most max_running at once");
}

/// The most attempts of these tasks that were running at one time.
fn peak_running(records: &[TaskRecord]) -> i32 {
    let mut edges: Vec<(time::OffsetDateTime, i32)> = Vec::new();
    for a in records.iter().flat_map(|r| &r.attempts) {
        edges.push((a.started_at, 1));
        edges.push((a.ended_at.expect("finished attempt"), -1));
    }
    // An attempt ending at the instant another starts was not running with it.
    edges.sort();
    let (mut now, mut peak) = (0, 0);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    peak
}

#[tokio::test]
async fn max_running_holds_across_all_of_a_tenants_queues() {
    let mut fleet = Fleet::with(|c| {
        c.tenants.insert(
            "narrow".into(),
            limited(Quota {
                max_running: Some(3),
                ..Default::default()
            }),
        );
    })
    .await;
    // Entries left behind: one by an agent that is gone (no registration),
    // one by an earlier process of agent `plain`. Neither may count: with
    // them, only 1 of the 3 slots would ever be free.
    let running = fleet
        .js
        .get_key_value(subjects::BUCKET_RUNNING)
        .await
        .expect("running bucket");
    running
        .put(
            "narrow",
            json!({"tasks": {"lost-task": "vanished-agent", "old-task": "plain"}})
                .to_string()
                .into(),
        )
        .await
        .expect("seed the running set");
    let running_set = || async {
        let entry = running.get("narrow").await.expect("read").expect("set");
        serde_json::from_slice::<clawfleet_shared::agent::RunningSet>(&entry).expect("running set")
    };
    agent(&mut fleet, "plain", 8, |_| {}).await;
    agent(&mut fleet, "coder", 8, |c| {
        c.capabilities = vec!["code".into()]
    })
    .await;
    // An agent clears its own leftovers as it starts; others' wait until
    // someone finds the set full.
    let set = running_set().await;
    assert_eq!(
        set.tasks.keys().collect::<Vec<_>>(),
        ["lost-task"],
        "plain's old entry went when plain started"
    );

    // Six queues (3 priorities × 2 capability sets), 3 tasks each: each
    // queue's own cap alone would let 16 run at once on these two agents.
    let mut tasks = Vec::new();
    for priority in ["low", "normal", "high"] {
        for requires in [json!([]), json!(["code"])] {
            for _ in 0..3 {
                tasks.push(json!({
                    "tenant": "narrow",
                    "priority": priority,
                    "requires": requires,
                    "payload": {"op": "sleep", "ms": 300}
                }));
            }
        }
    }
    let ids = submit_all(&fleet, tasks).await;
    // Operators see the tenant at its cap in the queue listing.
    wait_for(
        "the queue listing to show narrow at 3/3",
        FINISH,
        || async {
            let reply: QueuesReply = request(&fleet.client, subjects::API_QUEUES_LIST, Vec::new())
                .await
                .expect("queues.list");
            let narrow = reply.capped.iter().find(|t| t.tenant == "narrow")?;
            assert_eq!(narrow.max_running, 3);
            assert!(narrow.running <= 3, "{narrow:?}");
            (narrow.running == 3).then_some(())
        },
    )
    .await;
    let records = finals(&fleet, &ids).await;
    assert!(
        records.iter().all(|r| r.status == TaskStatus::Succeeded),
        "every task ran"
    );
    assert_eq!(
        peak_running(&records),
        3,
        "max_running across the tenant's six queues"
    );
    assert!(
        records.iter().all(|r| r.attempts.len() == 1),
        "waiting for a slot spends no attempt"
    );

    // Every task leaves the set again (just after its attempt ended), and
    // the vanished agent's entry is gone.
    wait_for("the running set to empty", FINISH, || async {
        running_set().await.tasks.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn dispatchers_share_a_tenants_submission_rate() {
    let configure = |c: &mut clawfleet_dispatcher::Config| {
        c.tenants.insert(
            "metered".into(),
            limited(Quota {
                // A token every 2 s: none comes back during the burst below.
                submit_rate: Some(0.5),
                submit_burst: Some(4),
                ..Default::default()
            }),
        );
    };
    let mut fleet = Fleet::with(configure).await;
    fleet.agent("a1", &[], None).await;
    let mut config = dispatcher_config(fleet.server.url());
    configure(&mut config);
    let second = start_dispatcher(config).await;
    // Each announces itself every second; give them time to hear each other.
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    // Requests spread over both dispatchers (their queue group). Each on
    // its own would admit a burst of 4, 8 in all; shared, 4 at most.
    let mut accepted = 0;
    for _ in 0..20 {
        match submit(&fleet.client, &json!({"tenant": "metered", "payload": {}})).await {
            Ok(_) => accepted += 1,
            Err(e) => assert_eq!(e.code, ErrorCode::RateLimited, "{e:?}"),
        }
    }
    assert!(
        (2..=4).contains(&accepted),
        "two dispatchers admitted {accepted} of a burst of 4"
    );
    second.stop().await;
}

#[tokio::test]
async fn paused_queues_keep_their_tasks_untouched_until_resumed() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &[], None).await;
    let pause = PauseRule {
        tenant: Some("acme".into()),
        ..Default::default()
    };
    let reply: PausedReply = request(
        &fleet.client,
        subjects::API_QUEUES_PAUSE,
        serde_json::to_vec(&pause).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(reply.paused, vec![pause.clone()]);
    let held = submit_all(
        &fleet,
        (0..5).map(|_| json!({"tenant": "acme", "payload": {"op": "echo"}})),
    )
    .await;
    let other = submit_all(
        &fleet,
        [json!({"tenant": "globex", "payload": {"op": "echo"}})],
    )
    .await;
    assert_eq!(
        finals(&fleet, &other).await[0].status,
        TaskStatus::Succeeded
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    for id in &held {
        let r = task_get(&fleet.client, id).await.unwrap();
        assert_eq!(r.status, TaskStatus::Queued);
        assert!(r.attempts.is_empty(), "a paused task was touched: {r:?}");
    }
    let reply: PausedReply = request(
        &fleet.client,
        subjects::API_QUEUES_RESUME,
        serde_json::to_vec(&pause).unwrap(),
    )
    .await
    .unwrap();
    assert!(reply.paused.is_empty());
    for r in finals(&fleet, &held).await {
        assert_eq!(r.status, TaskStatus::Succeeded);
    }
    // Pausing by priority holds that priority only.
    let low_only = PauseRule {
        priority: Some(Priority::Low),
        ..Default::default()
    };
    let _: PausedReply = request(
        &fleet.client,
        subjects::API_QUEUES_PAUSE,
        serde_json::to_vec(&low_only).unwrap(),
    )
    .await
    .unwrap();
    let low = submit_all(
        &fleet,
        [json!({"tenant": "acme", "priority": "low", "payload": {"op": "echo"}})],
    )
    .await;
    let high = submit_all(
        &fleet,
        [json!({"tenant": "acme", "priority": "high", "payload": {"op": "echo"}})],
    )
    .await;
    assert_eq!(finals(&fleet, &high).await[0].status, TaskStatus::Succeeded);
    assert_eq!(
        task_get(&fleet.client, &low[0]).await.unwrap().status,
        TaskStatus::Queued
    );
}

#[tokio::test]
async fn an_agent_joins_a_named_profile_and_gets_its_capabilities() {
    let mut fleet = Fleet::with(|c| {
        c.profiles = vec![StaticProfile {
            name: "coder".into(),
            capabilities: vec!["code".into(), "git".into()],
            region: None,
            tenants: vec![],
        }];
    })
    .await;
    agent(&mut fleet, "joiner", 4, |c| {
        c.profiles = vec!["coder".into()]
    })
    .await;
    let ids = submit_all(
        &fleet,
        [json!({"tenant": "acme", "requires": ["git"], "payload": {"op": "echo", "data": 1}})],
    )
    .await;
    let r = finals(&fleet, &ids).await.remove(0);
    assert_eq!(r.attempts[0].agent, "joiner");
    // An unknown profile is a start-up error.
    let mut bad = agent_config(fleet.server.url(), "lost", &[]);
    bad.profiles = vec!["nope".into()];
    let err = clawfleet_agent::start(bad, tokio_util::sync::CancellationToken::new())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("nope"), "{err}");
}
