use super::{at, labels};
use crate::engine::matcher::Matcher;
use crate::engine::silences::{silenced_by, Silence, SilenceError, SilenceState};

fn silence(matchers: &[&str], starts: i64, ends: i64) -> Silence {
    Silence {
        id: "01JSIL".into(),
        matchers: matchers
            .iter()
            .map(|m| Matcher::parse(m).unwrap())
            .collect(),
        starts_at: at(starts),
        ends_at: at(ends),
        created_by: "ops@example.com".into(),
        comment: "maintenance of rack 4".into(),
        updated_at: at(starts),
    }
}

#[test]
fn state_follows_time_with_the_end_excluded() {
    let s = silence(&["agent=a1"], 100, 200);
    assert_eq!(s.state(at(99)), SilenceState::Pending);
    assert_eq!(s.state(at(100)), SilenceState::Active);
    assert_eq!(s.state(at(199)), SilenceState::Active);
    assert_eq!(s.state(at(200)), SilenceState::Expired);
}

#[test]
fn mutes_only_matching_alerts_while_active() {
    let s = silence(&["agent=a1", "severity=~warning|info"], 100, 200);
    let target = labels(&[("agent", "a1"), ("severity", "warning")]);
    assert!(s.mutes(&target, at(150)));
    assert!(!s.mutes(&target, at(50)), "pending");
    assert!(!s.mutes(&target, at(250)), "expired");
    assert!(!s.mutes(
        &labels(&[("agent", "a1"), ("severity", "critical")]),
        at(150)
    ));
    assert!(!s.mutes(
        &labels(&[("agent", "a2"), ("severity", "warning")]),
        at(150)
    ));
}

#[test]
fn expiring_an_active_silence_ends_it_now() {
    let mut s = silence(&["agent=a1"], 100, 1000);
    let target = labels(&[("agent", "a1")]);
    assert!(s.mutes(&target, at(300)));
    s.expire(at(300)).unwrap();
    assert_eq!(s.ends_at, at(300));
    assert_eq!(s.updated_at, at(300));
    assert_eq!(s.state(at(300)), SilenceState::Expired);
    assert!(!s.mutes(&target, at(300)));
    assert_eq!(s.expire(at(301)), Err(SilenceError::AlreadyExpired));
}

#[test]
fn expiring_a_pending_silence_means_it_never_mutes() {
    let mut s = silence(&["agent=a1"], 100, 1000);
    s.expire(at(50)).unwrap();
    assert_eq!((s.starts_at, s.ends_at), (at(50), at(50)));
    assert!(!s.mutes(&labels(&[("agent", "a1")]), at(500)));
}

#[test]
fn a_silence_that_would_match_every_alert_is_refused() {
    let everything = silence(&[r#"team="""#, "agent=~.*", "x!=y"], 0, 10);
    assert_eq!(everything.validate(), Err(SilenceError::MatchesEverything));
    let specific = silence(&[r#"team="""#, "agent=~.+"], 0, 10);
    assert_eq!(specific.validate(), Ok(()));
}

#[test]
fn validation_enforces_shape_and_bounds() {
    assert_eq!(silence(&["a=b"], 0, 10).validate(), Ok(()));
    assert_eq!(
        silence(&[], 0, 10).validate(),
        Err(SilenceError::NoMatchers)
    );
    assert_eq!(
        silence(&["a=b"], 10, 10).validate(),
        Err(SilenceError::EndNotAfterStart)
    );
    assert_eq!(
        silence(&["a=b"], 10, 5).validate(),
        Err(SilenceError::EndNotAfterStart)
    );

    let many: Vec<String> = (0..33).map(|i| format!("l{i}=v")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        silence(&many, 0, 10).validate(),
        Err(SilenceError::TooManyMatchers { count: 33 })
    );
    assert_eq!(silence(&many[..32], 0, 10).validate(), Ok(()));

    let mut s = silence(&["a=b"], 0, 10);
    s.comment = String::new();
    assert_eq!(s.validate(), Err(SilenceError::BadComment));
    s.comment = "c".repeat(1025);
    assert_eq!(s.validate(), Err(SilenceError::BadComment));
    s.comment = "c".repeat(1024);
    assert_eq!(s.validate(), Ok(()));
    s.created_by = String::new();
    assert_eq!(s.validate(), Err(SilenceError::BadCreatedBy));
    s.created_by = "u".repeat(129);
    assert_eq!(s.validate(), Err(SilenceError::BadCreatedBy));
    s.created_by = "u".into();
    s.id = String::new();
    assert_eq!(s.validate(), Err(SilenceError::BadId));
}

#[test]
fn silenced_by_lists_the_muting_silences() {
    let mut a = silence(&["agent=a1"], 0, 100);
    a.id = "a".into();
    let mut b = silence(&["agent=~a.*"], 0, 100);
    b.id = "b".into();
    let mut c = silence(&["agent=a2"], 0, 100);
    c.id = "c".into();
    let all = [a, b, c];
    assert_eq!(
        silenced_by(&all, &labels(&[("agent", "a1")]), at(50)),
        vec!["a", "b"]
    );
    assert!(silenced_by(&all, &labels(&[("agent", "a1")]), at(150)).is_empty());
}

#[test]
fn silences_survive_a_json_round_trip() {
    let s = silence(&["agent=a1", "severity=~warning|info"], 0, 100);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["matchers"][1], r#"severity=~"warning|info""#);
    assert_eq!(json["ends_at"], "2025-03-01T12:01:40Z");
    let back: Silence = serde_json::from_value(json).unwrap();
    assert_eq!(back, s);
}
