//! A webhook receiver on a free loopback port, for alerter tests: it keeps
//! every JSON body POSTed to it, and can be told to fail for a while (HTTP
//! 503), as a receiver that is down.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Value>>,
    /// POSTs refused while failing.
    refused: Mutex<usize>,
    failing: AtomicBool,
}

/// A receiver serving until dropped.
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts the receiver.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/hook", post(hook))
            .route("/api/v2/alerts", post(hook))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            shared,
            server,
        }
    }

    /// The webhook URL.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The base URL, as an Alertmanager's (`/api/v2/alerts` is served too).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every body received so far, in order.
    pub fn received(&self) -> Vec<Value> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// POSTs refused while failing.
    pub fn refused(&self) -> usize {
        *self.shared.refused.lock().expect("lock")
    }

    /// Answers 503 to everything while `failing`.
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn hook(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> StatusCode {
    if shared.failing.load(Ordering::SeqCst) {
        *shared.refused.lock().expect("lock") += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    shared.received.lock().expect("lock").push(body);
    StatusCode::OK
}
