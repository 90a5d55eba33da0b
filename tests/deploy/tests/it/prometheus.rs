//! deploy/prometheus: scrape configurations and alert rules.

use std::collections::BTreeSet;

use clawfleet_deploy_tests::{
    check_promql, defined_metrics, documented_metrics, metrics_port, promql_refs, yaml,
};
use serde_json::Value;

use crate::compose::fleet;
use crate::kubernetes::pods_with_metrics_port;

fn jobs(config: &Value) -> Vec<&Value> {
    config["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .collect()
}

fn job_names(config: &Value) -> BTreeSet<String> {
    jobs(config)
        .iter()
        .map(|j| j["job_name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn compose_scrape_targets_are_the_services_metrics_ports() {
    let config = yaml("deploy/prometheus/prometheus.yml");
    let fleet = fleet();
    // docker-compose.yml mounts this directory where the config expects it.
    let prometheus = &fleet.services()["prometheus"];
    assert!(prometheus["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "./deploy/prometheus:/etc/prometheus:ro"));
    assert!(prometheus["command"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "--config.file=/etc/prometheus/prometheus.yml"));
    for rule_file in config["rule_files"].as_array().unwrap() {
        let rel = rule_file
            .as_str()
            .unwrap()
            .strip_prefix("/etc/prometheus/")
            .expect("a file of the mounted directory");
        yaml(&format!("deploy/prometheus/{rel}"));
    }

    let mut scraped = BTreeSet::new();
    for job in jobs(&config) {
        let name = job["job_name"].as_str().unwrap();
        for sc in job["static_configs"].as_array().into_iter().flatten() {
            for target in sc["targets"].as_array().unwrap() {
                let (host, port) = target.as_str().unwrap().rsplit_once(':').unwrap();
                let service = fleet
                    .configs
                    .get(host)
                    .unwrap_or_else(|| panic!("job {name}: no clawfleet service {host}"));
                assert_eq!(
                    metrics_port(service).unwrap().to_string(),
                    port,
                    "job {name}"
                );
                scraped.insert(host.to_string());
            }
        }
        for sd in job["dns_sd_configs"].as_array().into_iter().flatten() {
            let names: BTreeSet<String> = sd["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect();
            let agents: BTreeSet<String> = fleet.agents().keys().map(|s| s.to_string()).collect();
            assert_eq!(names, agents, "job {name} looks up every agent service");
            for agent in &agents {
                assert_eq!(
                    metrics_port(&fleet.configs[agent]).unwrap(),
                    sd["port"].as_u64().unwrap() as u16,
                    "job {name}: {agent}"
                );
            }
            scraped.extend(agents);
        }
    }
    // Every service that serves /metrics is scraped; the others have no
    // metrics_addr at all.
    for (name, config) in &fleet.configs {
        if config.get("metrics_addr").is_some() {
            assert!(
                scraped.contains(name),
                "{name} serves /metrics but is not scraped"
            );
        } else {
            assert!(!scraped.contains(name));
        }
    }
}

#[test]
fn kubernetes_scrape_jobs_find_the_pods_serving_metrics() {
    let compose = yaml("deploy/prometheus/prometheus.yml");
    let k8s = yaml("deploy/prometheus/kubernetes.yml");
    assert_eq!(
        job_names(&k8s),
        job_names(&compose),
        "the same jobs for the alert rules"
    );
    let components = pods_with_metrics_port();
    let mut kept = BTreeSet::new();
    for job in jobs(&k8s) {
        let name = job["job_name"].as_str().unwrap();
        assert_eq!(
            job["kubernetes_sd_configs"][0]["namespaces"]["names"][0],
            "clawfleet"
        );
        let relabel = job["relabel_configs"].as_array().unwrap();
        let keep = relabel
            .iter()
            .find(|r| {
                r["action"] == "keep"
                    && r["source_labels"][1]
                        == "__meta_kubernetes_pod_label_app_kubernetes_io_component"
            })
            .unwrap_or_else(|| panic!("job {name} keeps one component"));
        let component = keep["regex"]
            .as_str()
            .unwrap()
            .strip_prefix("clawfleet;")
            .unwrap();
        assert!(
            components.contains(component),
            "job {name}: no pod of component {component} has a container port named metrics"
        );
        assert!(relabel.iter().any(|r| r["action"] == "keep"
            && r["source_labels"][0] == "__meta_kubernetes_pod_container_port_name"
            && r["regex"] == "metrics"));
        kept.insert(component.to_string());
    }
    assert_eq!(
        kept, components,
        "every component serving /metrics is scraped"
    );
}

#[test]
fn alert_rules_use_documented_metrics_and_known_jobs() {
    let rules = yaml("deploy/prometheus/alerts.yml");
    let documented = documented_metrics();
    let defined = defined_metrics();
    let jobs = job_names(&yaml("deploy/prometheus/prometheus.yml"));
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let alert = rule["alert"].as_str().expect("alerting rules only");
            assert!(names.insert(alert.to_string()), "{alert} twice");
            assert!(
                matches!(
                    rule["labels"]["severity"].as_str(),
                    Some("critical" | "warning" | "info")
                ),
                "{alert}: severity"
            );
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{alert}: summary"
            );
            assert!(
                rule["annotations"]["description"].is_string(),
                "{alert}: description"
            );
            if let Some(f) = rule["for"].as_str() {
                humantime::parse_duration(f).unwrap_or_else(|e| panic!("{alert}: for {f}: {e}"));
            }
            let expr = rule["expr"].as_str().expect("expr");
            problems.extend(
                check_promql(expr, &documented, &defined)
                    .into_iter()
                    .map(|p| format!("{alert}: {p}")),
            );
            for job in promql_refs(expr).jobs {
                if !jobs.contains(&job) {
                    problems.push(format!("{alert}: no scrape job {job}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The cases the rules are there for.
    for needed in [
        "ClawfleetServiceDown",
        "ClawfleetAgentsDown",
        "ClawfleetQueueGrowing",
        "ClawfleetHighFailureRate",
        "ClawfleetNoHealthyAgents",
    ] {
        assert!(names.contains(needed), "no {needed}");
    }
}

#[test]
fn documented_metrics_are_the_ones_the_crates_define() {
    let documented: BTreeSet<String> = documented_metrics().into_keys().collect();
    let defined = defined_metrics();
    assert!(!documented.is_empty());
    assert_eq!(
        documented, defined,
        "docs/metrics.md vs the metrics.rs files"
    );
}
