//! Executors run one task attempt each. The agent runtime owns everything
//! else (pulling, acks, retries, records); an executor only turns a payload
//! into a result or an error.
//!
//! The trait is shaped for long-lived backends such as an OpenClaw gateway
//! ([`openclaw`]): a health probe the agent can report, cancellation through a
//! token, and usage (tokens, model) for cost tracking.

mod command;
pub mod openclaw;
mod sim;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
pub use clawfleet_shared::task::Usage;
use clawfleet_shared::{ErrorCode, TaskSpec};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use command::CommandExecutor;
pub use openclaw::{GatewaySettings, OpenclawExecutor, OpenclawSettings};
pub use sim::SimExecutor;

use crate::config::{ExecutorConfig, Secret};

/// Context of one attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// 1-based attempt number.
    pub number: u32,
    /// Fires when the attempt must stop (agent shutting down). The runtime
    /// also drops the future at the task's timeout, so executors that hold
    /// external resources must release them on drop (e.g. `kill_on_drop`).
    pub cancel: CancellationToken,
}

/// What a successful attempt produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// The result, published on `clawfleet.results.<tenant>.<id>`.
    pub result: Value,
    /// Resource usage, when the executor knows it.
    pub usage: Option<Usage>,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecError {
    /// Worth another attempt (possibly on another agent).
    #[error("{0}")]
    Retryable(String),
    /// Will fail however often it is tried (bad payload, unsupported operation).
    #[error("{0}")]
    Fatal(String),
    /// Stopped because the agent is shutting down.
    #[error("the agent stopped before the attempt finished")]
    Cancelled,
}

impl ExecError {
    /// The wire error code of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            ExecError::Retryable(_) => ErrorCode::ExecutorFailed,
            ExecError::Fatal(_) => ErrorCode::ExecutorRejected,
            ExecError::Cancelled => ErrorCode::Unavailable,
        }
    }
}

/// Health of an executor as the agent last saw it.
pub use clawfleet_shared::agent::ExecutorHealth as Health;

/// Runs task attempts.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Short name, reported in the agent registration (`sim`, `command`).
    fn kind(&self) -> &'static str;

    /// Runs one attempt.
    async fn run(&self, task: &TaskSpec, attempt: &Attempt) -> Result<Output, ExecError>;

    /// Probes the executor (the agent's supervisor calls this every
    /// `health_check_interval`; an executor that is not `Ready` gets no work).
    async fn health(&self) -> Health {
        Health::Ready
    }

    /// Brings up what the executor runs on (a gateway process, say) and
    /// returns once it is ready. Called once before the agent pulls work.
    async fn start(&self) -> Result<(), ExecError> {
        Ok(())
    }

    /// Restarts what the executor runs on after it died or failed its health
    /// checks. The agent calls it with back-off and counts the restarts.
    async fn restart(&self) -> Result<(), ExecError> {
        Ok(())
    }

    /// Stops what the executor runs on, at the end of a drain.
    async fn stop(&self) {}
}

/// Builds the executor a (validated) config asks for, for agent `agent_id`.
pub fn build(config: &ExecutorConfig, agent_id: &str) -> Result<Arc<dyn Executor>, ExecError> {
    Ok(match config {
        ExecutorConfig::Sim { health_file } => {
            Arc::new(SimExecutor::new(agent_id, health_file.clone()))
        }
        ExecutorConfig::Command {
            program,
            args,
            probe,
        } => {
            Arc::new(CommandExecutor::new(program.clone(), args.clone()).with_probe(probe.clone()))
        }
        ExecutorConfig::Openclaw {
            url,
            token,
            agent,
            request_timeout,
            ready_timeout,
            session_prefix,
            supervise,
        } => {
            let not_validated = |key: &str| {
                ExecError::Fatal(format!("{key} is not set (the config was not validated)"))
            };
            let ready_timeout =
                ready_timeout.ok_or_else(|| not_validated("executor.ready_timeout"))?;
            let mut settings = OpenclawSettings {
                url: url.clone().unwrap_or_default(),
                token: Secret::new(""),
                agent: agent.clone(),
                request_timeout: *request_timeout,
                ready_timeout,
                session_prefix: session_prefix.clone(),
            };
            match supervise {
                None => {
                    settings.token = token
                        .clone()
                        .ok_or_else(|| not_validated("executor.token"))?;
                    Arc::new(OpenclawExecutor::new(settings)?)
                }
                Some(sup) => {
                    let gateway = GatewaySettings {
                        agent_id: agent_id.to_string(),
                        command: sup.command.clone(),
                        node: sup.node.clone(),
                        state_dir: sup
                            .state_dir
                            .clone()
                            .ok_or_else(|| not_validated("executor.supervise.state_dir"))?,
                        port: sup.port,
                        providers: sup
                            .providers
                            .iter()
                            .map(|(k, v)| (k.clone(), v.0.clone()))
                            .collect(),
                        model: sup
                            .model
                            .clone()
                            .ok_or_else(|| not_validated("executor.supervise.model"))?,
                        config: sup.config.0.clone(),
                        log_level: sup.log_level.clone(),
                        stop_timeout: sup.stop_timeout,
                    };
                    Arc::new(OpenclawExecutor::supervised(settings, gateway, sup.warmup)?)
                }
            }
        }
    })
}

/// Sleeps unless cancelled first.
pub(crate) async fn sleep_or_cancel(
    d: Duration,
    cancel: &CancellationToken,
) -> Result<(), ExecError> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = cancel.cancelled() => Err(ExecError::Cancelled),
    }
}
