//! Central logs: what services and agents ship is searchable through
//! `clawfleet.api.logs.search`, by text and by each filter, and retention
//! removes exactly what its policy says.

use std::time::Duration;

use clawfleet_agent::config::ExecutorConfig;
use clawfleet_log_aggregator::config::{TenantAges, TenantRetention};
use clawfleet_shared::logs::{Level, LogLine, LogSearchReply, LogSearchRequest, StoredLine};
use clawfleet_shared::task::Outcome;
use clawfleet_shared::{timefmt, ErrorCode, TaskStatus};
use clawfleet_testkit::client::{log_stats, search_logs, submit, wait_final, wait_logs};
use clawfleet_testkit::{log_aggregator_config, start_log_aggregator, wait_for, Service};
use serde_json::json;
use tempfile::TempDir;

use crate::{Fleet, FINISH};

/// Lines take a moment to be shipped, streamed and indexed.
const INDEXED: Duration = Duration::from_secs(20);

/// A fleet with a log aggregator (its index in a temporary directory).
async fn fleet_with_logs(
    configure: impl FnOnce(&mut clawfleet_log_aggregator::Config),
) -> (Fleet, Service, TempDir) {
    let fleet = Fleet::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = log_aggregator_config(fleet.server.url(), dir.path());
    configure(&mut config);
    let aggregator = start_log_aggregator(config).await;
    (fleet, aggregator, dir)
}

/// An agent whose command writes a line to stderr per task, then echoes
/// the payload, or fails when the payload says `fail`.
fn command_agent(fleet: &Fleet, id: &str, caps: &[&str], script: &str) -> clawfleet_agent::Config {
    let mut config = clawfleet_testkit::agent_config(fleet.server.url(), id, caps);
    config.executor = ExecutorConfig::Command {
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        probe: vec![],
    };
    config
}

fn crunching(id: &str) -> String {
    format!(
        r#"input=$(cat); echo "crunching $CLAWFLEET_TASK_ID on {id}" >&2; case "$input" in *fail*) echo "gave up" >&2; exit 3;; esac; printf '%s' "$input""#
    )
}

fn req() -> LogSearchRequest {
    LogSearchRequest {
        limit: Some(1000),
        ..Default::default()
    }
}

fn has(reply: &LogSearchReply, pred: impl Fn(&StoredLine) -> bool) -> bool {
    reply.lines.iter().any(pred)
}

fn says(l: &StoredLine, agent: Option<&str>, message: &str) -> bool {
    l.line.message.contains(message) && (agent.is_none() || l.line.agent_id.as_deref() == agent)
}

#[tokio::test]
async fn logs_from_three_agents_are_searchable_by_text_and_by_each_filter() {
    let (mut fleet, _aggregator, _dir) = fleet_with_logs(|_| {}).await;
    for (id, cap) in [("a1", "alpha"), ("a2", "beta"), ("a3", "gamma")] {
        let config = command_agent(&fleet, id, &[cap], &crunching(id));
        fleet.agent_with(config).await;
    }
    for (id, tenant, cap) in [
        ("t-alpha", "acme", "alpha"),
        ("t-beta", "globex", "beta"),
        ("t-gamma", "acme", "gamma"),
    ] {
        let task = json!({"id": id, "tenant": tenant, "requires": [cap], "payload": {"n": 1}});
        submit(&fleet.client, &task).await.expect("accepted");
    }
    for id in ["t-alpha", "t-beta", "t-gamma"] {
        assert_eq!(
            wait_final(&fleet.client, id, FINISH).await.status,
            TaskStatus::Succeeded
        );
    }
    let between = timefmt::now();
    let failing = json!({"id": "t-fail", "tenant": "globex", "requires": ["alpha"],
                         "max_attempts": 1, "payload": "fail"});
    submit(&fleet.client, &failing).await.expect("accepted");
    assert_eq!(
        wait_final(&fleet.client, "t-fail", FINISH).await.status,
        TaskStatus::Failed
    );

    // Full text over messages and field values: the programs' stderr lines
    // (not the failed attempt's line, which quotes them), each tagged with
    // its task.
    let text = LogSearchRequest {
        text: Some("crunching stderr".into()),
        ..req()
    };
    let found = wait_logs(&fleet.client, &text, "four stderr lines", INDEXED, |r| {
        r.lines.len() == 4
    })
    .await;
    for (task, tenant, agent) in [
        ("t-alpha", "acme", "a1"),
        ("t-beta", "globex", "a2"),
        ("t-gamma", "acme", "a3"),
        ("t-fail", "globex", "a1"),
    ] {
        let line = found
            .lines
            .iter()
            .find(|l| l.line.task_id.as_deref() == Some(task))
            .unwrap_or_else(|| panic!("no stderr line of {task}: {found:#?}"));
        assert_eq!(line.line.message, format!("crunching {task} on {agent}"));
        assert_eq!(line.line.tenant.as_deref(), Some(tenant));
        assert_eq!(line.line.agent_id.as_deref(), Some(agent));
        assert_eq!(line.line.service, "agent");
        assert_eq!(line.line.level, Level::Info);
        assert_eq!(line.line.fields["stream"], "stderr");
    }
    assert!(
        found.lines.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );
    assert_eq!(found.lines[0].line.task_id.as_deref(), Some("t-fail"));

    // By agent: a2's lines only, its stderr line among them.
    let by_agent = LogSearchRequest {
        agent_id: Some("a2".into()),
        ..req()
    };
    let a2 = wait_logs(&fleet.client, &by_agent, "a2's stderr line", INDEXED, |r| {
        has(r, |l| says(l, None, "crunching t-beta on a2"))
    })
    .await;
    assert!(a2
        .lines
        .iter()
        .all(|l| l.line.agent_id.as_deref() == Some("a2")));
    assert!(has(&a2, |l| l.line.message == "agent ready"));

    // By task: the dispatcher's and the agent's lines about t-gamma, nothing else.
    let by_task = LogSearchRequest {
        task_id: Some("t-gamma".into()),
        ..req()
    };
    let gamma = wait_logs(&fleet.client, &by_task, "t-gamma's story", INDEXED, |r| {
        has(r, |l| {
            l.line.service == "dispatcher" && says(l, None, "task queued")
        }) && has(r, |l| says(l, Some("a3"), "attempt succeeded"))
    })
    .await;
    assert!(gamma
        .lines
        .iter()
        .all(|l| l.line.task_id.as_deref() == Some("t-gamma")));
    assert!(has(&gamma, |l| says(l, Some("a3"), "crunching t-gamma")));

    // By tenant: globex's lines only (t-beta and t-fail).
    let by_tenant = LogSearchRequest {
        tenant: Some("globex".into()),
        ..req()
    };
    let globex = wait_logs(&fleet.client, &by_tenant, "globex's lines", INDEXED, |r| {
        has(r, |l| says(l, None, "crunching t-beta")) && has(r, |l| says(l, None, "gave up"))
    })
    .await;
    assert!(globex
        .lines
        .iter()
        .all(|l| l.line.tenant.as_deref() == Some("globex")));

    // By level: warnings and worse only; the failed attempt is one.
    let by_level = LogSearchRequest {
        level: Some(Level::Warn),
        ..req()
    };
    let warnings = wait_logs(
        &fleet.client,
        &by_level,
        "the failed attempt",
        INDEXED,
        |r| {
            has(r, |l| {
                l.line.task_id.as_deref() == Some("t-fail") && says(l, Some("a1"), "attempt failed")
            })
        },
    )
    .await;
    assert!(warnings.lines.iter().all(|l| l.line.level >= Level::Warn));

    // By service: the dispatcher's lines only, one "task queued" per task.
    let by_service = LogSearchRequest {
        service: Some("dispatcher".into()),
        text: Some("queued".into()),
        ..req()
    };
    let dispatcher = wait_logs(
        &fleet.client,
        &by_service,
        "four queued lines",
        INDEXED,
        |r| r.lines.len() == 4,
    )
    .await;
    assert!(dispatcher
        .lines
        .iter()
        .all(|l| l.line.service == "dispatcher"));

    // By time: `since` and `until` split the stderr lines at the moment
    // between the first three tasks and the failing one.
    let since = LogSearchRequest {
        since: Some(between),
        ..text.clone()
    };
    let after = search_logs(&fleet.client, &since).await.unwrap();
    assert_eq!(after.lines.len(), 1);
    assert_eq!(after.lines[0].line.task_id.as_deref(), Some("t-fail"));
    let until = LogSearchRequest {
        until: Some(between),
        ..text.clone()
    };
    let before = search_logs(&fleet.client, &until).await.unwrap();
    assert_eq!(before.lines.len(), 3);

    // Pages: two of two, then nothing more.
    let page1 = search_logs(
        &fleet.client,
        &LogSearchRequest {
            limit: Some(2),
            ..text.clone()
        },
    )
    .await
    .unwrap();
    let cursor = page1.next_cursor.clone().expect("a second page");
    let page2 = search_logs(
        &fleet.client,
        &LogSearchRequest {
            limit: Some(2),
            cursor: Some(cursor),
            ..text.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(page2.next_cursor, None);
    let ids: Vec<u64> = page1
        .lines
        .iter()
        .chain(&page2.lines)
        .map(|l| l.id)
        .collect();
    let all: Vec<u64> = found.lines.iter().map(|l| l.id).collect();
    assert_eq!(ids, all, "the pages are the whole result, in order");
}

#[tokio::test]
async fn a_tasks_whole_story_across_agents_is_found_by_its_id() {
    let (mut fleet, _aggregator, _dir) = fleet_with_logs(|_| {}).await;
    // a1's program always fails; its retry back-off leaves time to stop it,
    // so the second attempt runs on a2.
    let first = command_agent(
        &fleet,
        "a1",
        &["repo"],
        r#"cat >/dev/null; echo "a1 cannot reach the repository" >&2; exit 3"#,
    );
    fleet.agent_with(first).await;
    submit(
        &fleet.client,
        &json!({"id": "story-1", "tenant": "acme", "requires": ["repo"], "payload": {},
                "retry": {"backoff": "2s", "backoff_max": "2s"}}),
    )
    .await
    .expect("accepted");
    wait_for("the first attempt to fail", FINISH, || async {
        let record = clawfleet_testkit::client::task_get(&fleet.client, "story-1").await?;
        (record.attempts.first()?.outcome == Some(Outcome::Failed)).then_some(())
    })
    .await;
    fleet.take_agent("a1").stop().await;
    let second = command_agent(
        &fleet,
        "a2",
        &["repo"],
        r#"cat >/dev/null; echo "a2 cloned the repository" >&2; echo '"done"'"#,
    );
    fleet.agent_with(second).await;
    let record = wait_final(&fleet.client, "story-1", FINISH).await;
    assert_eq!(record.status, TaskStatus::Succeeded);
    assert_eq!(record.attempts.len(), 2);

    let story = LogSearchRequest {
        task_id: Some("story-1".into()),
        ..req()
    };
    let steps: [(Option<&str>, &str); 7] = [
        (None, "task queued"),
        (Some("a1"), "attempt started"),
        (Some("a1"), "a1 cannot reach the repository"),
        (Some("a1"), "attempt failed"),
        (Some("a2"), "attempt started"),
        (Some("a2"), "a2 cloned the repository"),
        (Some("a2"), "attempt succeeded"),
    ];
    let found = wait_logs(&fleet.client, &story, "every step", INDEXED, |r| {
        steps
            .iter()
            .all(|(agent, message)| has(r, |l| says(l, *agent, message)))
    })
    .await;
    assert!(found
        .lines
        .iter()
        .all(|l| l.line.task_id.as_deref() == Some("story-1")
            && l.line.tenant.as_deref() == Some("acme")));
    assert!(has(&found, |l| l.line.service == "dispatcher"));
    // Everything a1 said about the task came before anything a2 said.
    let last_a1 = found
        .lines
        .iter()
        .filter(|l| l.line.agent_id.as_deref() == Some("a1"))
        .map(|l| l.id)
        .max();
    let first_a2 = found
        .lines
        .iter()
        .filter(|l| l.line.agent_id.as_deref() == Some("a2"))
        .map(|l| l.id)
        .min();
    assert!(last_a1 < first_a2, "{found:#?}");

    // The id as text (what `clawfleet logs story-1` sends) finds the same
    // story: the lines about the task, not only those that mention it.
    let by_text = LogSearchRequest {
        text: Some("\"story-1\"".into()),
        ..req()
    };
    let told = search_logs(&fleet.client, &by_text).await.unwrap();
    for (agent, message) in &steps {
        assert!(
            has(&told, |l| says(l, *agent, message)),
            "{message} missing from {told:#?}"
        );
    }
}

/// Publishes a line as any NATS client may, with its own time.
async fn publish_line(fleet: &Fleet, line: &LogLine) -> usize {
    let body = serde_json::to_vec(line).unwrap();
    let size = body.len();
    fleet
        .client
        .publish(line.subject(), body.into())
        .await
        .unwrap();
    size
}

fn aged(level: Level, tenant: Option<&str>, message: &str, ago: Duration) -> LogLine {
    let mut line = LogLine::new(level, "importer", message);
    line.time = timefmt::now() - ago;
    line.tenant = tenant.map(str::to_string);
    line
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test]
async fn retention_by_age_removes_exactly_the_lines_past_their_limit() {
    // Defaults: debug 1 day, info 14 days, error 90 days; vip keeps info 60 days.
    let (fleet, _aggregator, _dir) = fleet_with_logs(|c| {
        c.retention.tenants.insert(
            "vip".into(),
            TenantRetention {
                max_age: TenantAges {
                    info: Some(60 * DAY),
                    ..Default::default()
                },
                max_bytes: None,
            },
        );
    })
    .await;
    let lines = [
        (aged(Level::Debug, None, "marker old debug", 2 * DAY), false),
        (aged(Level::Debug, None, "marker fresh debug", HOUR), true),
        (
            aged(Level::Info, Some("acme"), "marker old info acme", 20 * DAY),
            false,
        ),
        (
            aged(Level::Info, Some("vip"), "marker old info vip", 20 * DAY),
            true,
        ),
        (
            aged(
                Level::Info,
                Some("vip"),
                "marker ancient info vip",
                70 * DAY,
            ),
            false,
        ),
        (aged(Level::Error, None, "marker old error", 20 * DAY), true),
        (
            aged(Level::Error, None, "marker ancient error", 100 * DAY),
            false,
        ),
    ];
    for (line, _) in &lines {
        publish_line(&fleet, line).await;
    }
    let stats = wait_for("retention to remove four lines", INDEXED, || async {
        let s = log_stats(&fleet.client).await;
        (s.removed_by_age.values().sum::<u64>() >= 4 && s.retention_runs > 0).then_some(s)
    })
    .await;
    assert_eq!(
        stats.removed_by_age,
        [(Level::Debug, 1), (Level::Info, 2), (Level::Error, 1)].into(),
        "{stats:#?}"
    );
    assert!(stats.removed_by_size.is_empty());
    let kept = search_logs(
        &fleet.client,
        &LogSearchRequest {
            text: Some("marker".into()),
            ..req()
        },
    )
    .await
    .unwrap();
    let mut kept: Vec<&str> = kept.lines.iter().map(|l| l.line.message.as_str()).collect();
    kept.sort();
    let mut expected: Vec<&str> = lines
        .iter()
        .filter(|(_, keep)| *keep)
        .map(|(l, _)| l.message.as_str())
        .collect();
    expected.sort();
    assert_eq!(kept, expected);
}

#[tokio::test]
async fn retention_by_size_removes_a_tenants_least_severe_oldest_lines_just_enough() {
    let levels = [
        Level::Error,
        Level::Debug,
        Level::Info,
        Level::Debug,
        Level::Info,
        Level::Warn,
    ];
    let lines: Vec<LogLine> = levels
        .iter()
        .enumerate()
        .map(|(i, level)| {
            aged(
                *level,
                Some("big"),
                &format!("sized line {i}"),
                Duration::from_secs(60 - i as u64),
            )
        })
        .collect();
    let sizes: Vec<usize> = lines
        .iter()
        .map(|l| serde_json::to_vec(l).unwrap().len())
        .collect();
    // Room for everything but the two debug lines.
    let max = sizes.iter().sum::<usize>() - sizes[1] - sizes[3];
    let (fleet, _aggregator, _dir) = fleet_with_logs(|c| {
        c.retention.tenants.insert(
            "big".into(),
            TenantRetention {
                max_bytes: Some(max as u64),
                ..Default::default()
            },
        );
    })
    .await;
    let other = aged(
        Level::Debug,
        Some("small"),
        "sized line of another tenant",
        HOUR,
    );
    publish_line(&fleet, &other).await;
    for line in &lines {
        publish_line(&fleet, line).await;
    }
    let stats = wait_for("all lines in and the quota kept", INDEXED, || async {
        let s = log_stats(&fleet.client).await;
        let big = s.tenants.get("big").copied().unwrap_or_default();
        (big.lines == 4 && s.removed_by_size.values().sum::<u64>() == 2).then_some(s)
    })
    .await;
    assert_eq!(stats.removed_by_size, [(Level::Debug, 2)].into());
    assert_eq!(stats.tenants["big"].bytes, max as u64);
    assert_eq!(stats.tenants["small"].lines, 1);
    let kept = search_logs(
        &fleet.client,
        &LogSearchRequest {
            text: Some("sized".into()),
            ..req()
        },
    )
    .await
    .unwrap();
    let kept: Vec<&str> = kept.lines.iter().map(|l| l.line.message.as_str()).collect();
    assert_eq!(
        kept,
        [
            "sized line 5",
            "sized line 4",
            "sized line 2",
            "sized line 0",
            "sized line of another tenant"
        ]
    );
}

#[tokio::test]
async fn a_bad_search_gets_a_clear_error() {
    let (fleet, _aggregator, _dir) = fleet_with_logs(|_| {}).await;
    let search = |req: LogSearchRequest| {
        let client = fleet.client.clone();
        async move { search_logs(&client, &req).await.unwrap_err() }
    };
    let e = search(LogSearchRequest {
        text: Some("\"unbalanced".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(e.code, ErrorCode::InvalidQuery);
    assert!(e.message.contains("unterminated string"), "{e}");

    let e = search(LogSearchRequest {
        cursor: Some("page-two".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(e.code, ErrorCode::InvalidRequest);
    assert!(e.message.contains("cursor"), "{e}");

    let now = timefmt::now();
    let e = search(LogSearchRequest {
        since: Some(now),
        until: Some(now - HOUR),
        ..Default::default()
    })
    .await;
    assert_eq!(e.code, ErrorCode::InvalidRequest);
    assert!(e.message.contains("since"), "{e}");

    for body in [
        &br#"{"level": "loud"}"#[..],
        br#"{"txt": "typo"}"#,
        b"not json",
    ] {
        let e = clawfleet_testkit::client::request::<LogSearchReply>(
            &fleet.client,
            clawfleet_shared::subjects::API_LOGS_SEARCH,
            body.to_vec(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest, "{e}");
    }
}

/// Runs `n` quick tasks through the fleet; returns how long from the first
/// submission to the last result.
async fn timed_batch(fleet: &Fleet, tag: &str, n: usize) -> Duration {
    let before = clawfleet_testkit::client::stream_messages(
        &fleet.js,
        clawfleet_shared::subjects::STREAM_RESULTS,
    )
    .await;
    let started = std::time::Instant::now();
    clawfleet_testkit::client::publish_intake_many(
        &fleet.js,
        (0..n).map(|i| json!({"id": format!("{tag}-{i}"), "tenant": "acme", "payload": {"op": "echo", "data": i}})),
    )
    .await;
    wait_for(
        "every task of the batch to finish",
        Duration::from_secs(120),
        || async {
            let now = clawfleet_testkit::client::stream_messages(
                &fleet.js,
                clawfleet_shared::subjects::STREAM_RESULTS,
            )
            .await;
            (now >= before + n as u64).then_some(())
        },
    )
    .await;
    started.elapsed()
}

#[tokio::test]
async fn a_stalled_aggregator_does_not_slow_task_work() {
    const N: usize = 2000;
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &[], None).await;
    fleet.agent("a2", &[], None).await;
    // Warm up, then the same work without any aggregator...
    timed_batch(&fleet, "warm", 300).await;
    let without = timed_batch(&fleet, "without", N).await;

    // ...and with one that indexes nothing: the test holds its index's
    // write lock, so every batch it tries to commit waits and fails.
    let dir = tempfile::tempdir().unwrap();
    let config = log_aggregator_config(fleet.server.url(), dir.path());
    let db = config.db_path();
    let _aggregator = start_log_aggregator(config).await;
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let with = timed_batch(&fleet, "stalled", N).await;

    let rate = |d: Duration| N as f64 / d.as_secs_f64();
    eprintln!(
        "{N} tasks: {:.0} tasks/s without an aggregator, {:.0} tasks/s with a stalled one (ratio {:.2})",
        rate(without),
        rate(with),
        rate(with) / rate(without)
    );
    // The aggregator really was behind: lines wait for it in the stream.
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = fleet
        .js
        .get_consumer_from_stream(
            clawfleet_shared::subjects::CONSUMER_LOG_AGGREGATOR,
            clawfleet_shared::subjects::STREAM_LOGS,
        )
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert!(
        info.num_pending + info.num_ack_pending as u64 > 0,
        "the stalled aggregator kept up: {info:?}"
    );
    // Generous against a noisy shared machine; shipping is fire-and-forget,
    // so a stalled aggregator should cost nothing at all.
    assert!(
        rate(with) >= 0.5 * rate(without),
        "a stalled aggregator slowed task work: {without:?} without, {with:?} with"
    );

    // Released, it catches up: the stalled phase's lines become searchable.
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    wait_logs(
        &fleet.client,
        &LogSearchRequest {
            task_id: Some(format!("stalled-{}", N - 1)),
            ..req()
        },
        "the last stalled task's lines",
        Duration::from_secs(60),
        |r| !r.lines.is_empty(),
    )
    .await;
}
