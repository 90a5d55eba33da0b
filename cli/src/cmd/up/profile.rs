//! Agent profiles of a local fleet: `name=cap1+cap2[@region][*count]`.

use std::collections::BTreeSet;
use std::str::FromStr;

use clawfleet_shared::config::is_token;

/// Most agents one profile may start.
const MAX_COUNT: u32 = 256;

/// A kind of agent and how many of it to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Names the agents: `<name>-1`, `<name>-2`, ...
    pub name: String,
    /// Capabilities, sorted and de-duplicated.
    pub capabilities: Vec<String>,
    /// Region, if the agents are region-bound.
    pub region: Option<String>,
    /// How many agents.
    pub count: u32,
}

/// One agent to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSpec {
    /// `<profile>-<n>`.
    pub id: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Region.
    pub region: Option<String>,
}

impl Profile {
    fn new(name: &str, capabilities: &[&str], count: u32) -> Self {
        Profile {
            name: name.to_string(),
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            region: None,
            count,
        }
    }

    /// `general=general*2`, `coder=general+code`, `browser=general+web`.
    pub fn defaults() -> Vec<Profile> {
        vec![
            Profile::new("general", &["general"], 2),
            Profile::new("coder", &["code", "general"], 1),
            Profile::new("browser", &["general", "web"], 1),
        ]
    }

    /// `count` agents offering only `general`.
    pub fn general(count: u32) -> Vec<Profile> {
        vec![Profile::new("general", &["general"], count)]
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| {
            format!("{why} in profile {spec:?} (expected name=cap1+cap2[@region][*count])")
        };
        let (name, rest) = spec
            .split_once('=')
            .ok_or_else(|| bad("missing `=`".into()))?;
        if !is_token(name, 32) {
            return Err(bad(format!(
                "name {name:?} must match [a-z0-9][a-z0-9_-]{{0,31}}"
            )));
        }
        let (rest, count) = match rest.rsplit_once('*') {
            Some((rest, n)) => match n.parse::<u32>() {
                Ok(n) if (1..=MAX_COUNT).contains(&n) => (rest, n),
                _ => {
                    return Err(bad(format!(
                        "count {n:?} must be between 1 and {MAX_COUNT}"
                    )))
                }
            },
            None => (rest, 1),
        };
        let (caps, region) = match rest.split_once('@') {
            Some((caps, region)) if is_token(region, 32) => (caps, Some(region.to_string())),
            Some((_, region)) => {
                return Err(bad(format!(
                    "region {region:?} must match [a-z0-9][a-z0-9_-]{{0,31}}"
                )))
            }
            None => (rest, None),
        };
        let mut capabilities = BTreeSet::new();
        for cap in caps.split('+').filter(|c| !c.is_empty()) {
            if !is_token(cap, 32) {
                return Err(bad(format!(
                    "capability {cap:?} must match [a-z0-9][a-z0-9_-]{{0,31}}"
                )));
            }
            capabilities.insert(cap.to_string());
        }
        Ok(Profile {
            name: name.to_string(),
            capabilities: capabilities.into_iter().collect(),
            region,
            count,
        })
    }
}

/// The agents the profiles describe, with their ids.
pub fn agents(profiles: &[Profile]) -> Result<Vec<AgentSpec>, String> {
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for p in profiles {
        if !names.insert(p.name.as_str()) {
            return Err(format!("profile name {:?} is used twice", p.name));
        }
        for n in 1..=p.count {
            out.push(AgentSpec {
                id: format!("{}-{n}", p.name),
                capabilities: p.capabilities.clone(),
                region: p.region.clone(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_capabilities_region_and_count() {
        let p: Profile = "coder=git+code*2".parse().unwrap();
        assert_eq!(
            p,
            Profile {
                name: "coder".into(),
                capabilities: vec!["code".into(), "git".into()],
                region: None,
                count: 2
            }
        );
        let p: Profile = "eu=general@eu".parse().unwrap();
        assert_eq!(p.region.as_deref(), Some("eu"));
        assert_eq!(p.count, 1);
        let p: Profile = "eu=general@eu*3".parse().unwrap();
        assert_eq!((p.region.as_deref(), p.count), (Some("eu"), 3));
        let p: Profile = "bare=".parse().unwrap();
        assert!(p.capabilities.is_empty());
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, why) in [
            ("coder", "missing `=`"),
            ("Coder=code", "name"),
            ("coder=code*0", "count"),
            ("coder=code*many", "count"),
            ("coder=Code", "capability"),
            ("coder=code@EU", "region"),
        ] {
            let err = spec.parse::<Profile>().unwrap_err();
            assert!(err.contains(why), "{spec}: {err}");
        }
    }

    #[test]
    fn agents_are_numbered_per_profile() {
        let ids: Vec<String> = agents(&Profile::defaults())
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, ["general-1", "general-2", "coder-1", "browser-1"]);
        assert!(agents(&[Profile::new("a", &[], 1), Profile::new("a", &[], 1)]).is_err());
    }
}
