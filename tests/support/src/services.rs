//! clawfleet services in-process, each on its own runtime so a test can
//! stop one gracefully or kill it like a crashed process.

use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

use clawfleet_shared::logship::{LogShipping, Shipper};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::dispatcher::DefaultGuard;
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

/// A service running on its own single-worker runtime in its own thread.
pub struct Service {
    /// The agent id, or `dispatcher`.
    pub id: String,
    shutdown: CancellationToken,
    kill: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    /// Graceful stop: the service drains and exits.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        self.join().await;
    }

    /// Crash: every task of the service is dropped at once, its NATS
    /// connection closes, nothing in flight is acked or handed back.
    pub async fn kill(mut self) {
        self.kill.cancel();
        self.join().await;
    }

    async fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .expect("join service thread")
                .expect("service thread panicked");
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill.cancel();
    }
}

thread_local! {
    /// The service's logging, as the default of each of its runtime's threads.
    static SERVICE_LOGGING: RefCell<Option<DefaultGuard>> = const { RefCell::new(None) };
}

/// What a service process would install at start-up: its log lines are
/// shipped to the test's NATS server once the service attaches its client
/// (and, with `TEST_LOG=1`, printed with the test's output). Each service
/// gets its own, so services of one test, and of tests running side by
/// side, never ship through each other's connection.
fn service_logging() -> Dispatch {
    let shipping = LogShipping::default();
    let ship = Shipper::new("", &shipping).layer().with_filter(
        shipping
            .filter()
            .expect("the default shipping filter parses"),
    );
    let print = crate::test_log_enabled().then(|| {
        tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(crate::test_log_filter())
    });
    Dispatch::new(tracing_subscriber::registry().with(print).with(ship))
}

fn spawn<F, Fut, R>(id: String, start: F) -> (Service, oneshot::Receiver<Result<String, String>>)
where
    F: FnOnce(CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<R, String>>,
    R: Waitable,
{
    let shutdown = CancellationToken::new();
    let kill = CancellationToken::new();
    let (tx, rx) = oneshot::channel();
    let (s, k) = (shutdown.clone(), kill.clone());
    let logging = service_logging();
    let thread = std::thread::Builder::new()
        .name(format!("svc-{id}"))
        .spawn(move || {
            let _logging = tracing::dispatcher::set_default(&logging);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .on_thread_start(move || {
                    let guard = tracing::dispatcher::set_default(&logging);
                    SERVICE_LOGGING.with(|g| *g.borrow_mut() = Some(guard));
                })
                .on_thread_stop(|| {
                    SERVICE_LOGGING.with(|g| g.borrow_mut().take());
                })
                .enable_all()
                .build()
                .expect("service runtime");
            rt.block_on(async {
                let running = tokio::select! {
                    r = start(s) => r,
                    _ = k.cancelled() => return,
                };
                match running {
                    Ok(running) => {
                        let _ = tx.send(Ok(running.id()));
                        tokio::select! {
                            _ = async {
                                running.wait_done().await;
                                // As a service process does before it exits.
                                clawfleet_shared::logship::flush(Duration::from_secs(1)).await;
                            } => {}
                            _ = k.cancelled() => {}
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
            rt.shutdown_timeout(Duration::ZERO);
        })
        .expect("spawn service thread");
    (
        Service {
            id,
            shutdown,
            kill,
            thread: Some(thread),
        },
        rx,
    )
}

/// Something started that can be waited on.
pub trait Waitable: Send + 'static {
    /// Its id.
    fn id(&self) -> String;
    /// Waits until it stops.
    fn wait_done(self) -> impl std::future::Future<Output = ()> + Send;
}

impl Waitable for clawfleet_agent::Running {
    fn id(&self) -> String {
        self.agent_id.clone()
    }
    fn wait_done(self) -> impl std::future::Future<Output = ()> + Send {
        self.wait()
    }
}

impl Waitable for clawfleet_dispatcher::Running {
    fn id(&self) -> String {
        "dispatcher".to_string()
    }
    fn wait_done(self) -> impl std::future::Future<Output = ()> + Send {
        self.wait()
    }
}

impl Waitable for clawfleet_health_monitor::Running {
    fn id(&self) -> String {
        "health-monitor".to_string()
    }
    fn wait_done(self) -> impl std::future::Future<Output = ()> + Send {
        self.wait()
    }
}

/// Starts a health monitor; returns once it has loaded the fleet and serves its API.
pub async fn start_health_monitor(config: clawfleet_health_monitor::Config) -> Service {
    let (service, ready) = spawn("health-monitor".into(), move |token| async move {
        clawfleet_health_monitor::start(config, token)
            .await
            .map_err(|e| e.to_string())
    });
    match ready.await {
        Ok(Ok(_)) => service,
        Ok(Err(e)) => panic!("health monitor failed to start: {e}"),
        Err(_) => panic!("health monitor thread ended before starting"),
    }
}

/// A health monitor config for tests, matching [`agent_config`]'s 500 ms
/// heartbeats: down after 1.5 s of silence or 2 unanswered pings 250 ms apart.
pub fn monitor_config(nats_url: &str) -> clawfleet_health_monitor::Config {
    clawfleet_health_monitor::Config {
        nats_url: nats_url.to_string(),
        connect_timeout: Duration::from_secs(5),
        topology_wait: Duration::from_secs(10),
        heartbeat_timeout: Duration::from_millis(1500),
        check_interval: Duration::from_millis(50),
        ping_interval: Duration::from_millis(250),
        ping_timeout: Duration::from_millis(200),
        ping_failures: 2,
        recovery_pings: 2,
        verdict_refresh: Duration::from_millis(300),
        metrics_addr: None,
        ..Default::default()
    }
}

impl Waitable for clawfleet_log_aggregator::Running {
    fn id(&self) -> String {
        "log-aggregator".to_string()
    }
    fn wait_done(self) -> impl std::future::Future<Output = ()> + Send {
        self.wait()
    }
}

/// Starts a log aggregator; returns once it serves searches and consumes lines.
pub async fn start_log_aggregator(config: clawfleet_log_aggregator::Config) -> Service {
    let (service, ready) = spawn("log-aggregator".into(), move |token| async move {
        clawfleet_log_aggregator::start(config, token)
            .await
            .map_err(|e| e.to_string())
    });
    match ready.await {
        Ok(Ok(_)) => service,
        Ok(Err(e)) => panic!("log aggregator failed to start: {e}"),
        Err(_) => panic!("log aggregator thread ended before starting"),
    }
}

/// A log aggregator config for tests: its index in `data_dir`, small
/// batches written quickly, retention every 100 ms.
pub fn log_aggregator_config(nats_url: &str, data_dir: &Path) -> clawfleet_log_aggregator::Config {
    let mut config = clawfleet_log_aggregator::Config {
        nats_url: nats_url.to_string(),
        connect_timeout: Duration::from_secs(5),
        topology_wait: Duration::from_secs(10),
        data_dir: data_dir.to_path_buf(),
        batch_wait: Duration::from_millis(5),
        metrics_addr: None,
        ..Default::default()
    };
    config.retention.interval = Duration::from_millis(100);
    config
}

impl Waitable for clawfleet_alerter::Running {
    fn id(&self) -> String {
        "alerter".to_string()
    }
    fn wait_done(self) -> impl std::future::Future<Output = ()> + Send {
        self.wait()
    }
}

/// Starts an alerter; returns once it serves its API (it evaluates once it
/// holds the leader lease).
pub async fn start_alerter(config: clawfleet_alerter::Config) -> Service {
    start_alerter_with_reload(config, None).await
}

/// Starts an alerter that reads its configuration again with `reload` on SIGHUP.
pub async fn start_alerter_with_reload(
    config: clawfleet_alerter::Config,
    reload: Option<clawfleet_alerter::Reload>,
) -> Service {
    let (service, ready) = spawn("alerter".into(), move |token| async move {
        clawfleet_alerter::start(config, reload, token)
            .await
            .map_err(|e| e.to_string())
    });
    match ready.await {
        Ok(Ok(_)) => service,
        Ok(Err(e)) => panic!("alerter failed to start: {e}"),
        Err(_) => panic!("alerter thread ended before starting"),
    }
}

/// An alerter config for tests: no rules (the test gives them), evaluation
/// every 100 ms, a 1 s lease, one receiver `log` with no integration.
pub fn alerter_config(nats_url: &str) -> clawfleet_alerter::Config {
    clawfleet_alerter::Config {
        nats_url: nats_url.to_string(),
        connect_timeout: Duration::from_secs(5),
        evaluation_interval: Duration::from_millis(100),
        request_timeout: Duration::from_secs(2),
        lease: Duration::from_secs(1),
        rules: Vec::new(),
        metrics_addr: None,
        ..Default::default()
    }
}

impl Waitable for clawfleet_console::Running {
    fn id(&self) -> String {
        "console".to_string()
    }
    fn wait_done(self) -> impl std::future::Future<Output = ()> + Send {
        self.wait()
    }
}

/// Starts a console on a free loopback port; returns it and its address.
pub async fn start_console(
    mut config: clawfleet_console::Config,
) -> (Service, std::net::SocketAddr) {
    // A free port, so that tests run side by side.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    config.listen = probe.local_addr().expect("its address");
    drop(probe);
    let addr = config.listen;
    let (service, ready) = spawn("console".into(), move |token| async move {
        clawfleet_console::start(config, token)
            .await
            .map_err(|e| e.to_string())
    });
    match ready.await {
        Ok(Ok(_)) => (service, addr),
        Ok(Err(e)) => panic!("console failed to start: {e}"),
        Err(_) => panic!("console thread ended before starting"),
    }
}

/// Starts a dispatcher; returns once it serves requests.
pub async fn start_dispatcher(config: clawfleet_dispatcher::Config) -> Service {
    let (service, ready) = spawn("dispatcher".into(), move |token| async move {
        clawfleet_dispatcher::start(config, token)
            .await
            .map_err(|e| e.to_string())
    });
    match ready.await {
        Ok(Ok(_)) => service,
        Ok(Err(e)) => panic!("dispatcher failed to start: {e}"),
        Err(_) => panic!("dispatcher thread ended before starting"),
    }
}

/// Starts an agent; returns once it is registered and pulling.
pub async fn start_agent(config: clawfleet_agent::Config) -> Service {
    let (mut service, ready) = spawn(config.agent_id.clone(), move |token| async move {
        clawfleet_agent::start(config, token)
            .await
            .map_err(|e| e.to_string())
    });
    match ready.await {
        Ok(Ok(id)) => {
            service.id = id;
            service
        }
        Ok(Err(e)) => panic!("agent failed to start: {e}"),
        Err(_) => panic!("agent thread ended before starting"),
    }
}

/// A dispatcher config for tests: short ack wait so lost work comes back
/// fast, and short retry back-offs.
pub fn dispatcher_config(nats_url: &str) -> clawfleet_dispatcher::Config {
    clawfleet_dispatcher::Config {
        nats_url: nats_url.to_string(),
        connect_timeout: Duration::from_secs(5),
        task_ack_wait: Duration::from_secs(2),
        intake_ack_wait: Duration::from_secs(2),
        // Many tests run at once: no fixed metrics port.
        metrics_addr: None,
        retry: clawfleet_shared::task::RetryPolicy {
            backoff: Duration::from_millis(50),
            backoff_max: Duration::from_millis(400),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// An agent config for tests: fast heartbeats, polls and retries.
pub fn agent_config(
    nats_url: &str,
    agent_id: &str,
    capabilities: &[&str],
) -> clawfleet_agent::Config {
    clawfleet_agent::Config {
        nats_url: nats_url.to_string(),
        agent_id: agent_id.to_string(),
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        heartbeat_interval: Duration::from_millis(500),
        idle_poll_interval: Duration::from_millis(50),
        health_check_interval: Duration::from_millis(100),
        restart_backoff: Duration::from_millis(100),
        restart_backoff_max: Duration::from_secs(1),
        avoid_for: Duration::from_secs(3),
        drain_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        topology_wait: Duration::from_secs(10),
        ..Default::default()
    }
}
