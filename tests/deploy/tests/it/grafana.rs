//! deploy/grafana/clawfleet.json.

use std::collections::BTreeSet;

use clawfleet_deploy_tests::{
    base_metric, check_promql, defined_metrics, documented_metrics, promql_refs, read,
};
use serde_json::Value;

fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        out.push(p);
        for inner in p["panels"].as_array().into_iter().flatten() {
            out.push(inner);
        }
    }
    out
}

#[test]
fn the_dashboard_queries_documented_metrics_and_shows_all_of_them() {
    let dashboard: Value =
        serde_json::from_str(&read("deploy/grafana/clawfleet.json")).expect("valid JSON");
    assert_eq!(dashboard["uid"], "clawfleet");
    let documented = documented_metrics();
    let defined = defined_metrics();

    // The Prometheus data source is chosen on import, as a variable.
    let vars = dashboard["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["name"] == "datasource"
        && v["type"] == "datasource"
        && v["query"] == "prometheus"));

    let mut problems = Vec::new();
    let mut shown = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for v in vars.iter().filter(|v| v["type"] == "query") {
        let q = v["definition"].as_str().unwrap();
        problems.extend(check_promql(q, &documented, &defined));
    }
    for p in panels(&dashboard) {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "panel id twice: {title}"
        );
        assert!(p["gridPos"]["w"].as_u64().is_some(), "{title}: gridPos");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            problems.extend(
                check_promql(expr, &documented, &defined)
                    .into_iter()
                    .map(|e| format!("{title}: {e}")),
            );
            for m in promql_refs(expr).metrics {
                if let Some((base, _)) = base_metric(&m, &documented) {
                    shown.insert(base);
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let all: BTreeSet<String> = documented.into_keys().collect();
    let missing: Vec<&String> = all.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "series the dashboard does not show: {missing:?}"
    );
}
