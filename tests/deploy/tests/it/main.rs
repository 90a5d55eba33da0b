//! Checks of the deployment files against the workspace: docker-compose.yml,
//! the Dockerfile, deploy/k8s, deploy/prometheus and deploy/grafana.
//!
//! The services are run with `--print-config` and the flags, variables and
//! configuration files a deployment gives them; every setting must show up
//! in the effective configuration with the value given (an unknown key is
//! ignored by the services, so it fails here instead).

mod compose;
mod dockerfile;
mod grafana;
mod kubernetes;
mod prometheus;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clawfleet_deploy_tests::{
    accepts_args, check_env, check_toml, lookup, print_config, same_value, workspace_bins, Binaries,
};
use serde_json::Value;

/// The executables standing for the workspace's binaries.
pub fn binaries() -> Binaries {
    Binaries::new(&[
        (
            "clawfleet-dispatcher",
            env!("CARGO_BIN_EXE_deploy-check-dispatcher"),
        ),
        ("clawfleet-agent", env!("CARGO_BIN_EXE_deploy-check-agent")),
        (
            "clawfleet-health-monitor",
            env!("CARGO_BIN_EXE_deploy-check-health-monitor"),
        ),
        (
            "clawfleet-log-aggregator",
            env!("CARGO_BIN_EXE_deploy-check-log-aggregator"),
        ),
        (
            "clawfleet-alerter",
            env!("CARGO_BIN_EXE_deploy-check-alerter"),
        ),
        (
            "clawfleet-console",
            env!("CARGO_BIN_EXE_deploy-check-console"),
        ),
    ])
}

/// One program run by a deployment: a binary of the workspace with its
/// arguments, variables and configuration file.
pub struct Invocation<'a> {
    /// Where it comes from, for messages (`compose service dispatcher`).
    pub what: String,
    /// The binary.
    pub program: &'a str,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its environment.
    pub env: BTreeMap<String, String>,
    /// The file `CLAWFLEET_CONFIG` names, on this machine.
    pub config_file: Option<PathBuf>,
}

/// Runs a service binary as the deployment does (plus `--print-config`)
/// and checks every flag, variable and file key it is given. Returns the
/// effective configuration, or for the CLI (which has no configuration)
/// `Value::Null` once clap accepts the arguments.
pub fn check_invocation(bins: &Binaries, inv: &Invocation) -> Result<Value, String> {
    let exe = bins.exe(inv.program)?;
    if inv.program == "clawfleet" {
        accepts_args(&exe, &inv.args).map_err(|e| format!("{}: {e}", inv.what))?;
        return Ok(Value::Null);
    }
    let mut env = inv.env.clone();
    if let Some(file) = &inv.config_file {
        env.insert("CLAWFLEET_CONFIG".into(), file.display().to_string());
    }
    let config = print_config(&exe, &inv.args, &env).map_err(|e| format!("{}: {e}", inv.what))?;
    let mut problems = check_env(&config, &inv.env);
    problems.extend(check_flags(&config, &inv.args));
    if let Some(file) = &inv.config_file {
        let table: toml::Table = std::fs::read_to_string(file)
            .map_err(|e| format!("{}: {e}", file.display()))?
            .parse()
            .map_err(|e| format!("{}: {e}", file.display()))?;
        problems.extend(
            check_toml(&config, &table)
                .into_iter()
                .map(|p| format!("{}: {p}", file.display())),
        );
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(format!("{}:\n  {}", inv.what, problems.join("\n  ")))
    }
}

/// `--flag value` pairs must set the key of the same name (clap already
/// refused unknown flags).
fn check_flags(config: &Value, args: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if let Some(flag) = args[i].strip_prefix("--") {
            let value = args.get(i + 1).filter(|v| !v.starts_with("--"));
            if let Some(value) = value {
                let key = flag.replace('-', "_");
                match lookup(config, std::slice::from_ref(&key)) {
                    Some(actual) if same_value(&Value::String(value.clone()), actual) => {}
                    Some(actual) => {
                        problems.push(format!("--{flag} {value} gives `{key}` = {actual}"))
                    }
                    None => problems.push(format!("--{flag} sets no configuration key")),
                }
                i += 1;
            }
        }
        i += 1;
    }
    problems
}

#[test]
fn every_binary_of_the_workspace_can_be_checked() {
    let bins = binaries();
    let workspace: Vec<String> = workspace_bins().into_keys().collect();
    let checked: Vec<String> = bins.names().into_iter().collect();
    assert_eq!(
        workspace, checked,
        "every binary of the workspace needs a check executable in tests/deploy (a [[bin]] on its main.rs)"
    );
}

#[test]
fn a_renamed_setting_flag_or_file_key_is_caught() {
    let bins = binaries();
    let agent = |env: &[(&str, &str)], args: &[&str]| Invocation {
        what: "an agent".into(),
        program: "clawfleet-agent",
        args: args.iter().map(|s| s.to_string()).collect(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        config_file: None,
    };
    check_invocation(
        &bins,
        &agent(
            &[("CLAWFLEET_METRICS_ADDR", "0.0.0.0:9181")],
            &["--max-concurrency", "8"],
        ),
    )
    .expect("the real names are accepted");

    // The agent starts with a misspelt variable (unknown keys are ignored)...
    let ignored = agent(&[("CLAWFLEET_METRICS_ADDRESS", "0.0.0.0:9181")], &[]);
    let exe = bins.exe("clawfleet-agent").unwrap();
    print_config(&exe, &[], &ignored.env).expect("the service itself ignores unknown keys");
    // ...and the check refuses it.
    let e = check_invocation(&bins, &ignored).unwrap_err();
    assert!(
        e.contains("`metrics_address` is not a configuration key"),
        "{e}"
    );

    let e = check_invocation(&bins, &agent(&[], &["--max-concurency", "8"])).unwrap_err();
    assert!(e.contains("unexpected argument '--max-concurency'"), "{e}");

    let e =
        check_invocation(&bins, &agent(&[("CLAWFLEET_EXECUTOR__KINDS", "sim")], &[])).unwrap_err();
    assert!(
        e.contains("`executor.kinds` is not a configuration key"),
        "{e}"
    );

    let dir = std::env::temp_dir().join(format!("clawfleet-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("agent.toml");
    std::fs::write(
        &file,
        "max_concurrency = 4\n[executor]\nkind = \"sim\"\nhealth = \"x\"\n",
    )
    .unwrap();
    let mut inv = agent(&[], &[]);
    inv.config_file = Some(file);
    let e = check_invocation(&bins, &inv).unwrap_err();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        e.contains("`executor.health` is not a configuration key"),
        "{e}"
    );
}
