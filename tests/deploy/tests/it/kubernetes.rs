//! deploy/k8s: the kustomization, its components and manifests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clawfleet_deploy_tests::{metrics_port, read, root, toml_file, url_port, yaml, yaml_docs};
use clawfleet_shared::subjects;
use clawfleet_shared::Priority;
use serde_json::Value;

use crate::compose::up_defaults;
use crate::{binaries, check_invocation, Invocation};

const DIR: &str = "deploy/k8s";
/// The components of deploy/k8s, each in a directory of its own.
const COMPONENTS: [&str; 2] = ["keda", "openclaw"];
/// Images built from the Dockerfile (before kustomize's `images` rewrite).
const IMAGES: [&str; 2] = ["clawfleet", "clawfleet-openclaw"];

/// Every manifest (file, document) of the kustomization and its components.
fn manifests() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for dir in
        std::iter::once(DIR.to_string()).chain(COMPONENTS.iter().map(|c| format!("{DIR}/{c}")))
    {
        let k = yaml(&format!("{dir}/kustomization.yaml"));
        for r in k["resources"].as_array().expect("resources") {
            let file = format!("{dir}/{}", r.as_str().unwrap());
            for doc in yaml_docs(&file) {
                out.push((file.clone(), doc));
            }
        }
    }
    out
}

/// ConfigMap generators: name → files.
fn generators() -> BTreeMap<String, Vec<PathBuf>> {
    let mut out = BTreeMap::new();
    for dir in
        std::iter::once(DIR.to_string()).chain(COMPONENTS.iter().map(|c| format!("{DIR}/{c}")))
    {
        let k = yaml(&format!("{dir}/kustomization.yaml"));
        for g in k["configMapGenerator"].as_array().into_iter().flatten() {
            let files = g["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| root().join(&dir).join(f.as_str().unwrap()))
                .collect();
            out.insert(g["name"].as_str().unwrap().to_string(), files);
        }
    }
    out
}

/// A workload: its kind, name, pod labels and pod spec.
struct Workload {
    kind: String,
    name: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    pod: Value,
}

impl Workload {
    /// A name its pods get (the longest form for a Deployment).
    fn pod_name(&self) -> String {
        match self.kind.as_str() {
            "StatefulSet" => format!("{}-0", self.name),
            _ => format!("{}-6d4cf56db6-x7k2p", self.name),
        }
    }

    fn containers(&self) -> Vec<&Value> {
        ["initContainers", "containers"]
            .iter()
            .flat_map(|k| self.pod[k].as_array().into_iter().flatten())
            .collect()
    }
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn workloads() -> Vec<Workload> {
    manifests()
        .into_iter()
        .filter(|(_, d)| matches!(d["kind"].as_str(), Some("Deployment" | "StatefulSet")))
        .map(|(_, d)| Workload {
            kind: d["kind"].as_str().unwrap().to_string(),
            name: d["metadata"]["name"].as_str().unwrap().to_string(),
            labels: string_map(&d["spec"]["template"]["metadata"]["labels"]),
            annotations: string_map(&d["spec"]["template"]["metadata"]["annotations"]),
            pod: d["spec"]["template"]["spec"].clone(),
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The containerPort of a probe's or Service's port (a name or a number).
fn port_of(container: &Value, port: &Value) -> Option<u16> {
    match port {
        Value::Number(n) => n.as_u64().map(|n| n as u16),
        Value::String(name) => container["ports"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == *name)
            .and_then(|p| p["containerPort"].as_u64())
            .map(|n| n as u16),
        _ => None,
    }
}

/// Bytes of a Kubernetes quantity (`512Mi`, `2Gi`).
fn bytes(q: &str) -> u64 {
    let (n, unit) = q.split_at(q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len()));
    let n: u64 = n.parse().unwrap();
    n * match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => panic!("unit {other}"),
    }
}

/// The components whose pods serve /metrics (a container port named metrics).
pub fn pods_with_metrics_port() -> BTreeSet<String> {
    workloads()
        .iter()
        .filter(|w| {
            w.containers().iter().any(|c| {
                c["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == "metrics")
            })
        })
        .map(|w| w.labels["app.kubernetes.io/component"].clone())
        .collect()
}

/// Checks one clawfleet container and returns its effective configuration
/// (`Null` for programs without one).
fn check_container(w: &Workload, c: &Value) -> Value {
    let what = format!(
        "{} {} container {}",
        w.kind,
        w.name,
        c["name"].as_str().unwrap()
    );
    assert!(
        c["command"].is_null(),
        "{what}: `command` would replace the image's entrypoint (tini); give the program in `args`"
    );
    let args = strings(&c["args"]);
    let program = args
        .first()
        .unwrap_or_else(|| panic!("{what}: no program in args"));
    if program == "openclaw" {
        assert_eq!(
            c["image"], "clawfleet-openclaw",
            "{what}: openclaw is in the openclaw image only"
        );
        return Value::Null;
    }
    let mut env = BTreeMap::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            w.pod_name()
        } else if e["valueFrom"]["secretKeyRef"].is_object() {
            "k8s-test-secret".to_string()
        } else {
            panic!("{what}: unsupported variable source {e}");
        };
        env.insert(name, value);
    }
    // CLAWFLEET_CONFIG names a file of a mounted, generated ConfigMap.
    let config_file = env.remove("CLAWFLEET_CONFIG").map(|path| {
        let path = Path::new(&path);
        let mount = c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| Some(Path::new(m["mountPath"].as_str().unwrap())) == path.parent())
            .unwrap_or_else(|| panic!("{what}: nothing mounted at {}", path.display()));
        let volume = w.pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("{what}: no volume {}", mount["name"]));
        let map = volume["configMap"]["name"]
            .as_str()
            .expect("a ConfigMap volume");
        let files = generators()
            .remove(map)
            .unwrap_or_else(|| panic!("{what}: no generator for ConfigMap {map}"));
        files
            .into_iter()
            .find(|f| f.file_name() == path.file_name())
            .unwrap_or_else(|| panic!("{what}: ConfigMap {map} has no {}", path.display()))
    });
    let inv = Invocation {
        what: what.clone(),
        program,
        args: args[1..].to_vec(),
        env,
        config_file,
    };
    check_invocation(&binaries(), &inv).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn workloads_run_workspace_binaries_with_settings_they_accept() {
    let mut configs = BTreeMap::new();
    for w in workloads() {
        assert_eq!(w.pod["securityContext"]["runAsNonRoot"], true, "{}", w.name);
        assert_eq!(
            w.labels["app.kubernetes.io/name"], "clawfleet",
            "{}",
            w.name
        );
        for c in w.containers() {
            let cname = c["name"].as_str().unwrap();
            let what = format!("{} {cname}", w.name);
            let requests = &c["resources"]["requests"];
            assert!(
                requests["cpu"].is_string() && requests["memory"].is_string(),
                "{what}: resource requests"
            );
            assert!(
                c["resources"]["limits"]["memory"].is_string(),
                "{what}: memory limit"
            );
            assert_eq!(
                c["securityContext"]["allowPrivilegeEscalation"], false,
                "{what}"
            );
            if !IMAGES.contains(&c["image"].as_str().unwrap()) {
                continue;
            }
            let config = check_container(&w, c);
            configs.insert(what.clone(), config.clone());
            check_probes(&w, c, &config);
            if config.is_null() {
                continue;
            }
            if let Some(port) = config
                .get("metrics_addr")
                .filter(|a| !a.is_null())
                .map(|_| metrics_port(&config).unwrap_or_else(|e| panic!("{what}: {e}")))
            {
                let named = port_of(c, &Value::from("metrics"));
                assert_eq!(
                    named,
                    Some(port),
                    "{what}: container port `metrics` vs metrics_addr"
                );
                assert_eq!(
                    w.annotations.get("prometheus.io/port"),
                    Some(&port.to_string()),
                    "{what}"
                );
                assert_eq!(
                    w.annotations.get("prometheus.io/path").map(String::as_str),
                    Some("/metrics")
                );
            } else {
                assert!(port_of(c, &Value::from("metrics")).is_none(), "{what}");
            }
            assert_eq!(config["nats_url"], "nats://nats:4222", "{what}");
            if let Some(drain) = config["drain_timeout"].as_str() {
                // An agent: its id is its pod's name, and it drains before it is killed.
                assert_eq!(
                    config["agent_id"],
                    w.pod_name(),
                    "{what}: agent id from the pod name"
                );
                let drain = humantime::parse_duration(drain).unwrap();
                let grace = Duration::from_secs(
                    w.pod["terminationGracePeriodSeconds"]
                        .as_u64()
                        .unwrap_or(30),
                );
                assert!(
                    grace >= drain + Duration::from_secs(5),
                    "{what}: grace {grace:?} vs drain {drain:?}"
                );
            }
        }
    }
    for expected in [
        "dispatcher dispatcher",
        "health-monitor health-monitor",
        "log-aggregator log-aggregator",
        "alerter alerter",
        "agent-general agent",
        "agent-openclaw agent",
        "agent-openclaw gateway",
    ] {
        assert!(configs.contains_key(expected), "no {expected}");
    }
    // An OpenClaw gateway takes about 1.5 GiB.
    let gateway = workloads()
        .into_iter()
        .find(|w| w.name == "agent-openclaw")
        .unwrap();
    let gw = gateway
        .containers()
        .into_iter()
        .find(|c| c["name"] == "gateway")
        .unwrap()
        .clone();
    assert!(bytes(gw["resources"]["requests"]["memory"].as_str().unwrap()) >= 1536 << 20);
    assert_eq!(
        gw["restartPolicy"], "Always",
        "the gateway is a native sidecar"
    );
    let agent = &configs["agent-openclaw agent"];
    assert_eq!(agent["executor"]["kind"], "openclaw");
    let args = strings(&gw["args"]);
    let port: u16 = args[args.iter().position(|a| a == "--port").unwrap() + 1]
        .parse()
        .unwrap();
    assert_eq!(
        url_port(agent["executor"]["url"].as_str().unwrap()),
        Some(port)
    );
    let gw_config: Value =
        serde_json::from_str(&read("deploy/k8s/openclaw/openclaw.json")).unwrap();
    assert_eq!(gw_config["gateway"]["port"], port);
    assert_eq!(
        gw_config["gateway"]["http"]["endpoints"]["chatCompletions"]["enabled"],
        true
    );
}

fn check_probes(w: &Workload, c: &Value, config: &Value) {
    let what = format!("{} {}", w.name, c["name"].as_str().unwrap());
    let probes: Vec<&Value> = ["startupProbe", "livenessProbe", "readinessProbe"]
        .iter()
        .map(|p| &c[p])
        .filter(|p| !p.is_null())
        .collect();
    assert!(!probes.is_empty(), "{what}: no probe");
    for probe in probes {
        if probe["httpGet"].is_object() {
            let port = port_of(c, &probe["httpGet"]["port"])
                .unwrap_or_else(|| panic!("{what}: probe port"));
            assert_eq!(
                Some(port),
                metrics_port(config).ok(),
                "{what}: probe port vs metrics_addr"
            );
            assert_eq!(probe["httpGet"]["path"], "/healthz", "{what}");
        } else {
            let command = strings(&probe["exec"]["command"]);
            match command[0].as_str() {
                "clawfleet" => {
                    // It asks the server the service itself uses.
                    if let Some(i) = command.iter().position(|a| a == "--nats-url") {
                        assert_eq!(config["nats_url"], command[i + 1].as_str(), "{what} probe");
                    }
                    let inv = Invocation {
                        what: format!("{what} probe"),
                        program: "clawfleet",
                        args: command[1..].to_vec(),
                        env: BTreeMap::new(),
                        config_file: None,
                    };
                    check_invocation(&binaries(), &inv).unwrap();
                }
                "curl" => {
                    // The gateway, on the port it is started with.
                    let args = strings(&c["args"]);
                    let port = &args[args.iter().position(|a| a == "--port").unwrap() + 1];
                    let url = command.last().unwrap();
                    assert_eq!(
                        url_port(url).map(|p| p.to_string()).as_ref(),
                        Some(port),
                        "{what}"
                    );
                }
                other => panic!("{what}: probe runs {other}"),
            }
        }
    }
}

#[test]
fn services_select_pods_and_ports_that_exist() {
    let workloads = workloads();
    for (file, doc) in manifests() {
        if doc["kind"] != "Service" {
            continue;
        }
        let name = doc["metadata"]["name"].as_str().unwrap();
        let selector = string_map(&doc["spec"]["selector"]);
        let pods: Vec<&Workload> = workloads
            .iter()
            .filter(|w| selector.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
            .collect();
        assert!(!pods.is_empty(), "{file}: Service {name} selects no pod");
        for port in doc["spec"]["ports"].as_array().into_iter().flatten() {
            let target = &port["targetPort"];
            for w in &pods {
                assert!(
                    w.containers().iter().any(|c| port_of(c, target).is_some()),
                    "{file}: Service {name} targets port {target}, which {} lacks",
                    w.name
                );
            }
        }
    }
}

#[test]
fn nats_runs_the_deploy_nats_conf_with_jetstream_on_a_volume() {
    assert_eq!(
        read("deploy/k8s/nats.conf"),
        read("deploy/nats.conf"),
        "deploy/k8s/nats.conf is a copy of deploy/nats.conf (kustomize reads only files below deploy/k8s)"
    );
    let nats = workloads()
        .into_iter()
        .find(|w| w.name == "nats")
        .expect("nats");
    assert_eq!(nats.kind, "StatefulSet");
    let c = nats.containers()[0].clone();
    assert_eq!(strings(&c["args"]), ["-c", "/etc/nats/nats.conf"]);
    assert_eq!(port_of(&c, &Value::from("monitor")), Some(8222));
    assert_eq!(port_of(&c, &Value::from("client")), Some(4222));
    assert!(read("deploy/nats.conf").contains("http: 0.0.0.0:8222"));
    assert!(c["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap()
        .starts_with("/healthz?js-enabled-only=true"));
    let nats_doc = manifests()
        .into_iter()
        .find(|(_, d)| d["kind"] == "StatefulSet" && d["metadata"]["name"] == "nats")
        .unwrap()
        .1;
    let claim = &nats_doc["spec"]["volumeClaimTemplates"][0];
    assert!(
        bytes(
            claim["spec"]["resources"]["requests"]["storage"]
                .as_str()
                .unwrap()
        ) >= 16 << 30
    );
    assert!(c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == claim["metadata"]["name"] && m["mountPath"] == "/data"));
}

#[test]
fn the_agents_are_the_profiles_of_clawfleet_up() {
    let (profiles, concurrency) = up_defaults();
    let agent_toml = toml_file("deploy/k8s/agent.toml");
    assert_eq!(
        agent_toml["max_concurrency"].as_integer(),
        Some(concurrency as i64)
    );
    let mut found = BTreeMap::new();
    for (file, doc) in manifests() {
        if file != "deploy/k8s/agents.yaml" || doc["kind"] != "Deployment" {
            continue;
        }
        let name = doc["metadata"]["name"].as_str().unwrap();
        let profile = name.strip_prefix("agent-").unwrap().to_string();
        let env = &doc["spec"]["template"]["spec"]["containers"][0]["env"];
        let caps = env
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "CLAWFLEET_CAPABILITIES")
            .and_then(|e| e["value"].as_str())
            .unwrap();
        found.insert(
            profile,
            (
                caps.split(',').map(str::to_string).collect::<BTreeSet<_>>(),
                doc["spec"]["replicas"].as_u64().unwrap(),
            ),
        );
    }
    assert_eq!(found, profiles);
}

#[test]
fn keda_scales_agents_on_the_queue_consumers_they_pull_from() {
    let k = yaml("deploy/k8s/keda/kustomization.yaml");
    assert_eq!(k["kind"], "Component");
    let so = yaml("deploy/k8s/keda/scaledobject.yaml");
    assert_eq!(so["kind"], "ScaledObject");
    let target = so["spec"]["scaleTargetRef"]["name"].as_str().unwrap();
    assert!(workloads()
        .iter()
        .any(|w| w.kind == "Deployment" && w.name == target));
    // The component takes the replica count away from the Deployment.
    let patch = &k["patches"][0];
    assert_eq!(patch["target"]["name"], target);
    assert!(patch["patch"]
        .as_str()
        .unwrap()
        .contains("path: /spec/replicas"));

    let nats = manifests()
        .into_iter()
        .find(|(_, d)| d["kind"] == "Service" && d["metadata"]["name"] == "nats")
        .unwrap()
        .1;
    let monitor = nats["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "monitor")
        .unwrap()["port"]
        .as_u64()
        .unwrap();
    let namespace = yaml("deploy/k8s/kustomization.yaml")["namespace"]
        .as_str()
        .unwrap()
        .to_string();
    let endpoint = format!("nats.{namespace}.svc.cluster.local:{monitor}");

    let mut names = BTreeSet::new();
    for t in so["spec"]["triggers"].as_array().unwrap() {
        assert_eq!(t["type"], "nats-jetstream");
        let name = t["name"].as_str().unwrap();
        let m = &t["metadata"];
        assert_eq!(m["natsServerMonitoringEndpoint"], endpoint.as_str());
        assert_eq!(m["account"], "$G");
        assert_eq!(m["stream"], subjects::STREAM_QUEUE);
        // `<tenant>_<priority>`: the queue of that tenant and priority for
        // tasks with no region and no required capability.
        let (tenant, priority) = name.rsplit_once('_').unwrap();
        let priority = Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == priority)
            .unwrap_or_else(|| panic!("trigger {name}: no priority {priority}"));
        let consumer = subjects::queue_consumer(priority, &subjects::queue_key(tenant, None, &[]));
        assert_eq!(m["consumer"], consumer.as_str(), "trigger {name}");
        names.insert(name.to_string());
    }
    // The formula adds every trigger up; the target is an agent's slots.
    let formula: BTreeSet<String> = so["spec"]["advanced"]["scalingModifiers"]["formula"]
        .as_str()
        .unwrap()
        .split('+')
        .map(|s| s.trim().to_string())
        .collect();
    assert_eq!(formula, names);
    let slots = toml_file("deploy/k8s/agent.toml")["max_concurrency"]
        .as_integer()
        .unwrap();
    assert_eq!(
        so["spec"]["advanced"]["scalingModifiers"]["target"],
        slots.to_string()
    );
    assert_eq!(
        so["spec"]["advanced"]["scalingModifiers"]["metricType"],
        "AverageValue"
    );
}

#[test]
fn the_kustomization_lists_what_exists() {
    let k = yaml("deploy/k8s/kustomization.yaml");
    assert_eq!(k["namespace"], "clawfleet");
    for (_, files) in generators() {
        for f in files {
            assert!(f.exists(), "{} is missing", f.display());
        }
    }
    for c in COMPONENTS {
        assert_eq!(
            yaml(&format!("{DIR}/{c}/kustomization.yaml"))["kind"],
            "Component"
        );
    }
    let images: BTreeSet<&str> = k["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(images, IMAGES.into_iter().collect());
    // Every ConfigMap a pod mounts is generated.
    let generated = generators();
    for w in workloads() {
        for v in w.pod["volumes"].as_array().into_iter().flatten() {
            if let Some(name) = v["configMap"]["name"].as_str() {
                assert!(generated.contains_key(name), "{}: ConfigMap {name}", w.name);
            }
        }
    }
}

/// With kubectl at hand, kustomize renders the fleet with both components.
#[test]
fn kustomize_renders_the_fleet_with_its_components() {
    if std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .map_or(true, |o| !o.status.success())
    {
        eprintln!("kubectl is not installed: rendering not checked");
        return;
    }
    let dir = std::env::temp_dir().join(format!("clawfleet-k8s-{}", std::process::id()));
    copy_dir(&root().join(DIR), &dir);
    let mut k = read("deploy/k8s/kustomization.yaml");
    k.push_str("components:\n  - keda\n  - openclaw\n");
    std::fs::write(dir.join("kustomization.yaml"), k).unwrap();
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "ConfigMap",
        "Service",
        "StatefulSet",
        "Deployment",
        "ScaledObject",
    ] {
        assert!(kinds.contains(kind), "no {kind}");
    }
    for d in &docs {
        if d["kind"] != "Namespace" {
            assert_eq!(
                d["metadata"]["namespace"], "clawfleet",
                "{}",
                d["metadata"]["name"]
            );
        }
        if d["kind"] == "Deployment" && d["metadata"]["name"] == "agent-general" {
            assert!(d["spec"]["replicas"].is_null(), "KEDA owns the replicas");
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}
