//! Where instances run, behind one interface. kiln has two drivers:
//! `docker` (containers of a Docker engine) and `qemu` (VMs on this
//! machine). A cloud driver maps onto the same calls — see ARCHITECTURE.md.

use std::net::SocketAddr;

use kiln_definition::Service;
use serde::{Deserialize, Serialize};

/// One running (or kept) instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The driver's name for it (a container name, a VM's directory).
    pub id: String,
    /// The HAProxy slot it takes (1 or 2).
    pub slot: u8,
    pub version: String,
    pub digest: String,
    /// Where it serves, on this machine.
    pub addr: SocketAddr,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Start<'a> {
    pub service: &'a Service,
    /// The pinned image: `REPOSITORY:VERSION@DIGEST` (docker) or the kept
    /// VM image's version (qemu).
    pub reference: String,
    pub version: String,
    pub digest: String,
    pub slot: u8,
    /// The loopback port it is to serve on.
    pub port: u16,
}

/// Why a driver call failed.
#[derive(Debug, thiserror::Error)]
#[error("{driver}: {message}")]
pub struct DriverError {
    pub driver: &'static str,
    pub message: String,
}

/// The calls a rollout makes. Each is safe to repeat (a rollout resumed
/// after kiln was killed repeats the step it was in).
pub trait Driver {
    fn name(&self) -> &'static str;
    /// The id an instance of `service` in slot `slot` gets (known before
    /// it starts, so an interrupted start can be cleaned up).
    fn id_for(&self, service: &str, slot: u8) -> String;
    /// Whether blue and green cannot use the service's data at once (a VM's
    /// data disks moved from blue to green): blue is then shut down before
    /// green starts, and the pause is measured.
    fn exclusive_data(&self) -> bool {
        false
    }
    /// That the driver can work at all (its engine answers), before a
    /// rollout changes anything.
    fn check(&self) -> Result<(), DriverError>;
    /// Creates and starts an instance (replacing a leftover of the same
    /// id).
    fn start(&self, what: &Start<'_>) -> Result<Instance, DriverError>;
    /// Whether it runs.
    fn running(&self, i: &Instance) -> Result<bool, DriverError>;
    /// Stops it cleanly, keeping it (and its data) for a rollback.
    fn stop(&self, i: &Instance) -> Result<(), DriverError>;
    /// Starts a kept instance again.
    fn resume(&self, i: &Instance) -> Result<(), DriverError>;
    /// Removes it for good (its data stays: volumes and data disks are
    /// the service's, not the instance's).
    fn remove(&self, i: &Instance) -> Result<(), DriverError>;
}
