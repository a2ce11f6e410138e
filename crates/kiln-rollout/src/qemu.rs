//! The qemu driver: VMs on this machine from the kept VM image of the
//! store (`STORE/vms/NAME/VERSION`), booted in the background with
//! user-mode networking and the service port forwarded to a loopback port.
//! An instance's files are `STORE/services/SERVICE/vm-SLOT/` (its console,
//! QMP socket, firmware variables, how it was started). The data disks are
//! the service's, not an instance's: with `data = "move"` both slots use
//! `STORE/services/SERVICE/data/` (one at a time: blue is shut down before
//! green starts), with `copy` each slot has its own, copied from the other
//! slot's when it is made.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_definition::{Handover, Service};
use serde::{Deserialize, Serialize};

use crate::driver::{Driver, DriverError, Instance, Start};

/// VMs of the services of the store at `store_root`.
pub struct Qemu {
    pub store_root: PathBuf,
    pub service: Service,
}

/// How an instance was started, kept so it can be started again.
#[derive(Serialize, Deserialize)]
struct Boot {
    disk: PathBuf,
    data: Vec<PathBuf>,
    host: u16,
    guest: u16,
}

fn err(message: impl std::fmt::Display) -> DriverError {
    DriverError {
        driver: "qemu",
        message: message.to_string(),
    }
}

impl Qemu {
    fn service_dir(&self) -> PathBuf {
        self.store_root.join("services").join(&self.service.name)
    }

    fn work(&self, i: &Instance) -> PathBuf {
        self.service_dir().join(&i.id)
    }

    /// The data disks' directory of a green in slot `slot`. With `copy`,
    /// a fresh copy of the other slot's disks (taken while blue runs, so
    /// crash-consistent, like a cloud snapshot of a running disk); blue
    /// keeps its own, which a rollback returns to.
    fn green_data(&self, slot: u8) -> Result<PathBuf, DriverError> {
        match self.service.data {
            Handover::Move => Ok(self.service_dir().join("data")),
            Handover::Copy => {
                let dir = self.service_dir().join(format!("data-{slot}"));
                let other = self.service_dir().join(format!("data-{}", 3 - slot));
                if other.is_dir() {
                    let _ = std::fs::remove_dir_all(&dir);
                    kiln_tool::run(
                        std::process::Command::new("cp")
                            .args(["-a", "--sparse=always", "--reflink=auto"])
                            .arg(&other)
                            .arg(&dir),
                    )
                    .map_err(err)?;
                }
                Ok(dir)
            }
        }
    }

    fn boot(&self, work: &Path, b: &Boot) -> Result<(), DriverError> {
        kiln_vm::boot::start_service(&b.disk, &b.data, work, b.host, b.guest)
            .map(drop)
            .map_err(err)
    }
}

impl Driver for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn id_for(&self, _service: &str, slot: u8) -> String {
        format!("vm-{slot}")
    }

    fn exclusive_data(&self) -> bool {
        self.service.data == Handover::Move
    }

    fn check(&self) -> Result<(), DriverError> {
        kiln_tool::run(std::process::Command::new("qemu-system-x86_64").arg("--version"))
            .map(drop)
            .map_err(err)
    }

    fn start(&self, what: &Start<'_>) -> Result<Instance, DriverError> {
        let reference = format!("{}:{}", self.service.runs, what.version);
        let kept = kiln_vm::kept::find(&self.store_root, &reference).map_err(err)?;
        let id = self.id_for(&self.service.name, what.slot);
        let work = self.service_dir().join(&id);
        let _ = std::fs::remove_dir_all(&work); // a leftover
        let data =
            kiln_vm::boot::data_disks(&kept.data_disks, &self.green_data(what.slot)?, &|_| {})
                .map_err(err)?;
        let b = Boot {
            disk: kept.raw(),
            data,
            host: what.port,
            guest: self.service.port,
        };
        std::fs::create_dir_all(&work).map_err(err)?;
        let json = serde_json::to_vec(&b).map_err(err)?;
        std::fs::write(work.join("boot.json"), json).map_err(err)?;
        self.boot(&work, &b)?;
        Ok(Instance {
            id,
            slot: what.slot,
            version: what.version.clone(),
            digest: what.digest.clone(),
            addr: ([127, 0, 0, 1], what.port).into(),
        })
    }

    fn running(&self, i: &Instance) -> Result<bool, DriverError> {
        Ok(kiln_vm::boot::service_pid(&self.work(i)).is_some())
    }

    fn stop(&self, i: &Instance) -> Result<(), DriverError> {
        let work = self.work(i);
        if !kiln_vm::boot::power_down(&work, Duration::from_secs(180)).map_err(err)? {
            return Err(err(format!(
                "{} {} did not shut down within 180 s (its data disks may be inconsistent)",
                self.service.name, i.version
            )));
        }
        Ok(())
    }

    fn resume(&self, i: &Instance) -> Result<(), DriverError> {
        let work = self.work(i);
        if kiln_vm::boot::service_pid(&work).is_some() {
            return Ok(());
        }
        let b: Boot = serde_json::from_slice(&std::fs::read(work.join("boot.json")).map_err(err)?)
            .map_err(err)?;
        self.boot(&work, &b)
    }

    fn remove(&self, i: &Instance) -> Result<(), DriverError> {
        let work = self.work(i);
        if let Some(pid) = kiln_vm::boot::service_pid(&work) {
            let _ = kiln_tool::run(
                std::process::Command::new("kill")
                    .arg("-9")
                    .arg(pid.to_string()),
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        let _ = std::fs::remove_dir_all(&work);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(data: &str) -> Service {
        let toml = format!(
            "kiln = 1\n[image.os]\ncontext = \".\"\n[vm.node]\nimage = \"os\"\n\
             [service.node]\nvm = \"node\"\nport = 80\ndata = \"{data}\"\n\
             health = {{ http = \"/\" }}\nfront = {{ listen = \"127.0.0.1:9\" }}\n"
        );
        let f = kiln_definition::parse(vec![("/f/kiln.toml".into(), toml)], &|_| None).unwrap();
        f.services["node"].clone()
    }

    #[test]
    fn a_copied_green_gets_a_fresh_copy_of_the_other_slot_and_blue_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let q = Qemu {
            store_root: dir.path().to_path_buf(),
            service: service("copy"),
        };
        // the first instance has nothing to copy
        let one = q.green_data(1).unwrap();
        assert!(!one.exists());
        std::fs::create_dir_all(&one).unwrap();
        std::fs::write(one.join("data.raw"), "written by 1").unwrap();
        let two = q.green_data(2).unwrap();
        assert_ne!(one, two);
        assert_eq!(
            std::fs::read_to_string(two.join("data.raw")).unwrap(),
            "written by 1"
        );
        // green in slot 1 again: a copy of what 2 wrote since, not 1's old disk
        std::fs::write(two.join("data.raw"), "written by 2").unwrap();
        assert_eq!(q.green_data(1).unwrap(), one);
        assert_eq!(
            std::fs::read_to_string(one.join("data.raw")).unwrap(),
            "written by 2"
        );
    }

    #[test]
    fn moved_data_is_one_directory_for_both_slots() {
        let dir = tempfile::tempdir().unwrap();
        let q = Qemu {
            store_root: dir.path().to_path_buf(),
            service: service("move"),
        };
        assert!(q.exclusive_data());
        assert_eq!(q.green_data(1).unwrap(), q.green_data(2).unwrap());
    }
}
