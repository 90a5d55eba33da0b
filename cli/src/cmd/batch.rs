//! `clawfleet batch FILE`: submit a JSONL file, one task per line, and wait
//! for every accepted task's result.
//!
//! Results are followed from the results stream starting *before* the first
//! submission, so a task that finishes before its own reply arrives is still
//! counted. A duplicate of a task that already finished is counted from the
//! status in its reply (or, if it finished in between, from its stored
//! result). Counts are per line for `submitted`, `duplicates` and
//! `rejected`, and per distinct task for `succeeded` and `failed`.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clawfleet_shared::api::SubmitReply;
use clawfleet_shared::config::is_token;
use clawfleet_shared::{subjects, ErrorBody, ErrorCode, TaskStatus};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use super::Global;
use crate::client::Api;
use crate::{output, results};

/// Rejected lines shown per error code in the human summary.
const EXAMPLES_PER_CODE: usize = 3;

/// Options of `clawfleet batch`.
#[derive(Debug, clap::Args)]
pub struct BatchArgs {
    /// JSONL file, one task per line (`-` for stdin); blank lines are skipped.
    file: PathBuf,
    /// Submissions in flight at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// How long to wait for all results after submitting.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    wait_timeout: Duration,
    /// Submit only; do not wait for results.
    #[arg(long)]
    no_wait: bool,
}

/// One non-blank line of the file.
struct Line {
    number: usize,
    text: String,
    /// `None` when the line is not JSON at all.
    json: Option<Value>,
}

impl Line {
    fn tenant(&self) -> Option<&str> {
        self.json.as_ref()?.get("tenant")?.as_str()
    }
}

/// What `--json` prints.
#[derive(Debug, Default, Serialize)]
struct Summary {
    /// Non-blank lines sent (or refused locally).
    submitted: u64,
    /// Lines accepted as a duplicate of a known task id.
    duplicates: u64,
    /// Lines refused.
    rejected: u64,
    rejected_by_code: BTreeMap<String, u64>,
    /// Distinct accepted tasks that succeeded.
    succeeded: u64,
    /// Distinct accepted tasks that failed (or were cancelled).
    failed: u64,
    /// Distinct accepted tasks with no result yet (all of them with `--no-wait`).
    unfinished: u64,
    elapsed_ms: u64,
}

/// Distinct accepted tasks, by (tenant, id), and where each one stands.
#[derive(Default)]
struct Tasks {
    status: HashMap<(String, String), Option<TaskStatus>>,
}

impl Tasks {
    fn accept(&mut self, tenant: &str, reply: &SubmitReply) {
        let known = reply.status.is_final().then_some(reply.status);
        let entry = self
            .status
            .entry((tenant.to_string(), reply.id.clone()))
            .or_default();
        if entry.is_none() {
            *entry = known;
        }
    }

    /// Records a result; true when it finished a task of this batch.
    fn finish(&mut self, tenant: &str, id: &str, status: TaskStatus) -> bool {
        match self.status.get_mut(&(tenant.to_string(), id.to_string())) {
            Some(slot @ None) => {
                *slot = Some(status);
                true
            }
            _ => false,
        }
    }

    fn count(&self, wanted: impl Fn(Option<TaskStatus>) -> bool) -> u64 {
        self.status.values().filter(|s| wanted(**s)).count() as u64
    }
}

/// Submits every line, waits for the results, prints the summary.
pub async fn run(global: &Global, args: BatchArgs) -> anyhow::Result<ExitCode> {
    let lines = read_lines(&args.file).await?;
    let started = Instant::now();
    let api = Api::connect(global.url()).await?;

    let mut tenants: Vec<String> = lines
        .iter()
        .filter_map(Line::tenant)
        .filter(|t| is_token(t, 64))
        .map(str::to_string)
        .collect();
    tenants.sort();
    tenants.dedup();
    let mut following = if args.no_wait || tenants.is_empty() {
        None
    } else {
        Some(results::follow(&api, &tenants).await?)
    };

    let show = !global.json && std::io::stderr().is_terminal();
    let bar = progress(show, lines.len() as u64, "submitting");
    let mut summary = Summary {
        submitted: lines.len() as u64,
        ..Default::default()
    };
    let mut examples: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    let mut reject = |summary: &mut Summary, number: usize, code: String, message: String| {
        summary.rejected += 1;
        *summary.rejected_by_code.entry(code.clone()).or_default() += 1;
        let list = examples.entry(code).or_default();
        if list.len() < EXAMPLES_PER_CODE {
            list.push((number, message));
        }
    };
    let mut tasks = Tasks::default();

    let mut replies = futures::stream::iter(lines.iter().filter(|l| l.json.is_some()))
        .map(|line| {
            let api = api.clone();
            async move {
                let body = Bytes::copy_from_slice(line.text.as_bytes());
                (
                    line,
                    api.call::<SubmitReply>(subjects::API_SUBMIT, body).await,
                )
            }
        })
        .buffer_unordered(args.concurrency as usize);
    for line in lines.iter().filter(|l| l.json.is_none()) {
        reject(
            &mut summary,
            line.number,
            ErrorCode::InvalidJson.to_string(),
            "line is not valid JSON".into(),
        );
        bar.inc(1);
    }
    let mut unreachable: Option<ErrorBody> = None;
    let mut recheck = Vec::new();
    while let Some((line, outcome)) = replies.next().await {
        bar.inc(1);
        match outcome {
            Ok(Ok(reply)) => {
                // An accepted task always has a tenant.
                let tenant = line.tenant().unwrap_or_default();
                if reply.duplicate {
                    summary.duplicates += 1;
                    if !reply.status.is_final() {
                        recheck.push((tenant.to_string(), reply.id.clone()));
                    }
                }
                tasks.accept(tenant, &reply);
            }
            Ok(Err(error)) => reject(
                &mut summary,
                line.number,
                error.code.to_string(),
                error.message,
            ),
            Err(e) => {
                let error = match e.downcast::<ErrorBody>() {
                    Ok(body) => body,
                    Err(other) => ErrorBody::new(ErrorCode::Unavailable, format!("{other:#}")),
                };
                reject(
                    &mut summary,
                    line.number,
                    error.code.to_string(),
                    error.message.clone(),
                );
                unreachable.get_or_insert(error);
            }
        }
    }
    drop(replies);
    bar.finish_and_clear();
    if tasks.status.is_empty() {
        if let Some(error) = unreachable {
            return Err(error.into());
        }
    }

    if let Some(rx) = following.as_mut() {
        let bar = progress(show, tasks.status.len() as u64, "waiting for results");
        // A duplicate of a task that was still running when the dispatcher
        // answered may have finished before we started following: its result
        // is stored already. Anything finishing later arrives on `rx`.
        for (tenant, id) in &recheck {
            if let Some(result) = results::last(&api, tenant, id).await {
                tasks.finish(tenant, id, result.status);
            }
        }
        let mut remaining = tasks.count(|s| s.is_none());
        bar.set_position(tasks.status.len() as u64 - remaining);
        let deadline = tokio::time::Instant::now() + args.wait_timeout;
        while remaining > 0 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(result)) => {
                    if tasks.finish(&result.tenant, &result.id, result.status) {
                        remaining -= 1;
                        bar.inc(1);
                    }
                }
                Ok(None) => anyhow::bail!("lost the results stream while waiting"),
                Err(_) => break,
            }
        }
        bar.finish_and_clear();
    }
    drop(following);

    summary.succeeded = tasks.count(|s| s == Some(TaskStatus::Succeeded));
    summary.failed = tasks.count(|s| s.is_some_and(|s| s != TaskStatus::Succeeded));
    summary.unfinished = tasks.count(|s| s.is_none());
    summary.elapsed_ms = started.elapsed().as_millis() as u64;

    if global.json {
        output::print_json(&summary)?;
    } else {
        print_summary(&summary, &examples, args.no_wait, started.elapsed());
    }
    let clean =
        summary.rejected == 0 && summary.failed == 0 && (args.no_wait || summary.unfinished == 0);
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn read_lines(path: &PathBuf) -> anyhow::Result<Vec<Line>> {
    let text = if path.as_os_str() == "-" {
        let mut buf = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut tokio::io::stdin(), &mut buf)
            .await
            .context("while reading tasks from stdin")?;
        buf
    } else {
        tokio::fs::read_to_string(path)
            .await
            .with_context(|| format!("while reading {}", path.display()))?
    };
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| Line {
            number: i + 1,
            text: l.to_string(),
            json: serde_json::from_str(l).ok(),
        })
        .collect())
}

fn progress(show: bool, len: u64, what: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{what:>20} [{{bar:40}}] {{pos}}/{{len}} {{elapsed}}"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn print_summary(
    s: &Summary,
    examples: &BTreeMap<String, Vec<(usize, String)>>,
    no_wait: bool,
    elapsed: Duration,
) {
    println!("submitted   {}", s.submitted);
    println!("duplicates  {}", s.duplicates);
    println!("rejected    {}", s.rejected);
    for (code, count) in &s.rejected_by_code {
        println!("  {code}: {count}");
        for (line, message) in examples.get(code).into_iter().flatten() {
            println!("    line {line}: {message}");
        }
    }
    if no_wait {
        println!("not waiting for {} task(s)", s.unfinished);
    } else {
        println!("succeeded   {}", s.succeeded);
        println!("failed      {}", s.failed);
        if s.unfinished > 0 {
            println!(
                "unfinished  {} (no result within the wait timeout)",
                s.unfinished
            );
        }
    }
    let done = if no_wait {
        s.submitted - s.rejected
    } else {
        s.succeeded + s.failed
    };
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    println!(
        "elapsed     {} ({rate:.0} tasks/s)",
        output::duration(elapsed)
    );
}
