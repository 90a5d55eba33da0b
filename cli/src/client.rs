//! Talking to the dispatchers' request/reply API.
//!
//! Transport problems (no NATS, no dispatcher, no reply in time) are errors;
//! an error *reply* is data the caller may branch on ([`Api::call`]) or
//! treat as an error ([`Api::request`]). Either way an unreachable fleet is
//! reported as an [`ErrorCode::Unavailable`] body, so it prints like any
//! other coded error.

use std::time::Duration;

use async_nats::RequestErrorKind;
use bytes::Bytes;
use clawfleet_shared::api::{AgentsReply, ApiReply, ListRequest, QueuesReply};
use clawfleet_shared::health::FleetState;
use clawfleet_shared::{subjects, ErrorBody, ErrorCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How long a dispatcher may take to answer one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The service that answers `subject`, for "no ... is running".
fn serving(subject: &str) -> &'static str {
    if subjects::MONITOR_API.contains(&subject) {
        "health monitor"
    } else if subjects::LOG_AGGREGATOR_API.contains(&subject) {
        "log aggregator"
    } else if subjects::ALERTER_API.contains(&subject) {
        "alerter"
    } else {
        "dispatcher"
    }
}

/// A connection to the fleet's NATS server.
#[derive(Clone)]
pub struct Api {
    client: async_nats::Client,
    url: String,
}

impl Api {
    /// Connects to `url`, failing fast when nothing listens there.
    pub async fn connect(url: &str) -> anyhow::Result<Api> {
        let client = async_nats::ConnectOptions::new()
            .name("clawfleet-cli")
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| {
                ErrorBody::new(
                    ErrorCode::Unavailable,
                    format!("cannot reach NATS at {url}: {e}"),
                )
            })?;
        Ok(Api {
            client,
            url: url.to_string(),
        })
    }

    /// The underlying client, for subscriptions and JetStream reads.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// A JetStream context on the same connection.
    pub fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client.clone())
    }

    /// The URL connected to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The error for "no `service` answers at this URL".
    pub fn no_service(&self, service: &str) -> ErrorBody {
        ErrorBody::new(
            ErrorCode::Unavailable,
            format!("no {service} is running at {}", self.url),
        )
    }

    /// Sends a request; the outer error is a transport failure, the inner
    /// one the dispatcher's error reply.
    pub async fn call<T: DeserializeOwned>(
        &self,
        subject: &'static str,
        body: Bytes,
    ) -> anyhow::Result<Result<T, ErrorBody>> {
        let reply =
            match tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(subject, body)).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => {
                    return Err(self.no_service(serving(subject)).into());
                }
                Ok(Err(e)) if e.kind() != RequestErrorKind::TimedOut => {
                    return Err(ErrorBody::new(
                        ErrorCode::Unavailable,
                        format!("request to {subject} failed: {e}"),
                    )
                    .into())
                }
                Ok(Err(_)) | Err(_) => {
                    return Err(ErrorBody::new(
                        ErrorCode::Unavailable,
                        format!(
                            "no reply on {subject} within {}",
                            humantime::format_duration(REQUEST_TIMEOUT)
                        ),
                    )
                    .into())
                }
            };
        let decoded: ApiReply<T> = serde_json::from_slice(&reply.payload).map_err(|e| {
            ErrorBody::new(
                ErrorCode::Internal,
                format!(
                    "undecodable reply on {subject}: {e}: {}",
                    String::from_utf8_lossy(&reply.payload)
                ),
            )
        })?;
        Ok(decoded.into_result())
    }

    /// Sends a request; an error reply becomes an error.
    pub async fn request<T: DeserializeOwned>(
        &self,
        subject: &'static str,
        body: Bytes,
    ) -> anyhow::Result<T> {
        Ok(self.call(subject, body).await??)
    }

    /// Sends `body` as JSON; an error reply becomes an error.
    pub async fn request_json<Req: Serialize, T: DeserializeOwned>(
        &self,
        subject: &'static str,
        body: &Req,
    ) -> anyhow::Result<T> {
        self.request(subject, serde_json::to_vec(body)?.into())
            .await
    }

    /// Every registered agent, following `agents.list`'s pages.
    pub async fn agents(&self) -> anyhow::Result<AgentsReply> {
        Ok(self.all_pages(subjects::API_AGENTS_LIST).await??)
    }

    /// Every queue, following `queues.list`'s pages.
    pub async fn queues(&self) -> anyhow::Result<QueuesReply> {
        Ok(self.all_pages(subjects::API_QUEUES_LIST).await??)
    }

    /// The health monitor's whole fleet state, following its pages. The
    /// outer error is a transport failure, the inner one an error reply.
    pub async fn fleet_state(&self) -> anyhow::Result<Result<FleetState, ErrorBody>> {
        self.all_pages(subjects::API_FLEET_STATE).await
    }

    /// Every page of a listing, joined into the first.
    async fn all_pages<T: Paged + DeserializeOwned>(
        &self,
        subject: &'static str,
    ) -> anyhow::Result<Result<T, ErrorBody>> {
        let mut request = ListRequest::default();
        let mut all: Option<T> = None;
        for _ in 0..MAX_PAGES {
            let body = serde_json::to_vec(&request)?.into();
            let mut page: T = match self.call(subject, body).await? {
                Ok(page) => page,
                Err(e) => return Ok(Err(e)),
            };
            let next = page.take_cursor();
            match &mut all {
                None => all = Some(page),
                Some(all) => all.absorb(page),
            }
            match next {
                Some(cursor) => request.cursor = Some(cursor),
                None => return Ok(Ok(all.expect("one page was read"))),
            }
        }
        anyhow::bail!("{subject} returned more than {MAX_PAGES} pages")
    }
}

/// A listing reply that comes in pages.
trait Paged {
    /// The cursor of the next page, taken out of this one.
    fn take_cursor(&mut self) -> Option<String>;
    /// Appends a later page's items.
    fn absorb(&mut self, next: Self);
}

impl Paged for AgentsReply {
    fn take_cursor(&mut self) -> Option<String> {
        self.next_cursor.take()
    }
    fn absorb(&mut self, next: Self) {
        self.agents.extend(next.agents);
    }
}

impl Paged for QueuesReply {
    fn take_cursor(&mut self) -> Option<String> {
        self.next_cursor.take()
    }
    fn absorb(&mut self, next: Self) {
        self.queues.extend(next.queues);
    }
}

impl Paged for FleetState {
    fn take_cursor(&mut self) -> Option<String> {
        self.next_cursor.take()
    }
    fn absorb(&mut self, next: Self) {
        self.agents.extend(next.agents);
    }
}

/// Most pages a listing follows (a bound against a server that never ends one).
const MAX_PAGES: usize = 1000;
