//! The docker driver: containers of a Docker engine, from the pinned
//! digest, on a loopback port, with the service's named volume.

use std::process::Command;

use kiln_definition::Network;

use crate::driver::{Driver, DriverError, Instance, Start};

/// The Docker engine the `docker` command reaches.
pub struct Docker;

fn docker(args: &[&str]) -> Result<String, DriverError> {
    kiln_tool::run(Command::new("docker").args(args)).map_err(|e| DriverError {
        driver: "docker",
        message: e.to_string(),
    })
}

/// A container's name: `kiln-SERVICE-SLOT`.
pub fn container(service: &str, slot: u8) -> String {
    format!("kiln-{service}-{slot}")
}

impl Driver for Docker {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn id_for(&self, service: &str, slot: u8) -> String {
        container(service, slot)
    }

    fn check(&self) -> Result<(), DriverError> {
        docker(&["version", "--format", "{{.Server.Version}}"]).map(drop)
    }

    fn start(&self, what: &Start<'_>) -> Result<Instance, DriverError> {
        let s = what.service;
        let name = container(&s.name, what.slot);
        // a leftover of an interrupted rollout
        let _ = docker(&["rm", "-f", &name]);
        let port = what.port.to_string();
        let mut args = vec![
            "run".to_string(),
            "-d".into(),
            "--name".into(),
            name.clone(),
            "--label".into(),
            format!("kiln.service={}", s.name),
            "--label".into(),
            format!("kiln.version={}", what.version),
        ];
        match s.network {
            Network::Host => {
                args.extend([
                    "--network".into(),
                    "host".into(),
                    "-e".into(),
                    format!("PORT={port}"),
                ]);
            }
            Network::Bridge => {
                args.extend(["-p".into(), format!("127.0.0.1:{port}:{}", s.port)]);
            }
        }
        if let Some((volume, mount)) = &s.volume {
            args.extend(["-v".into(), format!("{volume}:{mount}")]);
        }
        args.push(what.reference.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args)?;
        Ok(Instance {
            id: name,
            slot: what.slot,
            version: what.version.clone(),
            digest: what.digest.clone(),
            addr: ([127, 0, 0, 1], what.port).into(),
        })
    }

    fn running(&self, i: &Instance) -> Result<bool, DriverError> {
        Ok(
            docker(&["inspect", "--format", "{{.State.Running}}", &i.id])
                .map(|o| o.trim() == "true")
                .unwrap_or(false),
        )
    }

    fn stop(&self, i: &Instance) -> Result<(), DriverError> {
        docker(&["stop", "-t", "30", &i.id]).map(drop)
    }

    fn resume(&self, i: &Instance) -> Result<(), DriverError> {
        docker(&["start", &i.id]).map(drop)
    }

    fn remove(&self, i: &Instance) -> Result<(), DriverError> {
        docker(&["rm", "-f", &i.id]).map(drop)
    }
}
