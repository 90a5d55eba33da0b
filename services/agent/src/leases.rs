//! The queue messages this agent holds, as the health monitors know them.
//!
//! From the moment a pull returns a message until the agent acks, naks or
//! terminates it, the agent *holds* it: should the agent die, the message's
//! ack subject is what lets a monitor hand it back at once (`-NAK`) rather
//! than after JetStream's ack wait. So every held message is known to the
//! monitors, from the first millisecond:
//! - the messages of a pull are announced together on
//!   `clawfleet.agent.lease.<agent_id>` before any of them is worked on. The
//!   announcement and the task's record writes go over the same connection,
//!   in that order, so a task recorded as running here was announced first;
//! - a message handed back (nak) is announced as released *before* the nak:
//!   JetStream honours a nak of an earlier delivery of a message it has
//!   delivered again since, so a monitor that still listed the old delivery
//!   could send the task to a third agent while a second one runs it;
//! - every announcement carries a reply subject. A monitor that recorded it
//!   answers; what no monitor confirmed is sent again after [`RESEND_FIRST`],
//!   backing off to every [`RESEND_MAX`] (a monitor restarting, a server
//!   outage, a monitor that missed it);
//! - every heartbeat lists everything held, for a monitor that starts later.
//!
//! A message acked or terminated is forgotten without a word: a monitor's
//! nak of it changes nothing, and the monitor drops it at the task's event
//! or at the next heartbeat.
//!
//! Bounds: held messages are bounded by the agent's slots (a message
//! without a slot is handed back before it is held). Releases wait for a
//! confirmation for at most [`RELEASE_TTL`], by which time heartbeats that
//! no longer list them have told every monitor, and at most
//! [`MAX_RELEASES`] of them; an announcement carries at most
//! [`MAX_PER_UPDATE`] entries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::StatusCode;
use clawfleet_shared::agent::{Lease, LeaseUpdate};
use clawfleet_shared::{subjects, timefmt::Timestamp};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// How long an announcement waits for a monitor's confirmation before it is
/// sent again.
pub(crate) const RESEND_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between two sends of an unconfirmed announcement (also the
/// pace while no monitor listens at all).
pub(crate) const RESEND_MAX: Duration = Duration::from_secs(2);
/// How long a release is sent again while unconfirmed.
const RELEASE_TTL: Duration = Duration::from_secs(10);
/// Releases kept waiting for a confirmation at most.
const MAX_RELEASES: usize = 16_384;
/// Entries in one announcement at most (a pull returns at most 256 messages).
const MAX_PER_UPDATE: usize = 256;

/// What this agent holds, and what the monitors have confirmed of it.
pub struct Leases {
    client: async_nats::Client,
    subject: String,
    /// Confirmations come to `<inbox>.<seq>`.
    inbox: String,
    pid: u32,
    started_at: Timestamp,
    book: Mutex<Book>,
    /// Held while an entry changes and its announcement is published, so the
    /// monitors see the changes in the order they happened.
    wire: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Book {
    next_seq: u64,
    /// By ack subject.
    held: HashMap<String, Held>,
    /// Handed back, not confirmed yet: by ack subject.
    released: HashMap<String, Unconfirmed>,
}

struct Held {
    task_id: String,
    /// Recorded as running here.
    running: bool,
    /// `None` once a monitor confirmed it.
    unconfirmed: Option<Unconfirmed>,
}

#[derive(Debug, Clone, Copy)]
struct Unconfirmed {
    /// The announcement it was last sent in.
    seq: u64,
    /// When that was.
    sent: Instant,
    /// Sends so far.
    tries: u32,
    /// When it was first sent.
    first: Instant,
}

impl Unconfirmed {
    fn new(seq: u64, now: Instant) -> Self {
        Self {
            seq,
            sent: now,
            tries: 1,
            first: now,
        }
    }

    fn due(&self, now: Instant) -> bool {
        let wait = RESEND_FIRST
            .saturating_mul(1 << self.tries.saturating_sub(1).min(8))
            .min(RESEND_MAX);
        now.duration_since(self.sent) >= wait
    }
}

impl Book {
    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn confirm(&mut self, seq: u64) {
        for h in self.held.values_mut() {
            if h.unconfirmed.is_some_and(|u| u.seq == seq) {
                h.unconfirmed = None;
            }
        }
        self.released.retain(|_, u| u.seq != seq);
    }

    /// No monitor listens: try again at the slowest pace.
    fn unheard(&mut self, seq: u64) {
        let slow = |u: &mut Unconfirmed| {
            if u.seq == seq {
                u.tries = u.tries.max(16);
            }
        };
        self.held
            .values_mut()
            .filter_map(|h| h.unconfirmed.as_mut())
            .for_each(slow);
        self.released.values_mut().for_each(slow);
    }

    /// The unconfirmed entries due for another send, as announcements of at
    /// most [`MAX_PER_UPDATE`] entries, each marked as sent in it.
    fn due(&mut self, now: Instant) -> Vec<(u64, Vec<Lease>, Vec<String>)> {
        self.released
            .retain(|_, u| now.duration_since(u.first) < RELEASE_TTL);
        let mut held: Vec<(Lease, &mut Unconfirmed)> = self
            .held
            .iter_mut()
            .filter_map(|(ack, h)| {
                let task_id = h.task_id.clone();
                h.unconfirmed.as_mut().filter(|u| u.due(now)).map(|u| {
                    let lease = Lease {
                        task_id,
                        ack: ack.clone(),
                    };
                    (lease, u)
                })
            })
            .collect();
        let mut released: Vec<(String, &mut Unconfirmed)> = self
            .released
            .iter_mut()
            .filter(|(_, u)| u.due(now))
            .map(|(ack, u)| (ack.clone(), u))
            .collect();
        let mut updates = Vec::new();
        let mut seq = self.next_seq;
        while !held.is_empty() || !released.is_empty() {
            seq += 1;
            let take = held.len().min(MAX_PER_UPDATE);
            let leases: Vec<Lease> = held
                .drain(..take)
                .map(|(lease, u)| {
                    mark(u, seq, now);
                    lease
                })
                .collect();
            let take = released.len().min(MAX_PER_UPDATE - leases.len());
            let gone: Vec<String> = released
                .drain(..take)
                .map(|(ack, u)| {
                    mark(u, seq, now);
                    ack
                })
                .collect();
            updates.push((seq, leases, gone));
        }
        self.next_seq = seq;
        updates
    }
}

fn mark(u: &mut Unconfirmed, seq: u64, now: Instant) {
    u.seq = seq;
    u.sent = now;
    u.tries = u.tries.saturating_add(1);
}

/// The task id of a queued message, if it is a task.
fn task_id_of(payload: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Id {
        #[serde(default)]
        id: String,
    }
    serde_json::from_slice::<Id>(payload)
        .map(|i| i.id)
        .unwrap_or_default()
}

impl Leases {
    /// The book of agent `agent_id`, whose process (`pid`, started at
    /// `started_at`) announces on `client`.
    pub(crate) fn new(
        client: async_nats::Client,
        agent_id: &str,
        pid: u32,
        started_at: Timestamp,
    ) -> Self {
        Self {
            inbox: client.new_inbox(),
            subject: subjects::agent_lease(agent_id),
            client,
            pid,
            started_at,
            book: Mutex::new(Book::default()),
            wire: tokio::sync::Mutex::new(()),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().expect("leases lock")
    }

    /// Where the monitors' confirmations come: subscribe before the first
    /// announcement and hand the subscription to [`Leases::follow`].
    pub(crate) fn replies(&self) -> String {
        format!("{}.*", self.inbox)
    }

    /// Holds the messages one pull returned and announces them in one
    /// message. Call before working on any of them.
    pub(crate) async fn hold<'a>(&self, msgs: impl IntoIterator<Item = &'a jetstream::Message>) {
        let _wire = self.wire.lock().await;
        let now = Instant::now();
        let (seq, leases) = {
            let mut book = self.book();
            let seq = book.seq();
            let mut leases = Vec::new();
            for msg in msgs {
                let Some(ack) = msg.reply.as_ref() else {
                    continue;
                };
                let task_id = task_id_of(&msg.payload);
                book.held.insert(
                    ack.to_string(),
                    Held {
                        task_id: task_id.clone(),
                        running: false,
                        unconfirmed: Some(Unconfirmed::new(seq, now)),
                    },
                );
                leases.push(Lease {
                    task_id,
                    ack: ack.to_string(),
                });
            }
            (seq, leases)
        };
        if !leases.is_empty() {
            self.send(seq, leases, Vec::new()).await;
        }
    }

    /// Notes that the held message `ack` is now recorded as running.
    pub(crate) fn running(&self, ack: &str) {
        if let Some(h) = self.book().held.get_mut(ack) {
            h.running = true;
        }
    }

    /// Stops holding `ack` and announces it, before the message is handed
    /// back (or left to the agent that has it now).
    pub(crate) async fn release(&self, ack: &str) {
        let _wire = self.wire.lock().await;
        let now = Instant::now();
        let seq = {
            let mut book = self.book();
            if book.held.remove(ack).is_none() {
                return;
            }
            let seq = book.seq();
            if book.released.len() < MAX_RELEASES {
                book.released
                    .insert(ack.to_string(), Unconfirmed::new(seq, now));
            }
            seq
        };
        self.send(seq, Vec::new(), vec![ack.to_string()]).await;
    }

    /// Stops holding `ack`, acked or terminated: nothing to announce.
    pub(crate) fn forget(&self, ack: &str) {
        self.book().held.remove(ack);
    }

    /// For the heartbeat: the messages recorded running here, and the others held.
    pub(crate) fn listed(&self) -> (Vec<Lease>, Vec<Lease>) {
        let book = self.book();
        let mut running = Vec::new();
        let mut held = Vec::new();
        for (ack, h) in &book.held {
            let lease = Lease {
                task_id: h.task_id.clone(),
                ack: ack.clone(),
            };
            if h.running {
                running.push(lease);
            } else {
                held.push(lease);
            }
        }
        (running, held)
    }

    async fn send(&self, seq: u64, held: Vec<Lease>, released: Vec<String>) {
        let update = LeaseUpdate {
            pid: self.pid,
            started_at: self.started_at,
            held,
            released,
        };
        let bytes = serde_json::to_vec(&update).expect("lease update encodes");
        let reply = format!("{}.{seq}", self.inbox);
        if let Err(e) = self
            .client
            .publish_with_reply(self.subject.clone(), reply, bytes.into())
            .await
        {
            tracing::debug!(error = %e, "could not announce leases; sending them again shortly");
        }
    }

    /// Sends again what no monitor confirmed in time.
    async fn resend(&self) {
        let _wire = self.wire.lock().await;
        let updates = self.book().due(Instant::now());
        for (seq, held, released) in updates {
            tracing::debug!(
                seq,
                held = held.len(),
                released = released.len(),
                "announcing unconfirmed leases again"
            );
            self.send(seq, held, released).await;
        }
    }

    /// Reads the monitors' confirmations on `replies` (subscribed to
    /// [`Leases::replies`]) and sends again what is unconfirmed, until `stop`.
    pub(crate) async fn follow(
        self: std::sync::Arc<Self>,
        mut replies: async_nats::Subscriber,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(RESEND_FIRST / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                reply = replies.next() => {
                    let Some(reply) = reply else { return };
                    let Some(seq) = reply
                        .subject
                        .rsplit('.')
                        .next()
                        .and_then(|s| s.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    if reply.status == Some(StatusCode::NO_RESPONDERS) {
                        self.book().unheard(seq);
                    } else {
                        self.book().confirm(seq);
                    }
                }
                _ = tick.tick() => self.resend().await,
                _ = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(book: &mut Book, ack: &str, now: Instant) -> u64 {
        let seq = book.seq();
        book.held.insert(
            ack.into(),
            Held {
                task_id: format!("task-{ack}"),
                running: false,
                unconfirmed: Some(Unconfirmed::new(seq, now)),
            },
        );
        seq
    }

    #[test]
    fn unconfirmed_entries_are_sent_again_backing_off_until_a_monitor_confirms() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut book = Book::default();
        held(&mut book, "a", t0);
        assert!(book.due(at(100)).is_empty(), "not before {RESEND_FIRST:?}");
        let again = book.due(at(250));
        assert_eq!(again.len(), 1);
        let (seq, leases, released) = &again[0];
        assert_eq!(leases[0].ack, "a");
        assert_eq!(leases[0].task_id, "task-a");
        assert!(released.is_empty());
        // The second wait is twice the first.
        assert!(book.due(at(600)).is_empty());
        assert_eq!(book.due(at(750)).len(), 1);
        // A confirmation of an older send does not count.
        book.confirm(*seq);
        assert!(book.held["a"].unconfirmed.is_some());
        let last = book.next_seq;
        book.confirm(last);
        assert!(book.held["a"].unconfirmed.is_none());
        assert!(book.due(at(60_000)).is_empty());
    }

    #[test]
    fn with_no_monitor_listening_entries_go_out_at_the_slowest_pace_and_releases_expire() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut book = Book::default();
        let seq = held(&mut book, "a", t0);
        book.unheard(seq);
        assert!(book.due(at(1_900)).is_empty());
        assert_eq!(book.due(at(2_000)).len(), 1);
        book.held.remove("a");
        let seq = book.seq();
        book.released
            .insert("a".into(), Unconfirmed::new(seq, at(2_000)));
        assert_eq!(book.due(at(2_300))[0].2, vec!["a".to_string()]);
        assert!(
            book.due(at(12_001)).is_empty(),
            "given up after {RELEASE_TTL:?}"
        );
        assert!(book.released.is_empty());
    }

    #[test]
    fn a_large_backlog_goes_out_in_bounded_announcements() {
        let t0 = Instant::now();
        let mut book = Book::default();
        for i in 0..600 {
            held(&mut book, &format!("m{i}"), t0);
        }
        let updates = book.due(t0 + RESEND_FIRST);
        assert_eq!(
            updates.iter().map(|u| u.1.len()).collect::<Vec<_>>(),
            vec![256, 256, 88]
        );
        let seqs: std::collections::HashSet<u64> = updates.iter().map(|u| u.0).collect();
        assert_eq!(seqs.len(), 3, "one sequence number each");
    }

    #[test]
    fn the_task_id_is_read_from_the_message_and_is_empty_for_anything_else() {
        assert_eq!(
            task_id_of(br#"{"tenant":"a","id":"t-1","payload":{}}"#),
            "t-1"
        );
        assert_eq!(task_id_of(b"not json"), "");
        assert_eq!(task_id_of(b"[]"), "");
    }
}
