//! docker-compose.yml.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use clawfleet_deploy_tests::{
    interpolate, metrics_port, read, url_host, url_port, workspace_bins, yaml_str,
};
use serde_json::Value;

use crate::{binaries, check_invocation, Invocation};

/// The images built from the Dockerfile, and the stage each is.
pub const IMAGES: [(&str, &str); 2] = [
    ("clawfleet:local", "runtime"),
    ("clawfleet-openclaw:local", "openclaw"),
];

/// The compose file with its variables filled in, and what each clawfleet
/// service's binary makes of its settings.
pub struct Fleet {
    pub doc: Value,
    /// Effective configuration per service running a clawfleet service.
    pub configs: BTreeMap<String, Value>,
}

impl Fleet {
    pub fn services(&self) -> &serde_json::Map<String, Value> {
        self.doc["services"].as_object().expect("services")
    }

    /// The compose services running `clawfleet-agent`.
    pub fn agents(&self) -> BTreeMap<&str, &Value> {
        self.services()
            .iter()
            .filter(|(_, s)| program(s).as_deref() == Some("clawfleet-agent"))
            .map(|(n, s)| (n.as_str(), s))
            .collect()
    }
}

/// The variables the compose file is interpolated with: a gateway token,
/// as `.env` would give for the openclaw profile.
fn compose_env() -> BTreeMap<String, String> {
    [(
        "OPENCLAW_GATEWAY_TOKEN".to_string(),
        "compose-test-token".to_string(),
    )]
    .into()
}

/// The first word of a service's command.
pub fn program(service: &Value) -> Option<String> {
    service["command"][0].as_str().map(str::to_string)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Value::Array(list) => list
            .iter()
            .filter_map(|e| e.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Loads and checks the compose file once for every test.
pub fn fleet() -> &'static Fleet {
    static FLEET: OnceLock<Fleet> = OnceLock::new();
    FLEET.get_or_init(|| {
        let text = interpolate(&read("docker-compose.yml"), &compose_env()).expect("interpolation");
        let doc = yaml_str(&text).expect("docker-compose.yml parses");
        let bins = binaries();
        let workspace = workspace_bins();
        let mut configs = BTreeMap::new();
        let mut problems = Vec::new();
        for (name, service) in doc["services"].as_object().expect("services") {
            let Some(image) = service["image"].as_str() else {
                problems.push(format!("{name}: no image"));
                continue;
            };
            if !IMAGES.iter().any(|(i, _)| *i == image) {
                continue; // nats, prometheus: not ours
            }
            let Some(program) = program(service) else {
                problems.push(format!("{name}: runs {image} without a command"));
                continue;
            };
            if !workspace.contains_key(&program) {
                if !(program == "openclaw" && image == "clawfleet-openclaw:local") {
                    problems.push(format!(
                        "{name}: `{program}` is not a binary of the workspace (nor openclaw in the openclaw image)"
                    ));
                }
                continue;
            }
            let inv = Invocation {
                what: format!("compose service {name}"),
                program: &program,
                args: strings(&service["command"]).split_off(1),
                env: environment(service),
                config_file: None,
            };
            match check_invocation(&bins, &inv) {
                Ok(config) => {
                    configs.insert(name.clone(), config);
                }
                Err(e) => problems.push(e),
            }
        }
        assert!(problems.is_empty(), "docker-compose.yml:\n{}", problems.join("\n"));
        Fleet { doc, configs }
    })
}

#[test]
fn services_run_workspace_binaries_with_settings_they_accept() {
    let fleet = fleet();
    for expected in [
        "dispatcher",
        "health-monitor",
        "log-aggregator",
        "alerter",
        "agent-general",
    ] {
        assert!(
            fleet.configs.contains_key(expected),
            "no {expected} service"
        );
    }
    // Each image is built from its Dockerfile stage.
    for (name, service) in fleet.services() {
        let image = service["image"].as_str().unwrap_or_default();
        if let Some((_, stage)) = IMAGES.iter().find(|(i, _)| *i == image) {
            assert_eq!(service["build"]["context"], ".", "{name}");
            assert_eq!(service["build"]["target"], *stage, "{name} builds {image}");
        }
    }
}

#[test]
fn the_file_needs_no_variables_for_the_default_fleet() {
    // `docker compose up` without .env: the openclaw variables are optional.
    let text = interpolate(&read("docker-compose.yml"), &BTreeMap::new())
        .expect("no variable is required");
    yaml_str(&text).expect("parses");
}

#[test]
fn containers_serve_metrics_on_all_interfaces_and_health_checks_use_that_port() {
    let fleet = fleet();
    for (name, config) in &fleet.configs {
        let service = &fleet.services()[name];
        let test = strings(&service["healthcheck"]["test"]);
        assert!(!test.is_empty(), "{name} has no health check");
        assert_eq!(
            test[0], "CMD",
            "{name}: exec form, no shell in the image needed"
        );
        if config.get("metrics_addr").is_none() {
            // No /healthz to ask: the check must be a CLI command, which
            // check_invocation ran through clap.
            let inv = Invocation {
                what: format!("health check of {name}"),
                program: &test[1],
                args: test[2..].to_vec(),
                env: BTreeMap::new(),
                config_file: None,
            };
            assert_eq!(
                test[1], "clawfleet",
                "{name}: health check without /healthz"
            );
            check_invocation(&binaries(), &inv).unwrap();
            continue;
        }
        let port = metrics_port(config).unwrap_or_else(|e| panic!("{name}: {e}"));
        let url = test.last().unwrap();
        assert_eq!(test[1], "curl", "{name}: {test:?}");
        assert_eq!(url_host(url), Some("127.0.0.1"), "{name}: {url}");
        assert_eq!(url_port(url), Some(port), "{name}: {url} vs metrics_addr");
        assert!(url.ends_with("/healthz"), "{name}: {url}");
    }
    // The OpenClaw gateway: its readiness on the port it is started with,
    // which is the one its agents attach to.
    let gateway = &fleet.services()["openclaw-gateway"];
    let args = strings(&gateway["command"]);
    let port: u16 = args[args.iter().position(|a| a == "--port").unwrap() + 1]
        .parse()
        .unwrap();
    let check = strings(&gateway["healthcheck"]["test"]);
    assert_eq!(url_port(check.last().unwrap()), Some(port));
    assert!(check.last().unwrap().ends_with("/readyz"));
    let config: Value =
        serde_json::from_str(&read("deploy/openclaw/openclaw.json")).expect("openclaw.json");
    assert_eq!(config["gateway"]["port"], port);
    assert_eq!(
        config["gateway"]["bind"], "lan",
        "reachable from the agents' containers"
    );
    assert_eq!(config["gateway"]["auth"]["mode"], "token");
    assert_eq!(
        config["gateway"]["http"]["endpoints"]["chatCompletions"]["enabled"],
        true
    );
    let agent = &fleet.configs["agent-openclaw"];
    assert_eq!(agent["executor"]["kind"], "openclaw");
    let url = agent["executor"]["url"].as_str().unwrap();
    assert_eq!(url_host(url), Some("openclaw-gateway"));
    assert_eq!(url_port(url), Some(port));
    assert_eq!(
        agent["executor"]["token"], "<redacted>",
        "the token reaches the agent"
    );
}

#[test]
fn services_wait_for_healthy_dependencies_and_restart() {
    let fleet = fleet();
    let services = fleet.services();
    for (name, service) in services {
        assert!(
            matches!(
                service["restart"].as_str(),
                Some("unless-stopped" | "always" | "on-failure")
            ),
            "{name} has no restart policy"
        );
        if let Some(deps) = service["depends_on"].as_object() {
            for (dep, how) in deps {
                assert_eq!(how["condition"], "service_healthy", "{name} -> {dep}");
                assert!(
                    services
                        .get(dep)
                        .is_some_and(|d| d["healthcheck"]["test"].is_array()),
                    "{name} waits for {dep}, which has no health check"
                );
                // A service of a profile may only depend on services that run with it.
                if service["profiles"].is_null() {
                    assert!(services[dep]["profiles"].is_null(), "{name} -> {dep}");
                }
            }
        }
    }
    for name in ["dispatcher", "health-monitor", "log-aggregator", "alerter"] {
        assert!(
            services[name]["depends_on"].is_object(),
            "{name} starts after its dependencies"
        );
    }
}

#[test]
fn agents_scale_with_ids_of_their_own_and_drain_before_being_killed() {
    let fleet = fleet();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let hostname: String = hostname
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    for (name, service) in fleet.agents() {
        for fixed in ["container_name", "hostname", "ports"] {
            assert!(
                service[fixed].is_null(),
                "{name}: `{fixed}` stops `--scale` from working"
            );
        }
        assert!(
            !environment(service).contains_key("CLAWFLEET_AGENT_ID")
                && !strings(&service["command"]).contains(&"--agent-id".to_string()),
            "{name}: a fixed agent id would be shared by every replica"
        );
        // Without one, the id is the host name (a container's own id) and
        // the process id.
        let id = fleet.configs[name]["agent_id"].as_str().unwrap();
        assert!(
            id.starts_with(hostname.trim_matches('-')),
            "{name}: agent id {id} is not derived from the host name {hostname}"
        );
        let grace =
            humantime::parse_duration(service["stop_grace_period"].as_str().unwrap_or("10s"))
                .unwrap();
        let drain =
            humantime::parse_duration(fleet.configs[name]["drain_timeout"].as_str().unwrap())
                .unwrap();
        assert!(
            grace > drain + Duration::from_secs(5),
            "{name}: stop_grace_period {grace:?} leaves no time beyond drain_timeout {drain:?}"
        );
    }
}

/// `clawfleet up`'s default profiles and concurrency, from its help.
pub fn up_defaults() -> (BTreeMap<String, (BTreeSet<String>, u64)>, u64) {
    let exe = binaries().exe("clawfleet").unwrap();
    let out = std::process::Command::new(exe)
        .args(["up", "--help"])
        .output()
        .expect("clawfleet up --help");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let default_after = |flag: &str| -> String {
        let at = help
            .find(flag)
            .unwrap_or_else(|| panic!("no {flag} in up --help"));
        let rest = &help[at..];
        let start = rest.find("[default: ").expect("a default") + "[default: ".len();
        rest[start..start + rest[start..].find(']').unwrap()].to_string()
    };
    let mut profiles = BTreeMap::new();
    for spec in default_after("--profile <SPEC>").split(", ") {
        let (name, rest) = spec.split_once('=').expect("name=caps");
        let (caps, count) = rest.split_once('*').unwrap_or((rest, "1"));
        assert!(!caps.contains('@'), "regions are not mirrored");
        profiles.insert(
            name.to_string(),
            (
                caps.split('+').map(str::to_string).collect(),
                count.parse().unwrap(),
            ),
        );
    }
    let concurrency = default_after("--max-concurrency <N>").parse().unwrap();
    (profiles, concurrency)
}

#[test]
fn the_default_fleet_is_the_one_of_clawfleet_up() {
    let fleet = fleet();
    let (profiles, concurrency) = up_defaults();
    let mut sim = BTreeMap::new();
    for (name, service) in fleet.agents() {
        let config = &fleet.configs[name];
        if config["executor"]["kind"] != "sim" {
            assert!(
                !service["profiles"].is_null(),
                "{name}: only sim agents run by default"
            );
            continue;
        }
        assert!(service["profiles"].is_null(), "{name} runs by default");
        let caps: BTreeSet<String> = config["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        let replicas = service["deploy"]["replicas"].as_u64().unwrap_or(1);
        assert_eq!(config["max_concurrency"], concurrency, "{name}");
        let profile = name.strip_prefix("agent-").expect("agent-<profile>");
        sim.insert(profile.to_string(), (caps, replicas));
    }
    assert_eq!(
        sim, profiles,
        "compose agents vs clawfleet up's default profiles"
    );
    // And the other services of `up`.
    for service in [
        "nats",
        "dispatcher",
        "health-monitor",
        "log-aggregator",
        "alerter",
    ] {
        assert!(fleet.services().contains_key(service), "{service}");
        assert!(
            fleet.services()[service]["profiles"].is_null(),
            "{service} runs by default"
        );
    }
}

#[test]
fn host_ports_are_published_on_loopback_only() {
    for (name, service) in fleet().services() {
        for port in strings(&service["ports"]) {
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name} publishes {port} beyond loopback"
            );
        }
    }
}

#[test]
fn nats_is_configured_from_deploy_nats_conf_with_jetstream_and_monitoring() {
    let fleet = fleet();
    let nats = &fleet.services()["nats"];
    let volumes = strings(&nats["volumes"]);
    assert!(volumes.contains(&"./deploy/nats.conf:/etc/nats/nats.conf:ro".to_string()));
    assert!(
        volumes.iter().any(|v| v.ends_with(":/data")),
        "JetStream on a volume"
    );
    assert_eq!(strings(&nats["command"]), ["-c", "/etc/nats/nats.conf"]);
    let conf = read("deploy/nats.conf");
    assert!(conf.contains("store_dir: \"/data\""));
    assert!(conf.contains("http: 0.0.0.0:8222"));
    let check = strings(&nats["healthcheck"]["test"]);
    assert_eq!(url_port(check.last().unwrap()), Some(8222));
    // Every service reaches it at the URL they are given.
    for (name, config) in &fleet.configs {
        assert_eq!(config["nats_url"], "nats://nats:4222", "{name}");
    }
    let aggregator = &fleet.services()["log-aggregator"];
    assert!(
        strings(&aggregator["volumes"])
            .iter()
            .any(|v| v.ends_with(":/data")),
        "the log index on a volume"
    );
    assert!(fleet.configs["log-aggregator"]["data_dir"]
        .as_str()
        .unwrap()
        .starts_with("/data/"));
}
