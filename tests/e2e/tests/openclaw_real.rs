//! Real OpenClaw gateways under clawfleet agents.
//!
//! Two `clawfleet-agent` processes each supervise a real OpenClaw gateway
//! (Node.js and the `openclaw` package from `scripts/setup-openclaw`), whose
//! only model provider is an in-process fake OpenAI-compatible server, so
//! nothing leaves the machine. Tasks go in through a real dispatcher on a
//! real nats-server. The test then kills one gateway process (SIGKILL, the
//! agent lives on) while it runs a task, and checks that the task finishes
//! on the other agent and that the agent restarts its gateway, which then
//! runs tasks again.
//!
//! Each gateway takes 1–1.5 GB of memory and 20–40 s to start. Without the
//! tools the test fails and says how to install them;
//! `CLAWFLEET_SKIP_OPENCLAW=1` skips it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use clawfleet_shared::agent::{AgentInfo, ExecutorHealth};
use clawfleet_shared::analytics::SummaryReply;
use clawfleet_shared::events::AgentEvent;
use clawfleet_shared::{subjects, TaskRecord, TaskStatus};
use clawfleet_testkit::client::{submit, wait_final};
use clawfleet_testkit::fake_llm::FakeLlm;
use clawfleet_testkit::openclaw_tools::{self, OpenclawTools};
use clawfleet_testkit::{
    dispatcher_config, start_dispatcher, AgentProcess, NatsServer, ProcessOptions,
};
use futures::StreamExt;
use serde_json::json;

/// The whole test, on a loaded 2-core machine.
const WHOLE_TEST: Duration = Duration::from_secs(290);
/// Registration of an agent: its gateway's start-up and warm-up.
const AGENT_UP: Duration = Duration::from_secs(200);
/// A task on a warm gateway.
const TASK: Duration = Duration::from_secs(90);
/// A gateway's restart and warm-up after a crash.
const RESTART: Duration = Duration::from_secs(200);

/// Set to `1` to keep the agents' logs and the gateways' state directories.
const KEEP_ENV: &str = "CLAWFLEET_OPENCLAW_E2E_KEEP";

/// The test's directory, removed at the end unless kept.
enum KeptDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl KeptDir {
    fn path(&self) -> &Path {
        match self {
            KeptDir::Temp(d) => d.path(),
            KeptDir::Kept(p) => p,
        }
    }
}

/// One agent process and its gateway's state directory.
struct Agent {
    process: AgentProcess,
    state_dir: PathBuf,
    log: PathBuf,
}

impl Agent {
    /// The gateway's pid, from the pid file the agent writes.
    fn gateway_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.state_dir.join("gateway.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// Prints the end of the agents' logs when the test fails.
struct Logs(Vec<PathBuf>);

impl Drop for Logs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for log in &self.0 {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(80);
            eprintln!("---- {} (last {} lines)", log.display(), lines.len() - from);
            for line in &lines[from..] {
                eprintln!("{line}");
            }
        }
    }
}

async fn start_agent(
    nats_url: &str,
    tools: &OpenclawTools,
    llm: &FakeLlm,
    dir: &Path,
    id: &str,
) -> Agent {
    let state_dir = dir.join(format!("{id}-gateway"));
    let config = dir.join(format!("{id}.toml"));
    let log = dir.join(format!("{id}.log"));
    std::fs::write(
        &config,
        openclaw_tools::supervised_agent_toml(
            tools,
            &state_dir,
            &llm.provider(),
            &["openclaw", id],
        ),
    )
    .expect("write the agent config");
    let process = AgentProcess::start_with(
        nats_url,
        id,
        &[
            ("CLAWFLEET_CONFIG", config.to_str().expect("a UTF-8 path")),
            ("CLAWFLEET_HEALTH_CHECK_INTERVAL", "250ms"),
            ("CLAWFLEET_RESTART_BACKOFF", "250ms"),
            ("CLAWFLEET_DRAIN_TIMEOUT", "10s"),
            ("RUST_LOG", "info"),
        ],
        &ProcessOptions {
            register_within: AGENT_UP,
            log: Some(log.clone()),
        },
    )
    .await;
    Agent {
        process,
        state_dir,
        log,
    }
}

async fn agent_info(js: &jetstream::Context, id: &str) -> Option<AgentInfo> {
    let kv = js.get_key_value(subjects::BUCKET_AGENTS).await.ok()?;
    let bytes = kv.get(id).await.ok()??;
    serde_json::from_slice(&bytes).ok()
}

async fn run_task(client: &async_nats::Client, requires: &[&str], message: &str) -> TaskRecord {
    let reply = submit(
        client,
        &json!({"tenant": "acme", "requires": requires, "max_attempts": 3, "timeout": "3m",
                "payload": {"message": message}}),
    )
    .await
    .expect("accepted");
    wait_final(client, &reply.id, TASK).await
}

/// The task succeeded with the fake model's answer, relayed by a gateway
/// with its token usage.
fn assert_answered(record: &TaskRecord, message: &str) {
    assert_eq!(record.status, TaskStatus::Succeeded, "{record:?}");
    let result = record.result.as_ref().expect("a result");
    assert_eq!(result["text"], format!("ECHO: {message}"), "{result}");
    assert_eq!(result["model"], "openclaw/main", "{result}");
    let usage = &result["usage"];
    // OpenClaw's system prompt alone is thousands of words.
    assert!(
        usage["tokens_in"].as_u64().is_some_and(|n| n > 100),
        "{result}"
    );
    assert_eq!(
        usage["tokens_out"].as_u64(),
        Some(1 + message.split_whitespace().count() as u64),
        "{result}"
    );
}

fn rss_mib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

fn alive(pid: i32) -> bool {
    // A zombie still has a /proc entry; its state is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervised_openclaw_gateways_run_tasks_and_a_killed_gateway_is_restarted() {
    let Some(tools) = openclaw_tools::require() else {
        return;
    };
    clawfleet_testkit::init_tracing();
    tokio::time::timeout(WHOLE_TEST, scenario(tools))
        .await
        .unwrap_or_else(|_| panic!("the test took longer than {WHOLE_TEST:?}"));
}

async fn scenario(tools: OpenclawTools) {
    let began = Instant::now();
    let dir = tempfile::TempDir::with_prefix("clawfleet-openclaw-e2e-").expect("a temp dir");
    // The agents' logs and the gateways' state directories, for a look afterwards.
    let dir = if std::env::var_os(KEEP_ENV).is_some_and(|v| v == "1") {
        eprintln!(
            "keeping the agents' logs and gateway state in {}",
            dir.path().display()
        );
        KeptDir::Kept(dir.keep())
    } else {
        KeptDir::Temp(dir)
    };
    let server = NatsServer::start();
    let _dispatcher = start_dispatcher(dispatcher_config(server.url())).await;
    // A log aggregator prices each attempt by its tokens.
    let mut aggregator = clawfleet_testkit::log_aggregator_config(server.url(), dir.path());
    aggregator.analytics.prices.models.insert(
        "openclaw/main".into(),
        clawfleet_log_aggregator::config::ModelPrice {
            input_per_million: 2.0,
            output_per_million: 8.0,
        },
    );
    let _aggregator = clawfleet_testkit::start_log_aggregator(aggregator).await;
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    let llm = FakeLlm::start().await;
    let mut restarted = client
        .subscribe(subjects::agent_event("executor_restarted", "*"))
        .await
        .expect("subscribe");

    // Two agents, each starting its own gateway (at the same time).
    let _logs = Logs(vec![
        dir.path().join("oc-a.log"),
        dir.path().join("oc-b.log"),
    ]);
    let (a, b) = tokio::join!(
        start_agent(server.url(), &tools, &llm, dir.path(), "oc-a"),
        start_agent(server.url(), &tools, &llm, dir.path(), "oc-b"),
    );
    let mut agents = vec![a, b];
    eprintln!("two agents with ready gateways after {:?}", began.elapsed());
    for agent in &agents {
        let pid = agent.gateway_pid().expect("a gateway pid file");
        assert!(alive(pid), "gateway {pid} runs");
        let info = agent_info(&js, &agent.process.id)
            .await
            .expect("registered");
        assert_eq!(info.executor, "openclaw");
        assert_eq!(info.executor_health, ExecutorHealth::Ready);
    }
    // The warm-up turns reached the model.
    assert!(llm.calls().len() >= 2, "{:?}", llm.calls());

    // Tasks for either agent, and one for each in particular, at once.
    let phase = Instant::now();
    let messages = [
        (vec!["openclaw"], "first question for the fleet"),
        (vec!["openclaw"], "second question for the fleet"),
        (vec!["openclaw", "oc-a"], "a question only oc-a takes"),
        (vec!["openclaw", "oc-b"], "a question only oc-b takes"),
    ];
    let records = futures::future::join_all(
        messages
            .iter()
            .map(|(requires, message)| run_task(&client, requires, message)),
    )
    .await;
    for ((requires, message), record) in messages.iter().zip(&records) {
        assert_answered(record, message);
        let ran_on = &record.attempts.last().expect("an attempt").agent;
        if let Some(pinned) = requires.get(1) {
            assert_eq!(ran_on, pinned);
        }
    }
    // Their cost: the tokens each gateway reported, at the model's prices.
    let expected: i64 = records
        .iter()
        .map(|r| {
            let u = &r.result.as_ref().expect("a result")["usage"];
            let tokens = |k: &str| u[k].as_u64().unwrap_or(0) as i64;
            tokens("tokens_in") * 2 + tokens("tokens_out") * 8
        })
        .sum();
    let attempts: u64 = records.iter().map(|r| r.attempts.len() as u64).sum();
    let cost: SummaryReply = clawfleet_testkit::wait_for("the attempts priced", TASK, || async {
        let c: SummaryReply = clawfleet_testkit::client::request(
            &client,
            subjects::API_ANALYTICS_COST,
            b"{}".to_vec(),
        )
        .await
        .ok()?;
        (c.total.attempts >= attempts).then_some(c)
    })
    .await;
    assert!(expected > 0);
    assert_eq!((cost.total.cost * 1e6).round() as i64, expected, "{cost:?}");
    let tokens_in: u64 = records
        .iter()
        .map(|r| {
            r.result.as_ref().unwrap()["usage"]["tokens_in"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(cost.total.tokens_in, tokens_in);
    eprintln!(
        "4 tasks answered in {:?}; gateway RSS: oc-a {} MiB, oc-b {} MiB",
        phase.elapsed(),
        rss_mib(agents[0].gateway_pid().unwrap_or(0)),
        rss_mib(agents[1].gateway_pid().unwrap_or(0)),
    );

    // A task held by the model; its gateway is killed while it waits.
    let held = "wait here FAKE_LLM_HOLD_ONCE for a while";
    let reply = submit(
        &client,
        &json!({"tenant": "acme", "requires": ["openclaw"], "max_attempts": 3, "timeout": "3m",
                "payload": {"message": held}}),
    )
    .await
    .expect("accepted");
    let deadline = Instant::now() + TASK;
    while !llm.calls().iter().any(|c| c.text == held) {
        assert!(
            Instant::now() < deadline,
            "the held task never reached the model"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let running = clawfleet_testkit::client::task_get(&client, &reply.id)
        .await
        .expect("a record");
    let victim_id = running.attempts.last().expect("an attempt").agent.clone();
    let (victim, survivor) = if victim_id == "oc-a" { (0, 1) } else { (1, 0) };
    let killed = agents[victim].gateway_pid().expect("a gateway pid");
    let crash = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(killed),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the gateway");
    eprintln!("killed gateway {killed} of {victim_id}");

    // The task finishes on the other agent.
    let record = wait_final(&client, &reply.id, TASK).await;
    assert_answered(&record, held);
    assert_eq!(
        record.attempts.first().map(|a| a.agent.as_str()),
        Some(victim_id.as_str())
    );
    assert_eq!(
        record.attempts.last().map(|a| a.agent.as_str()),
        Some(agents[survivor].process.id.as_str()),
        "{record:?}"
    );
    eprintln!(
        "the held task finished on the other agent {:?} after the kill",
        crash.elapsed()
    );
    assert!(
        agents[victim].process.is_running(),
        "the agent itself lives on"
    );

    // The victim's agent restarts its gateway, counts it and says so.
    let event = tokio::time::timeout(RESTART, restarted.next())
        .await
        .expect("an executor_restarted event")
        .expect("subscription open");
    let event: AgentEvent = serde_json::from_slice(&event.payload).expect("an agent event");
    assert_eq!(event.agent_id, victim_id, "{event:?}");
    assert!(
        event
            .reason
            .as_deref()
            .is_some_and(|r| !r.contains("failed")),
        "{event:?}"
    );
    let deadline = Instant::now() + RESTART;
    loop {
        let info = agent_info(&js, &victim_id).await.expect("registered");
        if info.restarts >= 1 && info.executor_health == ExecutorHealth::Ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ready gateway after the restart: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let replacement = agents[victim].gateway_pid().expect("a new gateway pid");
    assert_ne!(replacement, killed);
    assert!(alive(replacement));
    eprintln!(
        "{victim_id} restarted its gateway ({replacement}) {:?} after the kill",
        crash.elapsed()
    );

    // The new gateway runs tasks.
    let message = "a question after the restart";
    let record = run_task(&client, &["openclaw", &victim_id], message).await;
    assert_answered(&record, message);
    assert_eq!(
        record.attempts.last().map(|a| a.agent.as_str()),
        Some(victim_id.as_str())
    );

    // Stopping an agent stops its gateway.
    let gateways: Vec<i32> = agents.iter().filter_map(Agent::gateway_pid).collect();
    for agent in agents.drain(..) {
        let Agent { process, log, .. } = agent;
        assert!(
            process.terminate(Duration::from_secs(30)).await,
            "the agent stopped on SIGTERM (log: {})",
            log.display()
        );
    }
    for pid in gateways {
        assert!(!alive(pid), "gateway {pid} stopped with its agent");
    }
    let calls = llm.calls();
    assert!(
        calls.iter().all(|c| c.stream),
        "the gateway streams from the model"
    );
    eprintln!("done in {:?}; {} model calls", began.elapsed(), calls.len());
}
