use super::labels;
use crate::engine::labels::{LabelError, MAX_VALUE_LEN};
use crate::engine::matcher::{all_match, MatchOp, Matcher, MatcherError};

fn m(s: &str) -> Matcher {
    Matcher::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

#[test]
fn parses_every_operator() {
    for (input, op, value) in [
        ("severity=critical", MatchOp::Equal, "critical"),
        ("severity!=critical", MatchOp::NotEqual, "critical"),
        ("severity=~crit.*", MatchOp::Regex, "crit.*"),
        ("severity!~crit.*", MatchOp::NotRegex, "crit.*"),
    ] {
        let parsed = m(input);
        assert_eq!(parsed.name(), "severity", "{input}");
        assert_eq!(parsed.op(), op, "{input}");
        assert_eq!(parsed.value(), value, "{input}");
    }
}

#[test]
fn trims_whitespace_around_the_operator_and_unquotes() {
    let parsed = m("  severity =~  \"critical|page\"  ");
    assert_eq!(
        (parsed.name(), parsed.op(), parsed.value()),
        ("severity", MatchOp::Regex, "critical|page")
    );
    let parsed = m(r#"summary = "a \"quoted\" \\ value\nnext""#);
    assert_eq!(parsed.value(), "a \"quoted\" \\ value\nnext");
    // Whitespace inside quotes is kept; an operator inside the value is text.
    assert_eq!(m(r#"a=" x ""#).value(), " x ");
    assert_eq!(m("a=~b=c!=d").value(), "b=c!=d");
    // A spurious escape keeps its backslash, as in Alertmanager.
    assert_eq!(m(r"path=~\d+").value(), r"\d+");
    assert_eq!(m("job=").value(), "");
}

#[test]
fn refuses_malformed_matchers() {
    for input in ["", "=x", "severity", "severity~=x", "  =~ x", "a b=c"] {
        assert!(
            matches!(Matcher::parse(input), Err(MatcherError::Syntax { .. })),
            "{input:?}: {:?}",
            Matcher::parse(input)
        );
    }
    assert_eq!(
        Matcher::parse(r#"job=value""#).unwrap_err(),
        MatcherError::UnescapedQuote
    );
    assert_eq!(
        Matcher::parse(r#"job="a"b""#).unwrap_err(),
        MatcherError::UnescapedQuote
    );
    assert_eq!(
        Matcher::parse(r#"job="value"#).unwrap_err(),
        MatcherError::UnterminatedQuote
    );
    assert!(matches!(
        Matcher::parse("1job=x"),
        Err(MatcherError::Name(LabelError::InvalidName { .. }))
    ));
    assert!(matches!(
        Matcher::parse("job=~(unclosed"),
        Err(MatcherError::Regex { .. })
    ));
    let long = format!("job={}", "x".repeat(MAX_VALUE_LEN + 1));
    assert_eq!(
        Matcher::parse(&long).unwrap_err(),
        MatcherError::ValueTooLong
    );
}

#[test]
fn regex_size_is_bounded() {
    let err = Matcher::new("x", MatchOp::Regex, "(?:a{1000}){1000}").unwrap_err();
    assert!(matches!(err, MatcherError::Regex { .. }), "{err:?}");
    assert!(Matcher::new("x", MatchOp::Regex, "a{10}").is_ok());
}

#[test]
fn regexes_are_anchored_at_both_ends() {
    let set = labels(&[("severity", "critical")]);
    assert!(!m("severity=~crit").matches(&set));
    assert!(!m("severity=~itical").matches(&set));
    assert!(m("severity=~crit.*").matches(&set));
    assert!(m("severity=~warning|critical").matches(&set));
    assert!(m("severity!~crit").matches(&set));
    assert!(!m("severity!~crit.*").matches(&set));
}

#[test]
fn an_absent_label_matches_as_the_empty_string() {
    let without = labels(&[("alertname", "x")]);
    let with = labels(&[("alertname", "x"), ("team", "infra")]);
    assert!(m(r#"team="""#).matches(&without));
    assert!(!m(r#"team="""#).matches(&with));
    assert!(!m(r#"team!="""#).matches(&without));
    assert!(m(r#"team!="""#).matches(&with));
    assert!(m("team=~.*").matches(&without));
    assert!(!m("team=~.+").matches(&without));
    assert!(m("team!~infra").matches(&without));
    assert!(!m("team=infra").matches(&without));
    assert!(m("team!=infra").matches(&without));
}

#[test]
fn display_round_trips_through_parse() {
    for (name, op, value) in [
        ("severity", MatchOp::Regex, "critical|page"),
        ("a", MatchOp::Equal, ""),
        (
            "a",
            MatchOp::NotEqual,
            "with \"quotes\" and \\ and\nnewline",
        ),
        ("path", MatchOp::NotRegex, r"/v1/\d+\.json"),
        ("b", MatchOp::Equal, " spaced "),
    ] {
        let original = Matcher::new(name, op, value).unwrap();
        let printed = original.to_string();
        let reparsed = Matcher::parse(&printed).unwrap();
        assert_eq!(reparsed, original, "{printed}");
        assert_eq!(reparsed.value(), value);
    }
    assert_eq!(
        m("severity=~critical|page").to_string(),
        r#"severity=~"critical|page""#
    );
}

#[test]
fn serde_uses_the_string_form() {
    let parsed: Vec<Matcher> =
        serde_json::from_str(r#"["severity=~critical|page", "team!=\"\""]"#).unwrap();
    assert_eq!(parsed[0], m("severity=~critical|page"));
    assert_eq!(parsed[1].op(), MatchOp::NotEqual);
    assert_eq!(
        serde_json::to_string(&parsed[0]).unwrap(),
        r#""severity=~\"critical|page\"""#
    );
    let back: Matcher = serde_json::from_str(&serde_json::to_string(&parsed[1]).unwrap()).unwrap();
    assert_eq!(back, parsed[1]);
    assert!(serde_json::from_str::<Matcher>(r#""no operator""#).is_err());
}

#[test]
fn all_match_needs_every_matcher() {
    let set = labels(&[("alertname", "x"), ("severity", "page")]);
    assert!(all_match(&[], &set));
    assert!(all_match(
        &[m("alertname=x"), m("severity=~page|critical")],
        &set
    ));
    assert!(!all_match(
        &[m("alertname=x"), m("severity=critical")],
        &set
    ));
}
