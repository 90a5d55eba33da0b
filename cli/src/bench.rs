//! `clawfleet bench`: load generation against a running fleet.
//!
//! Not built yet; the command exists so scripts can already name it.

/// Options of `clawfleet bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

/// Runs the benchmark against the fleet at `nats_url` (the default URL when `None`).
pub async fn run(nats_url: Option<String>, args: BenchArgs) -> anyhow::Result<()> {
    let _ = (nats_url, args);
    anyhow::bail!("clawfleet bench is not built yet")
}
