use std::time::Duration;

use super::labels;
use crate::engine::matcher::Matcher;
use crate::engine::routing::{
    GroupBy, ResolvedRoute, Route, RouteErrorKind, DEFAULT_GROUP_INTERVAL, DEFAULT_GROUP_WAIT,
    DEFAULT_REPEAT_INTERVAL,
};

fn route(receiver: Option<&str>, matchers: &[&str]) -> Route {
    Route {
        receiver: receiver.map(str::to_owned),
        matchers: matchers
            .iter()
            .map(|m| Matcher::parse(m).unwrap())
            .collect(),
        ..Route::default()
    }
}

fn receivers(tree: &ResolvedRoute, pairs: &[(&str, &str)]) -> Vec<String> {
    tree.match_routes(&labels(pairs))
        .iter()
        .map(|r| r.receiver.clone())
        .collect()
}

#[test]
fn the_root_gets_alertmanager_defaults() {
    let tree = route(Some("default"), &[]).resolve().unwrap();
    assert_eq!(tree.group_wait, DEFAULT_GROUP_WAIT);
    assert_eq!(tree.group_wait, Duration::from_secs(30));
    assert_eq!(tree.group_interval, DEFAULT_GROUP_INTERVAL);
    assert_eq!(tree.group_interval, Duration::from_secs(300));
    assert_eq!(tree.repeat_interval, DEFAULT_REPEAT_INTERVAL);
    assert_eq!(tree.repeat_interval, Duration::from_secs(4 * 3600));
    assert_eq!(tree.group_by, GroupBy::Labels(vec![]));
    assert_eq!(tree.key, "{}");
}

#[test]
fn the_root_must_have_a_receiver_and_no_matchers_or_continue() {
    let kind = |r: Route| r.resolve().unwrap_err().kind;
    assert_eq!(kind(route(None, &[])), RouteErrorKind::RootWithoutReceiver);
    assert_eq!(
        kind(route(Some("d"), &["a=b"])),
        RouteErrorKind::RootWithMatchers
    );
    let mut r = route(Some("d"), &[]);
    r.continue_ = true;
    assert_eq!(kind(r), RouteErrorKind::RootWithContinue);
    assert_eq!(kind(route(Some(""), &[])), RouteErrorKind::BadReceiver);
}

#[test]
fn children_inherit_what_they_leave_unset() {
    let mut root = route(Some("default"), &[]);
    root.group_by = Some(vec!["alertname".into()]);
    root.group_wait = Some(Duration::from_secs(10));
    root.repeat_interval = Some(Duration::from_secs(3600));
    let mut child = route(None, &["severity=page"]);
    child.group_interval = Some(Duration::from_secs(60));
    let mut grandchild = route(Some("pager"), &["team=infra"]);
    grandchild.group_by = Some(vec!["agent".into(), "alertname".into()]);
    child.routes = vec![grandchild];
    root.routes = vec![child];

    let tree = root.resolve().unwrap();
    let child = &tree.routes[0];
    assert_eq!(child.receiver, "default");
    assert_eq!(child.group_by, GroupBy::Labels(vec!["alertname".into()]));
    assert_eq!(child.group_wait, Duration::from_secs(10));
    assert_eq!(child.group_interval, Duration::from_secs(60));
    assert_eq!(child.repeat_interval, Duration::from_secs(3600));
    let grandchild = &child.routes[0];
    assert_eq!(grandchild.receiver, "pager");
    assert_eq!(
        grandchild.group_by,
        GroupBy::Labels(vec!["agent".into(), "alertname".into()])
    );
    assert_eq!(grandchild.group_interval, Duration::from_secs(60));
    assert_eq!(grandchild.key, r#"{}/{severity="page"}/{team="infra"}"#);
    assert_eq!((tree.id, child.id, grandchild.id), (0, 1, 2));
    assert_eq!(
        tree.receivers().into_iter().collect::<Vec<_>>(),
        vec!["default", "pager"]
    );
}

#[test]
fn the_first_matching_child_wins() {
    let mut root = route(Some("default"), &[]);
    root.routes = vec![
        route(Some("first"), &["severity=~page|critical"]),
        route(Some("second"), &["severity=page"]),
    ];
    let tree = root.resolve().unwrap();
    assert_eq!(receivers(&tree, &[("severity", "page")]), ["first"]);
    assert_eq!(receivers(&tree, &[("severity", "info")]), ["default"]);
}

#[test]
fn continue_lets_later_siblings_match_too() {
    let mut root = route(Some("default"), &[]);
    let mut audit = route(Some("audit"), &[r#"severity!="""#]);
    audit.continue_ = true;
    root.routes = vec![
        audit,
        route(Some("pager"), &["severity=page"]),
        route(Some("never"), &["severity=page"]),
    ];
    let tree = root.resolve().unwrap();
    assert_eq!(
        receivers(&tree, &[("severity", "page")]),
        ["audit", "pager"]
    );
    // Only the continue route matched: the root does not add itself.
    assert_eq!(receivers(&tree, &[("severity", "info")]), ["audit"]);
    assert_eq!(receivers(&tree, &[("team", "x")]), ["default"]);
}

#[test]
fn a_node_whose_children_do_not_match_takes_the_alert_itself() {
    let mut root = route(Some("default"), &[]);
    let mut infra = route(Some("infra"), &["team=infra"]);
    infra.routes = vec![route(Some("infra-pager"), &["severity=page"])];
    root.routes = vec![infra];
    let tree = root.resolve().unwrap();
    assert_eq!(
        receivers(&tree, &[("team", "infra"), ("severity", "page")]),
        ["infra-pager"]
    );
    assert_eq!(
        receivers(&tree, &[("team", "infra"), ("severity", "info")]),
        ["infra"]
    );
    assert_eq!(receivers(&tree, &[("team", "web")]), ["default"]);
}

#[test]
fn group_by_all_groups_by_every_label() {
    let mut root = route(Some("default"), &[]);
    root.group_by = Some(vec!["...".into()]);
    let tree = root.resolve().unwrap();
    assert_eq!(tree.group_by, GroupBy::All);
    let alert = labels(&[("alertname", "x"), ("agent", "a1")]);
    assert_eq!(tree.group_by.group_labels(&alert), alert);
    assert_eq!(
        tree.group_key(&tree.group_by.group_labels(&alert)),
        r#"{}:{agent="a1", alertname="x"}"#
    );
}

#[test]
fn group_labels_keep_only_the_grouping_labels_present() {
    let by = GroupBy::Labels(vec!["alertname".into(), "cluster".into()]);
    assert_eq!(
        by.group_labels(&labels(&[("alertname", "x"), ("agent", "a1")])),
        labels(&[("alertname", "x")])
    );
    assert!(GroupBy::Labels(vec![])
        .group_labels(&labels(&[("a", "b")]))
        .is_empty());
}

#[test]
fn group_keys_use_alertmanager_format() {
    let mut root = route(Some("default"), &[]);
    root.routes = vec![route(Some("p"), &["team=infra", "severity=~page|critical"])];
    let tree = root.resolve().unwrap();
    assert_eq!(
        tree.group_key(&labels(&[("alertname", "x")])),
        r#"{}:{alertname="x"}"#
    );
    assert_eq!(tree.group_key(&labels(&[])), "{}:{}");
    // Matchers sorted by name, values quoted and escaped as Go does.
    assert_eq!(
        tree.routes[0].group_key(&labels(&[("alertname", "say \"hi\"\n")])),
        r#"{}/{severity=~"page|critical",team="infra"}:{alertname="say \"hi\"\n"}"#
    );
    // Pairs sort as strings, so `a1=` comes before `a=`, as in Go.
    assert_eq!(
        tree.group_key(&labels(&[("a", "y"), ("a1", "x")])),
        r#"{}:{a1="x", a="y"}"#
    );
}

#[test]
fn bad_group_by_and_intervals_are_refused_with_their_path() {
    let mut root = route(Some("d"), &[]);
    let mut child = route(None, &["a=b"]);
    child.group_by = Some(vec!["...".into(), "alertname".into()]);
    root.routes = vec![route(None, &["x=y"]), child];
    let err = root.resolve().unwrap_err();
    assert_eq!(err.path, "root.routes[1]");
    assert_eq!(err.kind, RouteErrorKind::GroupByAllWithOthers);

    let mut root = route(Some("d"), &[]);
    root.group_by = Some(vec!["a".into(), "a".into()]);
    assert_eq!(
        root.resolve().unwrap_err().kind,
        RouteErrorKind::DuplicateGroupBy("a".into())
    );
    root.group_by = Some(vec!["not-a-label".into()]);
    assert!(matches!(
        root.resolve().unwrap_err().kind,
        RouteErrorKind::GroupByLabel(_)
    ));
    root.group_by = None;
    root.group_interval = Some(Duration::ZERO);
    assert_eq!(
        root.resolve().unwrap_err().kind,
        RouteErrorKind::ZeroGroupInterval
    );
    root.group_interval = None;
    root.repeat_interval = Some(Duration::ZERO);
    assert_eq!(
        root.resolve().unwrap_err().kind,
        RouteErrorKind::ZeroRepeatInterval
    );
}

#[test]
fn deep_or_huge_trees_are_refused() {
    let mut deep = route(None, &["a=b"]);
    for _ in 0..20 {
        let mut parent = route(None, &["a=b"]);
        parent.routes = vec![deep];
        deep = parent;
    }
    let mut root = route(Some("d"), &[]);
    root.routes = vec![deep];
    assert_eq!(root.resolve().unwrap_err().kind, RouteErrorKind::TooDeep);

    let mut wide = route(Some("d"), &[]);
    wide.routes = (0..2000).map(|_| route(None, &["a=b"])).collect();
    assert_eq!(wide.resolve().unwrap_err().kind, RouteErrorKind::TooMany);
}

#[test]
fn routes_deserialize_with_alertmanager_field_names() {
    let parsed: Route = serde_json::from_str(
        r#"{
            "receiver": "default",
            "group_by": ["alertname"],
            "group_wait": "10s",
            "routes": [
                {"matchers": ["severity=page"], "receiver": "pager", "continue": true, "repeat_interval": "1h"},
                {"matchers": ["team=~infra|ops"]}
            ]
        }"#,
    )
    .unwrap();
    assert!(parsed.routes[0].continue_);
    assert_eq!(
        parsed.routes[0].repeat_interval,
        Some(Duration::from_secs(3600))
    );
    assert_eq!(parsed.routes[1].group_wait, None);
    let tree = parsed.resolve().unwrap();
    assert_eq!(tree.routes[1].receiver, "default");
    assert_eq!(tree.routes[1].group_wait, Duration::from_secs(10));
    let back: Route = serde_json::from_value(serde_json::to_value(&parsed).unwrap()).unwrap();
    assert_eq!(back, parsed);
    assert!(serde_json::from_str::<Route>(r#"{"receiver": "d", "grup_by": []}"#).is_err());
}
