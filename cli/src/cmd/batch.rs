//! `clawfleet batch FILE`: submit a JSONL file, one task per line, and wait
//! for every accepted task's result.
//!
//! Results are followed from the results stream starting *before* the first
//! submission, so a task that finishes before its own reply arrives is still
//! counted. A duplicate of a task that already finished is counted from the
//! status in its reply (or, if it finished in between, from its stored
//! result). Counts are per line for `submitted`, `duplicates` and
//! `rejected`, and per distinct task for `succeeded` and `failed`.
//!
//! Lines are sent in file order, a bounded number at a time. Ctrl-C stops
//! sending: the lines in flight get their answers, and `batch` says up to
//! which line everything was sent, so `--skip` that many resumes the file
//! without sending a line twice. A second Ctrl-C exits at once.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
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
use tokio_util::sync::CancellationToken;

use super::Global;
use crate::client::Api;
use crate::{output, results};

/// Rejected lines shown per error code in the human summary.
const EXAMPLES_PER_CODE: usize = 3;
/// Rejected lines listed in `--json` (the rest are only counted).
const MAX_REJECTED_LINES: usize = 10_000;

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
    /// Skip the first N lines of the file, to resume a batch that was
    /// interrupted after them (line numbers stay those of the file).
    #[arg(long, value_name = "N", default_value_t = 0)]
    skip: usize,
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
    /// The rejected lines, by line number (at most [`MAX_REJECTED_LINES`]).
    rejected_lines: Vec<Rejected>,
    /// Rejected lines left out of `rejected_lines`.
    #[serde(skip_serializing_if = "is_zero")]
    rejected_lines_omitted: u64,
    /// Distinct accepted tasks that succeeded.
    succeeded: u64,
    /// Distinct accepted tasks that failed (or were cancelled).
    failed: u64,
    /// Distinct accepted tasks with no result yet (all of them with `--no-wait`).
    unfinished: u64,
    elapsed_ms: u64,
    /// Whether Ctrl-C cut the batch short.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    interrupted: bool,
    /// When it was cut short while sending: every line up to this one was
    /// sent and answered, none after it; `--skip` this to resume.
    #[serde(skip_serializing_if = "Option::is_none")]
    resume_with_skip: Option<usize>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One refused line.
#[derive(Debug, Serialize)]
struct Rejected {
    line: usize,
    code: String,
    message: String,
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
    let lines = read_lines(&args.file, args.skip).await?;
    let started = Instant::now();
    let api = Api::connect(global.url()).await?;
    let interrupted = on_interrupt();

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
    let mut summary = Summary::default();
    let mut rejected: Vec<Rejected> = Vec::new();
    let mut reject = |summary: &mut Summary, line: usize, code: String, message: String| {
        summary.rejected += 1;
        *summary.rejected_by_code.entry(code.clone()).or_default() += 1;
        rejected.push(Rejected {
            line,
            code,
            message,
        });
    };
    let mut tasks = Tasks::default();

    // In file order, until Ctrl-C: what was taken is all answered below.
    let stop = interrupted.clone();
    let mut replies = futures::stream::iter(lines.iter())
        .take_while(move |_| std::future::ready(!stop.is_cancelled()))
        .map(|line| {
            let api = api.clone();
            async move {
                let outcome = match line.json {
                    None => None,
                    Some(_) => {
                        let body = Bytes::copy_from_slice(line.text.as_bytes());
                        Some(api.call::<SubmitReply>(subjects::API_SUBMIT, body).await)
                    }
                };
                (line, outcome)
            }
        })
        .buffer_unordered(args.concurrency as usize);
    let mut last_sent = args.skip;
    let mut unreachable: Option<ErrorBody> = None;
    let mut recheck = Vec::new();
    while let Some((line, outcome)) = replies.next().await {
        bar.inc(1);
        summary.submitted += 1;
        last_sent = last_sent.max(line.number);
        match outcome {
            None => reject(
                &mut summary,
                line.number,
                ErrorCode::InvalidJson.to_string(),
                "line is not valid JSON".into(),
            ),
            Some(Ok(Ok(reply))) => {
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
            Some(Ok(Err(error))) => reject(
                &mut summary,
                line.number,
                error.code.to_string(),
                error.message,
            ),
            Some(Err(e)) => {
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
    let cut_short = summary.submitted < lines.len() as u64;
    if tasks.status.is_empty() && !cut_short {
        if let Some(error) = unreachable {
            return Err(error.into());
        }
    }

    if let (Some(rx), false) = (following.as_mut(), interrupted.is_cancelled()) {
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
            let result = tokio::select! {
                r = tokio::time::timeout_at(deadline, rx.recv()) => r,
                _ = interrupted.cancelled() => break,
            };
            match result {
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
    summary.interrupted = interrupted.is_cancelled();
    summary.resume_with_skip = cut_short.then_some(last_sent);
    rejected.sort_by_key(|r| r.line);
    if rejected.len() > MAX_REJECTED_LINES {
        summary.rejected_lines_omitted = (rejected.len() - MAX_REJECTED_LINES) as u64;
        rejected.truncate(MAX_REJECTED_LINES);
    }
    summary.rejected_lines = rejected;

    if global.json {
        output::print_json(&summary)?;
    } else {
        print_summary(&summary, args.no_wait, started.elapsed());
    }
    if summary.interrupted {
        eprintln!("{}", interruption(&summary, &args.file, lines.len()));
        return Ok(ExitCode::from(130));
    }
    let clean =
        summary.rejected == 0 && summary.failed == 0 && (args.no_wait || summary.unfinished == 0);
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A token cancelled on the first Ctrl-C; the second one exits at once.
fn on_interrupt() -> CancellationToken {
    let token = CancellationToken::new();
    let first = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        first.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "interrupted again: exiting at once; the lines in flight may or may not have been submitted"
            );
            std::process::exit(130);
        }
    });
    token
}

/// What to say after Ctrl-C: how far the batch got and how to go on.
fn interruption(s: &Summary, file: &Path, lines: usize) -> String {
    match s.resume_with_skip {
        Some(skip) => format!(
            "interrupted: {} of {lines} lines sent, every line up to line {skip} and none after it; \
             resume with: clawfleet batch {} --skip {skip}",
            s.submitted,
            file.display()
        ),
        None => format!(
            "interrupted while waiting for results: every line was sent, so there is nothing to \
             resume; {} task(s) had no result yet and keep running (clawfleet task get <id>)",
            s.unfinished
        ),
    }
}

/// The non-blank lines of the file after its first `skip` lines.
async fn read_lines(path: &PathBuf, skip: usize) -> anyhow::Result<Vec<Line>> {
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
        .skip(skip)
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

fn print_summary(s: &Summary, no_wait: bool, elapsed: Duration) {
    println!("submitted   {}", s.submitted);
    println!("duplicates  {}", s.duplicates);
    println!("rejected    {}", s.rejected);
    for (code, count) in &s.rejected_by_code {
        println!("  {code}: {count}");
        let examples = s.rejected_lines.iter().filter(|r| &r.code == code);
        for r in examples.take(EXAMPLES_PER_CODE) {
            println!("    line {}: {}", r.line, r.message);
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
