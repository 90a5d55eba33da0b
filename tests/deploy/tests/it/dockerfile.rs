//! The Dockerfile, against the README and the workspace.

use std::collections::{BTreeMap, BTreeSet};

use clawfleet_deploy_tests::{read, workspace_bins};

use crate::compose::{fleet, IMAGES};

/// The Dockerfile's stages, by name, with their lines.
fn stages() -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in read("Dockerfile").lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"FROM") {
            let name = match words.as_slice() {
                [_, _, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                _ => panic!("every stage is named: {line}"),
            };
            current = Some(name.clone());
            out.entry(name).or_default();
        }
        if let Some(stage) = &current {
            out.get_mut(stage).unwrap().push(line.to_string());
        }
    }
    out
}

/// A command of the Dockerfile, on one line, without the shell's `;` or `\`.
fn command(line: &str) -> String {
    line.trim()
        .trim_end_matches('\\')
        .trim()
        .trim_end_matches(';')
        .trim()
        .to_string()
}

#[test]
fn the_build_command_is_the_readme_s_and_builds_every_binary() {
    let dockerfile = read("Dockerfile");
    let builds: Vec<String> = dockerfile
        .lines()
        .filter(|l| l.trim_start().starts_with("cargo build"))
        .map(command)
        .collect();
    assert_eq!(builds.len(), 1, "one build command: {builds:?}");
    let build = &builds[0];
    let readme = read("README.md");
    assert!(
        readme.lines().any(|l| l.trim() == build),
        "the README does not build with the Dockerfile's command:\n  {build}"
    );
    assert!(
        build.contains("--release") && build.contains("--locked"),
        "{build}"
    );
    // scripts/fleet builds with it too, so that neither rebuilds what the
    // other built (other packages would resolve other features).
    let fleet = read("scripts/fleet");
    assert!(
        fleet.lines().any(|l| l.trim() == build),
        "scripts/fleet does not build with the README's command:\n  {build}"
    );
    assert!(
        !fleet
            .lines()
            .any(|l| l.trim_start().starts_with("cargo run")
                || l.trim_start().starts_with("exec cargo")),
        "scripts/fleet builds a second time"
    );

    let words: Vec<&str> = build.split_whitespace().collect();
    let packages: BTreeSet<&str> = words
        .windows(2)
        .filter(|w| w[0] == "-p" || w[0] == "--package")
        .map(|w| w[1])
        .collect();
    let bins = workspace_bins();
    let needed: BTreeSet<&str> = bins.values().map(String::as_str).collect();
    assert_eq!(
        packages, needed,
        "the packages built vs those with binaries"
    );

    // Every binary is copied into the images.
    let copy_loop = dockerfile
        .lines()
        .find(|l| l.trim_start().starts_with("for bin in"))
        .expect("the copy loop");
    let copied: BTreeSet<&str> = copy_loop
        .split(" in ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let all: BTreeSet<&str> = bins.keys().map(String::as_str).collect();
    assert_eq!(copied, all, "binaries copied into the images");
}

#[test]
fn images_run_unprivileged_under_tini_with_what_the_checks_use() {
    let stages = stages();
    for (_, stage) in IMAGES {
        let lines = stages
            .get(stage)
            .unwrap_or_else(|| panic!("no stage {stage}"));
        let has = |text: &str| lines.iter().any(|l| l.contains(text));
        assert!(has("USER 10001:10001"), "{stage} runs as root");
        assert!(
            has("ENTRYPOINT [\"/usr/bin/tini\", \"--\"]"),
            "{stage}: tini"
        );
        assert!(
            has("COPY --from=build /out/ /usr/local/bin/"),
            "{stage}: the binaries"
        );
        // The compose and Kubernetes health checks run curl.
        assert!(has("install") && has(" curl"), "{stage} lacks curl");
        assert!(has("ca-certificates"), "{stage} lacks CA certificates");
        assert!(
            has("mkdir -p /data") && has("chown clawfleet:clawfleet /data"),
            "{stage}: /data"
        );
        assert!(has("WORKDIR /data"), "{stage}");
    }
    let build = &stages["build"];
    assert!(build[0].starts_with("FROM rust:${RUST_VERSION}-bookworm"));
    assert!(
        build
            .iter()
            .filter(|l| l.contains("--mount=type=cache"))
            .count()
            >= 3
    );
    assert!(stages["runtime"][0].starts_with("FROM debian:bookworm-slim"));
    // The runtime is the default target: the last stage.
    assert_eq!(
        read("Dockerfile")
            .lines()
            .rfind(|l| l.starts_with("FROM"))
            .unwrap()
            .split_whitespace()
            .last(),
        Some("runtime")
    );
}

#[test]
fn the_openclaw_image_pins_node_24_and_openclaw() {
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("ARG NODE_VERSION=24."), "Node.js 24");
    assert!(dockerfile.contains("ARG OPENCLAW_VERSION=2026.9.6"));
    let stage = &stages()["openclaw"];
    assert!(stage[0].starts_with("FROM node:${NODE_VERSION}-bookworm-slim"));
    assert!(stage
        .iter()
        .any(|l| l.contains("npm install --global")
            && l.contains("\"openclaw@${OPENCLAW_VERSION}\"")));
    // The compose openclaw profile runs the gateway from this image.
    let gateway = &fleet().services()["openclaw-gateway"];
    assert_eq!(gateway["image"], "clawfleet-openclaw:local");
    assert_eq!(gateway["command"][0], "openclaw");
}

#[test]
fn the_build_context_leaves_out_build_output_and_tools() {
    let ignore = read(".dockerignore");
    let entries: BTreeSet<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in ["target", ".tools", ".git", ".clawfleet"] {
        assert!(entries.contains(needed), ".dockerignore lacks {needed}");
    }
}
