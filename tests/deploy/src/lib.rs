//! Helpers for the checks of the deployment files (`tests/it`): reading
//! them, running the services' binaries with `--print-config`, matching the
//! settings a deployment gives against the effective configuration, and
//! pulling metric and label names out of PromQL.
//!
//! Configuration loading ignores keys it does not know (docs/configuration.md),
//! so a misspelt or renamed `CLAWFLEET_*` variable or TOML key would start a
//! service with its default silently. The checks here compare every
//! setting a deployment gives with the configuration the binary prints:
//! a setting whose key is not in the output, or whose value differs, fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use serde_json::Value;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// A file of the repository, as text.
pub fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A YAML file of the repository (anchors and merge keys resolved).
pub fn yaml(rel: &str) -> Value {
    yaml_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// YAML text, parsed.
pub fn yaml_str(text: &str) -> Result<Value, String> {
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

/// Every document of a multi-document YAML file.
pub fn yaml_docs(rel: &str) -> Vec<Value> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// A TOML file of the repository.
pub fn toml_file(rel: &str) -> toml::Table {
    read(rel).parse().unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The binaries the workspace builds (name → package), from the members'
/// manifests; this crate's own check binaries are not among them.
pub fn workspace_bins() -> BTreeMap<String, String> {
    let manifest: toml::Table = read("Cargo.toml").parse().expect("Cargo.toml");
    let members = manifest["workspace"]["members"]
        .as_array()
        .expect("workspace members");
    let mut bins = BTreeMap::new();
    for member in members {
        let member = member.as_str().expect("member path");
        if member == "tests/deploy" {
            continue;
        }
        let dir = root().join(member);
        let m: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))
            .expect("member manifest")
            .parse()
            .expect("member manifest");
        let package = m["package"]["name"]
            .as_str()
            .expect("package name")
            .to_string();
        let explicit = m.get("bin").and_then(|b| b.as_array());
        match explicit {
            Some(list) => {
                for b in list {
                    let name = b["name"].as_str().expect("bin name").to_string();
                    bins.insert(name, package.clone());
                }
            }
            None if dir.join("src/main.rs").exists() => {
                bins.insert(package.clone(), package.clone());
            }
            None => {}
        }
    }
    bins
}

/// The executables that stand for the workspace's binaries in these checks.
pub struct Binaries {
    exes: BTreeMap<String, PathBuf>,
    /// Those cargo builds before it runs these tests (always current).
    built_with_tests: BTreeSet<String>,
}

impl Binaries {
    /// `check_bins` maps the services' binaries to this package's builds of
    /// the same `main.rs` (`env!("CARGO_BIN_EXE_...")` of the test).
    pub fn new(check_bins: &[(&str, &str)]) -> Self {
        let mut exes: BTreeMap<String, PathBuf> = check_bins
            .iter()
            .map(|(name, exe)| (name.to_string(), PathBuf::from(exe)))
            .collect();
        let built_with_tests = exes.keys().cloned().collect();
        // The CLI: built by `cargo test --workspace` for its own
        // integration tests, in the same profile directory as this test.
        let profile_dir = std::env::current_exe()
            .expect("test executable")
            .parent()
            .and_then(Path::parent)
            .expect("target profile directory")
            .to_path_buf();
        exes.insert("clawfleet".into(), profile_dir.join("clawfleet"));
        Binaries {
            exes,
            built_with_tests,
        }
    }

    /// The executable for the workspace binary `name`. One that cargo does
    /// not build for these tests is checked to exist and to be newer than
    /// every source file it may be built from.
    pub fn exe(&self, name: &str) -> Result<PathBuf, String> {
        let exe = self
            .exes
            .get(name)
            .ok_or_else(|| format!("no check executable for the binary {name:?}"))?;
        if self.built_with_tests.contains(name) {
            return Ok(exe.clone());
        }
        let built = std::fs::metadata(exe)
            .and_then(|m| m.modified())
            .map_err(|_| {
                format!(
                    "{} is missing: build it first (`cargo build --workspace --bins`, or run `cargo test --workspace` / scripts/test)",
                    exe.display()
                )
            })?;
        if let Some(newer) = newest_source(built) {
            return Err(format!(
                "{} is older than {}: rebuild it (`cargo build --workspace --bins`)",
                exe.display(),
                newer.display()
            ));
        }
        Ok(exe.clone())
    }

    /// Every binary name with a check executable.
    pub fn names(&self) -> BTreeSet<String> {
        self.exes.keys().cloned().collect()
    }
}

/// A Rust source of the workspace modified after `than`, if any.
fn newest_source(than: SystemTime) -> Option<PathBuf> {
    fn walk(dir: &Path, than: SystemTime) -> Option<PathBuf> {
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                // A crate's own tests are not part of its binaries.
                if path
                    .file_name()
                    .is_some_and(|n| n == "tests" || n == "benches")
                {
                    continue;
                }
                if let Some(p) = walk(&path, than) {
                    return Some(p);
                }
            } else if path.extension().is_some_and(|e| e == "rs")
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|m| m > than)
            {
                return Some(path);
            }
        }
        None
    }
    ["shared/src", "services", "cli/src"]
        .iter()
        .find_map(|d| walk(&root().join(d), than))
}

/// Runs `exe args... --print-config` with exactly `env` (plus `PATH`) and
/// returns the effective configuration it prints.
pub fn print_config(
    exe: &Path,
    args: &[String],
    env: &BTreeMap<String, String>,
) -> Result<Value, String> {
    let out = Command::new(exe)
        .args(args)
        .arg("--print-config")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .map_err(|e| format!("running {}: {e}", exe.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{} {} --print-config` failed ({}): {}",
            exe.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("--print-config printed no JSON: {e}"))
}

/// Runs `exe args... --help`: clap checks every flag and subcommand before
/// it prints the help, so this fails on an unknown or misspelt one.
pub fn accepts_args(exe: &Path, args: &[String]) -> Result<(), String> {
    let out = Command::new(exe)
        .args(args)
        .arg("--help")
        .env_clear()
        .output()
        .map_err(|e| format!("running {}: {e}", exe.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{} {}` is refused: {}",
            exe.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The value at a dotted key path of the effective configuration.
pub fn lookup<'a>(config: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(config, |v, k| v.as_object()?.get(k))
}

/// Whether the setting `given` (as a deployment writes it: a variable's
/// text, or a TOML value) ended up as `actual` in the effective configuration.
pub fn same_value(given: &Value, actual: &Value) -> bool {
    match (given, actual) {
        (Value::String(g), Value::String(a)) => {
            g == a
                || a == "<redacted>"
                || matches!(
                    (humantime::parse_duration(g), humantime::parse_duration(a)),
                    (Ok(x), Ok(y)) if x == y
                )
        }
        (Value::String(g), Value::Number(a)) => g.parse::<f64>().ok() == a.as_f64(),
        (Value::String(g), Value::Bool(a)) => g.parse::<bool>().ok() == Some(*a),
        (Value::String(g), Value::Array(_)) => {
            let list: Vec<Value> = if g.trim_start().starts_with('[') {
                match format!("v = {g}").parse::<toml::Table>() {
                    Ok(t) => match serde_json::to_value(&t["v"]) {
                        Ok(Value::Array(a)) => a,
                        _ => return false,
                    },
                    Err(_) => return false,
                }
            } else {
                g.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_string()))
                    .collect()
            };
            same_value(&Value::Array(list), actual)
        }
        (Value::Number(g), Value::Number(a)) => g.as_f64() == a.as_f64(),
        (Value::Bool(g), Value::Bool(a)) => g == a,
        (Value::Array(g), Value::Array(a)) => {
            // Lists of names are sorted and de-duplicated by the services.
            let key = |v: &Value| v.to_string();
            let mut g: Vec<&Value> = g.iter().collect();
            let mut a: Vec<&Value> = a.iter().collect();
            g.sort_by_key(|v| key(v));
            g.dedup();
            a.sort_by_key(|v| key(v));
            g.len() == a.len() && g.iter().zip(&a).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(g), Value::Object(a)) => g
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| same_value(v, av))),
        _ => false,
    }
}

/// Variables a clawfleet service reads besides its `CLAWFLEET_*` keys.
const OTHER_VARIABLES: [&str; 3] = ["NATS_URL", "RUST_LOG", "OPENCLAW_GATEWAY_TOKEN"];

/// Checks that every variable of `env` is a setting of `config` (the
/// service's effective configuration) with the value given. Returns the
/// problems, one line each.
pub fn check_env(config: &Value, env: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, value) in env {
        if name == "CLAWFLEET_CONFIG" || name == "RUST_LOG" {
            continue;
        }
        let path: Vec<String> = if let Some(key) = name.strip_prefix("CLAWFLEET_") {
            key.to_lowercase().split("__").map(String::from).collect()
        } else if name == "NATS_URL" {
            vec!["nats_url".into()]
        } else if name == "OPENCLAW_GATEWAY_TOKEN" {
            // Read by the openclaw executor only.
            if config["executor"]["kind"] != "openclaw" || config["executor"]["token"].is_null() {
                problems.push(format!(
                    "{name} is set but the executor is not `openclaw`, which alone reads it"
                ));
            }
            continue;
        } else {
            problems.push(format!(
                "{name} is not a clawfleet setting (only CLAWFLEET_* and {OTHER_VARIABLES:?} are)"
            ));
            continue;
        };
        match lookup(config, &path) {
            None => problems.push(format!(
                "{name}: `{}` is not a configuration key (unknown keys are ignored, so this setting would have no effect)",
                path.join(".")
            )),
            Some(actual) if !same_value(&Value::String(value.clone()), actual) => problems.push(
                format!("{name}={value} gives `{}` = {actual}", path.join(".")),
            ),
            Some(_) => {}
        }
    }
    problems
}

/// Checks that every key of a TOML configuration file is a setting of
/// `config` with the value given; the problems, one line each.
pub fn check_toml(config: &Value, file: &toml::Table) -> Vec<String> {
    let mut leaves = Vec::new();
    flatten(&mut Vec::new(), &Value::Object(to_json(file)), &mut leaves);
    leaves
        .into_iter()
        .filter_map(|(path, given)| match lookup(config, &path) {
            None => Some(format!(
                "`{}` is not a configuration key (unknown keys are ignored, so this setting would have no effect)",
                path.join(".")
            )),
            Some(actual) if !same_value(&given, actual) => Some(format!(
                "`{}` = {given} in the file, {actual} in effect",
                path.join(".")
            )),
            Some(_) => None,
        })
        .collect()
}

fn to_json(t: &toml::Table) -> serde_json::Map<String, Value> {
    match serde_json::to_value(t) {
        Ok(Value::Object(m)) => m,
        _ => panic!("a TOML table converts to a JSON object"),
    }
}

fn flatten(prefix: &mut Vec<String>, v: &Value, out: &mut Vec<(Vec<String>, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                prefix.push(k.clone());
                flatten(prefix, v, out);
                prefix.pop();
            }
        }
        leaf => out.push((prefix.clone(), leaf.clone())),
    }
}

/// The port of the `metrics_addr` of an effective configuration, after
/// checking that it listens on every interface (reachable from outside
/// the container).
pub fn metrics_port(config: &Value) -> Result<u16, String> {
    let addr = config["metrics_addr"]
        .as_str()
        .ok_or("metrics_addr is not set: the service serves no /metrics or /healthz")?;
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| format!("metrics_addr {addr:?}: {e}"))?;
    if !addr.ip().is_unspecified() {
        return Err(format!(
            "metrics_addr {addr} is not reachable from outside the container (use 0.0.0.0)"
        ));
    }
    Ok(addr.port())
}

/// The port of an `http://host:port/...` URL.
pub fn url_port(url: &str) -> Option<u16> {
    let rest = url.split_once("://")?.1;
    let host_port = rest.split('/').next()?;
    host_port.rsplit_once(':')?.1.parse().ok()
}

/// The host of an `http://host:port/...` URL.
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    rest.split(['/', ':']).next()
}

/// Compose-style variable interpolation: `${VAR}`, `${VAR:-default}`,
/// `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`, `$VAR` and `$$`.
pub fn interpolate(text: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r.find('}').ok_or("unclosed ${")?;
            let expr = &r[..end];
            rest = &r[end + 1..];
            let name_end = expr
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len());
            let (name, op) = expr.split_at(name_end);
            let value = env.get(name).map(String::as_str);
            let set = value.is_some_and(|v| !v.is_empty());
            let resolved = if op.is_empty() {
                value.unwrap_or("").to_string()
            } else if let Some(d) = op.strip_prefix(":-") {
                if set {
                    value.unwrap_or("").to_string()
                } else {
                    d.to_string()
                }
            } else if let Some(d) = op.strip_prefix('-') {
                value.map_or_else(|| d.to_string(), str::to_string)
            } else if let Some(m) = op.strip_prefix(":?") {
                if !set {
                    return Err(format!("{name}: {m}"));
                }
                value.unwrap_or("").to_string()
            } else if let Some(m) = op.strip_prefix('?') {
                value
                    .map(str::to_string)
                    .ok_or_else(|| format!("{name}: {m}"))?
            } else {
                return Err(format!("unsupported interpolation ${{{expr}}}"));
            };
            out.push_str(&resolved);
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end == 0 {
                out.push('$');
            } else {
                out.push_str(env.get(&rest[..end]).map_or("", String::as_str));
                rest = &rest[end..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A documented metric: type, labels, and the service section it is in.
#[derive(Debug, Clone)]
pub struct DocMetric {
    /// counter, gauge or histogram.
    pub kind: String,
    /// Its labels (with `agent` for the agent's series).
    pub labels: BTreeSet<String>,
}

/// The series of docs/metrics.md, by name.
pub fn documented_metrics() -> BTreeMap<String, DocMetric> {
    let text = read("docs/metrics.md");
    let mut out = BTreeMap::new();
    let mut section_labels: BTreeSet<String> = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("## ") {
            section_labels.clear();
            continue;
        }
        if line.starts_with("Every series has the label") {
            section_labels.extend(backticked(line));
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `name` | type | labels | meaning |
        if cells.len() >= 5 {
            let names = backticked(cells[1]);
            if names.len() == 1 && names[0].starts_with("clawfleet_") {
                let mut labels: BTreeSet<String> = backticked(cells[3]).into_iter().collect();
                labels.extend(section_labels.iter().cloned());
                out.insert(
                    names[0].clone(),
                    DocMetric {
                        kind: cells[2].to_string(),
                        labels,
                    },
                );
            }
        }
    }
    out
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The metric names the crates define (`pub const X: &str = "..."` in each
/// `metrics.rs`).
pub fn defined_metrics() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for dir in ["services", "shared", "cli"] {
        collect_metrics_rs(&root().join(dir), &mut out);
    }
    out
}

fn collect_metrics_rs(dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_metrics_rs(&path, out);
        } else if path.file_name().is_some_and(|n| n == "metrics.rs") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for line in text.lines() {
                let line = line.trim();
                if line.starts_with("pub const ") && line.contains(": &str = \"") {
                    if let Some(v) = line.split('"').nth(1) {
                        out.insert(v.to_string());
                    }
                }
            }
        }
    }
}

/// What a PromQL expression refers to.
#[derive(Debug, Default)]
pub struct PromqlRefs {
    /// Metric names (`clawfleet_*`, and Prometheus' own `up`).
    pub metrics: BTreeSet<String>,
    /// Label names in each metric's selector braces.
    pub selector_labels: Vec<(String, String)>,
    /// Label names of `by`, `without`, `on` and `ignoring` clauses.
    pub grouping_labels: BTreeSet<String>,
    /// Values of `job` matchers (`up{job="..."}`, `job=~"a|b"`).
    pub jobs: BTreeSet<String>,
}

/// Pulls metric and label names out of a PromQL expression (Grafana's
/// `$variables` included).
pub fn promql_refs(expr: &str) -> PromqlRefs {
    let mut refs = PromqlRefs::default();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            // A string literal (a label value).
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        if c == '$' {
            // A Grafana variable.
            i += 1;
            while i < chars.len() && (ident_char(chars[i]) || chars[i] == '{' || chars[i] == '}') {
                i += 1;
            }
            continue;
        }
        if c == '[' {
            // A range or subquery duration.
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if ident_start(c) {
            let start = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            let next = chars.get(j).copied();
            if word.starts_with("clawfleet_") || word == "up" {
                refs.metrics.insert(word.clone());
                if next == Some('{') {
                    let (matchers, end) = matchers(&chars, j);
                    for (label, value) in matchers {
                        if label == "job" {
                            refs.jobs.extend(value.split('|').map(str::to_string));
                        }
                        refs.selector_labels.push((word.clone(), label));
                    }
                    i = end;
                }
            } else if matches!(word.as_str(), "by" | "without" | "on" | "ignoring")
                && next == Some('(')
            {
                let end = chars[j..]
                    .iter()
                    .position(|&c| c == ')')
                    .map_or(chars.len(), |p| j + p);
                let inside: String = chars[j + 1..end].iter().collect();
                refs.grouping_labels.extend(
                    inside
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
                i = end + 1;
            }
            continue;
        }
        i += 1;
    }
    refs
}

/// The `label op "value"` matchers in braces starting at `open`; returns
/// them and the index after the closing brace.
fn matchers(chars: &[char], open: usize) -> (Vec<(String, String)>, usize) {
    let mut out = Vec::new();
    let mut i = open + 1;
    loop {
        while i < chars.len() && (chars[i] == ' ' || chars[i] == ',') {
            i += 1;
        }
        if i >= chars.len() || chars[i] == '}' {
            return (out, i + 1);
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let label: String = chars[start..i].iter().collect();
        while i < chars.len() && chars[i] != '"' && chars[i] != '}' {
            i += 1;
        }
        let mut value = String::new();
        if i < chars.len() && chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                value.push(chars[i]);
                i += 1;
            }
            i += 1;
        }
        out.push((label, value));
    }
}

/// The documented metric a series name refers to: itself, or the
/// histogram whose `_bucket`, `_sum` or `_count` series it is.
pub fn base_metric<'a>(
    name: &str,
    documented: &'a BTreeMap<String, DocMetric>,
) -> Option<(String, &'a DocMetric)> {
    if let Some(m) = documented.get(name) {
        return Some((name.to_string(), m));
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        let m = documented.get(base).filter(|m| m.kind == "histogram")?;
        Some((base.to_string(), m))
    })
}

/// Labels Prometheus adds to every scraped series, or that the scrape
/// configurations of deploy/prometheus add.
pub const TARGET_LABELS: [&str; 5] = ["job", "instance", "service", "pod", "profile"];

/// Checks the metric and label names of a PromQL expression against
/// docs/metrics.md and the crates' metrics.rs; the problems, one line each.
pub fn check_promql(
    expr: &str,
    documented: &BTreeMap<String, DocMetric>,
    defined: &BTreeSet<String>,
) -> Vec<String> {
    let refs = promql_refs(expr);
    let mut problems = Vec::new();
    let all_labels: BTreeSet<String> = documented
        .values()
        .flat_map(|m| m.labels.iter().cloned())
        .chain(TARGET_LABELS.iter().map(|s| s.to_string()))
        .chain(["le".to_string()])
        .collect();
    if refs.metrics.is_empty() {
        problems.push(format!("`{expr}` uses no clawfleet metric"));
    }
    for name in &refs.metrics {
        if name == "up" {
            continue;
        }
        match base_metric(name, documented) {
            None => problems.push(format!("`{name}` is not in docs/metrics.md")),
            Some((base, _)) if !defined.contains(&base) => problems.push(format!(
                "`{base}` is documented but no metrics.rs defines it"
            )),
            Some(_) => {}
        }
    }
    for (metric, label) in &refs.selector_labels {
        let known = if metric == "up" {
            TARGET_LABELS.contains(&label.as_str())
        } else {
            base_metric(metric, documented).is_some_and(|(_, m)| {
                m.labels.contains(label)
                    || TARGET_LABELS.contains(&label.as_str())
                    || (label == "le" && metric.ends_with("_bucket"))
            })
        };
        if !known {
            problems.push(format!(
                "`{metric}` has no label `{label}` in docs/metrics.md"
            ));
        }
    }
    for label in &refs.grouping_labels {
        if !all_labels.contains(label) {
            problems.push(format!(
                "grouping by `{label}`, which no documented series has"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_follows_compose() {
        let env: BTreeMap<String, String> = [
            ("A".to_string(), "x".to_string()),
            ("E".to_string(), String::new()),
        ]
        .into();
        assert_eq!(
            interpolate("${A}-${B:-d}-${E:-d}-${E-d}-$$-$A", &env).unwrap(),
            "x-d-d--$-x"
        );
        assert!(interpolate("${B:?needed}", &env).is_err());
    }

    #[test]
    fn promql_names_are_found_outside_strings_and_variables() {
        let r = promql_refs(
            r#"sum by (tenant) (rate(clawfleet_tasks_queued_total{tenant=~"$tenant", priority!="low"}[$__rate_interval])) / on () up{job=~"a|b"}"#,
        );
        assert_eq!(
            r.metrics,
            ["clawfleet_tasks_queued_total", "up"]
                .map(String::from)
                .into()
        );
        assert_eq!(r.grouping_labels, ["tenant"].map(String::from).into());
        assert_eq!(r.jobs, ["a", "b"].map(String::from).into());
        assert_eq!(
            r.selector_labels,
            vec![
                (
                    "clawfleet_tasks_queued_total".to_string(),
                    "tenant".to_string()
                ),
                (
                    "clawfleet_tasks_queued_total".to_string(),
                    "priority".to_string()
                ),
                ("up".to_string(), "job".to_string()),
            ]
        );
    }

    #[test]
    fn values_compare_as_the_services_print_them() {
        assert!(same_value(&Value::from("180s"), &Value::from("3m")));
        assert!(same_value(&Value::from("4"), &Value::from(4)));
        assert!(same_value(
            &Value::from("general,code"),
            &serde_json::json!(["code", "general"])
        ));
        assert!(!same_value(
            &Value::from("general"),
            &serde_json::json!(["code"])
        ));
        assert!(!same_value(
            &Value::from("0.0.0.0:9180"),
            &Value::from("127.0.0.1:9180")
        ));
    }
}
