//! Following a key-value bucket for as long as a service runs.
//!
//! A KV watch ends when the server restarts or the connection drops; every
//! long-lived watcher in clawfleet wants the same thing then: wait a little
//! and watch again. [`follow`] does that once for all of them.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// Longest wait before watching again after an error.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Calls `on_entry` for every change of `key` (a key or a wildcard such as
/// `>`) in `store` until `stop` fires, watching again after any error. With
/// `history`, the current entries come first (again after each re-watch, so
/// `on_entry` must be idempotent).
pub async fn follow<F, Fut>(
    store: &kv::Store,
    key: &str,
    history: bool,
    stop: &CancellationToken,
    mut on_entry: F,
) where
    F: FnMut(kv::Entry) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        let watch = if history {
            store.watch_with_history(key).await
        } else {
            store.watch(key).await
        };
        let mut watch = match watch {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(bucket = %store.name, %key, error = %e, "cannot watch; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        loop {
            let entry = tokio::select! {
                e = watch.next() => e,
                _ = stop.cancelled() => return,
            };
            match entry {
                Some(Ok(entry)) => on_entry(entry).await,
                Some(Err(e)) => {
                    tracing::debug!(bucket = %store.name, %key, error = %e, "watch ended; watching again");
                    break;
                }
                None => break,
            }
        }
    }
}
