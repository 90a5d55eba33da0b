//! The loopback ports the fleet's services serve `/metrics` and `/healthz` on.
//!
//! Each service has its usual port (the default of its `metrics_addr`).
//! When another fleet has it, `up` takes a free port instead, so a second
//! fleet comes up beside the first; a port given on the command line is
//! used as it is, or refused before anything starts when it is taken.
//! Between the check here and the service binding the port, another program
//! may take it; the service then fails to start, and so does `up`.

use std::net::{SocketAddr, TcpListener};

/// One service's metrics port.
pub struct Wanted {
    /// The flag that sets it, for errors.
    pub flag: &'static str,
    /// What the flag says (0: any free port).
    pub given: Option<u16>,
    /// The service's usual port.
    pub usual: u16,
}

/// Chooses an address per entry of `wanted`, in order, all distinct.
pub fn choose(wanted: &[Wanted]) -> anyhow::Result<Vec<SocketAddr>> {
    // Held until every port is chosen, so no two services get the same one.
    let mut held = Vec::new();
    for w in wanted {
        let any = |e: std::io::Error| anyhow::anyhow!("while choosing a port for {}: {e}", w.flag);
        let listener = match w.given {
            Some(0) => bind(0).map_err(any)?,
            Some(port) => bind(port).map_err(|e| {
                anyhow::anyhow!("{} {port}: 127.0.0.1:{port} is not free ({e})", w.flag)
            })?,
            None => bind(w.usual).or_else(|_| bind(0)).map_err(any)?,
        };
        held.push(listener);
    }
    held.iter()
        .map(|l| l.local_addr())
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| anyhow::anyhow!("while choosing metrics ports: {e}"))
}

fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_usual_port_is_replaced_and_a_taken_given_one_refused() {
        let taken = bind(0).unwrap();
        let port = taken.local_addr().unwrap().port();
        let chosen = choose(&[
            Wanted {
                flag: "--a",
                given: None,
                usual: port,
            },
            Wanted {
                flag: "--b",
                given: Some(0),
                usual: port,
            },
        ])
        .unwrap();
        assert_ne!(chosen[0].port(), port);
        assert_ne!(chosen[1].port(), port);
        assert_ne!(chosen[0], chosen[1]);

        let refused = choose(&[Wanted {
            flag: "--a",
            given: Some(port),
            usual: 1,
        }])
        .unwrap_err();
        assert!(
            refused.to_string().starts_with(&format!("--a {port}: ")),
            "{refused}"
        );
    }
}
