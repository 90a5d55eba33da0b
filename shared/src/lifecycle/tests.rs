use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::task::TaskSpec;

const Q: &str = "clawfleet.queue.normal._";
const Q2: &str = "clawfleet.queue.normal.eu";

fn at(s: i64) -> Timestamp {
    time::OffsetDateTime::from_unix_timestamp(1_800_000_000 + s).unwrap()
}

fn record(max_attempts: u32) -> TaskRecord {
    let spec: TaskSpec = serde_json::from_value(json!({
        "id": "t1", "tenant": "acme", "priority": "normal", "payload": {},
        "timeout": "30s", "max_attempts": max_attempts,
        "submitted_at": "2027-01-15T08:00:00Z",
    }))
    .unwrap();
    TaskRecord::queued(spec, Q.into(), 1)
}

fn failed(retry: bool) -> End {
    End::Failed {
        outcome: Outcome::Failed,
        error: ErrorBody::new(ErrorCode::ExecutorFailed, "boom"),
        retry,
    }
}

fn returned() -> End {
    End::HandedBack {
        outcome: Outcome::Returned,
        error: ErrorBody::new(ErrorCode::Unavailable, "stopping"),
    }
}

#[test]
fn a_queued_task_starts_its_first_attempt_and_succeeds() {
    let mut r = record(3);
    assert_eq!(admit(&r, Q), Admit::Proceed);
    assert_eq!(
        start(&mut r, "a", Q, at(1)),
        Started::Running { attempt: 1 }
    );
    assert_eq!(r.status, TaskStatus::Running);
    assert_eq!(r.open_attempt().unwrap().agent, "a");
    let s = settle(&mut r, "a", 1, at(2), &End::Succeeded(json!(42)));
    assert_eq!(s, Settled::Applied);
    assert_eq!(r.status, TaskStatus::Succeeded);
    assert_eq!(r.result, Some(json!(42)));
    assert_eq!(r.finished_at, Some(at(2)));
    assert_eq!(r.attempts[0].outcome, Some(Outcome::Succeeded));
    check(&r).unwrap();
    assert_eq!(admit(&r, Q), Admit::AlreadyFinal);
}

#[test]
fn a_retryable_failure_queues_the_task_and_the_next_attempt_gets_the_next_number() {
    let mut r = record(3);
    start(&mut r, "a", Q, at(1));
    assert_eq!(
        settle(&mut r, "a", 1, at(2), &failed(true)),
        Settled::Applied
    );
    assert_eq!(r.status, TaskStatus::Queued);
    assert!(r.finished_at.is_none());
    assert_eq!(
        start(&mut r, "b", Q, at(3)),
        Started::Running { attempt: 2 }
    );
    check(&r).unwrap();
}

#[test]
fn a_failure_without_retry_fails_the_task() {
    let mut r = record(3);
    start(&mut r, "a", Q, at(1));
    settle(&mut r, "a", 1, at(2), &failed(false));
    assert_eq!(r.status, TaskStatus::Failed);
    assert_eq!(r.failure.as_ref().unwrap().code, ErrorCode::ExecutorFailed);
    check(&r).unwrap();
}

#[test]
fn a_returned_attempt_does_not_use_an_attempt() {
    let mut r = record(1);
    start(&mut r, "a", Q, at(1));
    settle(&mut r, "a", 1, at(2), &returned());
    assert_eq!(r.status, TaskStatus::Queued);
    assert_eq!(
        start(&mut r, "b", Q, at(3)),
        Started::Running { attempt: 1 }
    );
    check(&r).unwrap();
}

#[test]
fn an_attempt_left_open_by_a_lost_agent_is_closed_lost_and_counts() {
    let mut r = record(3);
    start(&mut r, "a", Q, at(1));
    assert_eq!(
        start(&mut r, "b", Q, at(5)),
        Started::Running { attempt: 2 }
    );
    assert_eq!(r.attempts[0].outcome, Some(Outcome::Lost));
    assert_eq!(r.attempts[0].ended_at, Some(at(5)));
    assert_eq!(
        r.attempts[0].error.as_ref().unwrap().code,
        ErrorCode::AgentLost
    );
    // The lost agent coming back cannot settle what is no longer its attempt.
    let before = r.clone();
    assert_eq!(
        settle(&mut r, "a", 1, at(6), &End::Succeeded(json!(1))),
        Settled::MovedOn
    );
    assert_eq!(r, before);
    check(&r).unwrap();
}

#[test]
fn attempts_used_up_by_lost_agents_fail_the_task_as_agent_lost() {
    let mut r = record(2);
    start(&mut r, "a", Q, at(1));
    start(&mut r, "b", Q, at(2));
    match start(&mut r, "c", Q, at(3)) {
        Started::Exhausted { attempts, error } => {
            assert_eq!(attempts, 2);
            assert_eq!(error.code, ErrorCode::AgentLost);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.status, TaskStatus::Failed);
    assert!(r.attempts.iter().all(|a| a.ended_at.is_some()));
    check(&r).unwrap();
}

#[test]
fn a_policy_without_agent_lost_fails_the_task_after_one_lost_attempt() {
    let mut r = record(5);
    r.spec.retry.on = vec![RetryOn::ExecutorError];
    start(&mut r, "a", Q, at(1));
    assert!(matches!(
        start(&mut r, "b", Q, at(2)),
        Started::Exhausted { attempts: 1, .. }
    ));
    assert_eq!(r.status, TaskStatus::Failed);
    check(&r).unwrap();
}

#[test]
fn a_cancel_request_wins_over_the_attempts_outcome() {
    let mut r = record(3);
    start(&mut r, "a", Q, at(1));
    assert_eq!(
        request_cancel(&mut r, Some("no longer needed".into()), at(2)),
        CancelAsked::Requested
    );
    assert_eq!(r.status, TaskStatus::Running);
    assert_eq!(
        request_cancel(&mut r, None, at(3)),
        CancelAsked::AlreadyRequested
    );
    assert_eq!(
        settle(&mut r, "a", 1, at(4), &End::Succeeded(json!(1))),
        Settled::Cancelled
    );
    assert_eq!(r.status, TaskStatus::Cancelled);
    assert!(r.result.is_none());
    assert_eq!(r.attempts[0].outcome, Some(Outcome::Cancelled));
    assert!(r
        .failure
        .as_ref()
        .unwrap()
        .message
        .contains("no longer needed"));
    check(&r).unwrap();
}

#[test]
fn a_queued_task_is_cancelled_at_once_and_a_final_one_not_at_all() {
    let mut r = record(3);
    assert_eq!(request_cancel(&mut r, None, at(1)), CancelAsked::Cancelled);
    assert_eq!(r.status, TaskStatus::Cancelled);
    assert_eq!(r.finished_at, Some(at(1)));
    check(&r).unwrap();
    let before = r.clone();
    assert_eq!(
        request_cancel(&mut r, None, at(2)),
        CancelAsked::AlreadyFinal
    );
    assert_eq!(r, before);
}

#[test]
fn a_cancel_whose_agent_was_lost_is_settled_by_the_next_delivery() {
    let mut r = record(3);
    start(&mut r, "a", Q, at(1));
    request_cancel(&mut r, None, at(2));
    assert_eq!(admit(&r, Q), Admit::CancelRequested);
    assert!(cancel_unstarted(&mut r, at(3)));
    assert_eq!(r.status, TaskStatus::Cancelled);
    assert_eq!(r.attempts[0].outcome, Some(Outcome::Lost));
    check(&r).unwrap();
    assert!(!cancel_unstarted(&mut r, at(4)));
}

#[test]
fn the_second_copy_of_a_task_gives_way_to_the_first_that_started() {
    let mut r = record(3);
    start(&mut r, "a", Q2, at(1));
    assert_eq!(admit(&r, Q), Admit::OtherCopy);
    assert_eq!(admit(&r, Q2), Admit::Proceed);
}

#[test]
fn a_preempted_attempt_queues_the_task_without_using_an_attempt() {
    let mut r = record(1);
    start(&mut r, "a", Q, at(1));
    let end = End::HandedBack {
        outcome: Outcome::Preempted,
        error: ErrorBody::new(ErrorCode::Preempted, "slot taken"),
    };
    assert_eq!(settle(&mut r, "a", 1, at(2), &end), Settled::Applied);
    assert_eq!(r.status, TaskStatus::Queued);
    assert_eq!(next_attempt(&r), 1);
    check(&r).unwrap();
}

#[test]
fn check_finds_broken_records() {
    let mut r = record(1);
    r.status = TaskStatus::Running;
    assert!(check(&r).is_err(), "running with no attempt");
    let mut r = record(1);
    start(&mut r, "a", Q, at(1));
    r.attempts[0].attempt = 2;
    assert!(check(&r).is_err(), "numbering");
    let mut r = record(1);
    r.status = TaskStatus::Succeeded;
    assert!(check(&r).is_err(), "final without finished_at or result");
}

/// One thing that can happen to a task, as the fleet sees it.
#[derive(Debug, Clone)]
enum Step {
    /// Agent `agent` gets a delivery of the copy on queue `copy`.
    Deliver { agent: usize, copy: usize },
    /// Agent `agent`'s attempt ends so.
    End {
        agent: usize,
        how: usize,
        retry: bool,
    },
    /// Someone asks to cancel.
    Cancel,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3usize, 0..2usize).prop_map(|(agent, copy)| Step::Deliver { agent, copy }),
        3 => (0..3usize, 0..4usize, any::<bool>()).prop_map(|(agent, how, retry)| Step::End { agent, how, retry }),
        1 => Just(Step::Cancel),
    ]
}

/// Applies a step the way the agents and the dispatcher do; what each
/// agent believes is its running attempt is kept in `running`.
fn apply(r: &mut TaskRecord, running: &mut [Option<u32>; 3], step: &Step, now: Timestamp) {
    const AGENTS: [&str; 3] = ["a", "b", "c"];
    const COPIES: [&str; 2] = [Q, Q2];
    match *step {
        Step::Deliver { agent, copy } => match admit(r, COPIES[copy]) {
            Admit::Proceed => {
                if let Started::Running { attempt } = start(r, AGENTS[agent], COPIES[copy], now) {
                    running[agent] = Some(attempt);
                }
            }
            Admit::CancelRequested => {
                cancel_unstarted(r, now);
            }
            Admit::AlreadyFinal | Admit::OtherCopy => {}
        },
        Step::End { agent, how, retry } => {
            let Some(attempt) = running[agent].take() else {
                return;
            };
            let end = match how {
                0 => End::Succeeded(json!(attempt)),
                1 => returned(),
                2 => End::HandedBack {
                    outcome: Outcome::Preempted,
                    error: ErrorBody::new(ErrorCode::Preempted, "slot"),
                },
                _ => End::Failed {
                    outcome: Outcome::Failed,
                    error: ErrorBody::new(ErrorCode::ExecutorFailed, "boom"),
                    // As the agent decides: retry only with attempts left.
                    retry: retry && attempt < r.spec.max_attempts,
                },
            };
            settle(r, AGENTS[agent], attempt, now, &end);
        }
        Step::Cancel => {
            request_cancel(r, None, now);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Failures, cancels, preemptions, lost agents (an agent whose attempt
    /// is taken over by another delivery) and redeliveries in any order:
    /// the record keeps every rule, ends at most once, and never rewrites
    /// an attempt that has ended.
    #[test]
    fn any_sequence_keeps_the_records_rules(max_attempts in 1u32..4, steps in proptest::collection::vec(step(), 1..40)) {
        let mut r = record(max_attempts);
        let mut running = [None; 3];
        let mut final_record: Option<TaskRecord> = None;
        for (i, s) in steps.iter().enumerate() {
            let before = r.clone();
            apply(&mut r, &mut running, s, at(i as i64));
            if let Err(e) = check(&r) {
                prop_assert!(false, "after {s:?}: {e}\n{r:#?}");
            }
            if let Some(done) = &final_record {
                prop_assert_eq!(done, &r, "a final record changed after {:?}", s);
            }
            if r.status.is_final() {
                final_record.get_or_insert_with(|| r.clone());
            }
            prop_assert!(r.attempts.len() >= before.attempts.len());
            for (old, new) in before.attempts.iter().zip(&r.attempts) {
                if old.ended_at.is_some() {
                    prop_assert_eq!(old, new, "an ended attempt was rewritten after {:?}", s);
                } else {
                    prop_assert_eq!((&old.agent, old.attempt), (&new.agent, new.attempt));
                }
            }
        }
    }
}
