//! A rollout as recorded steps: `planned` → `started` (green runs) →
//! `healthy` (its health check passed) → `in` (green takes traffic) →
//! `out` (blue drained, out of the pool, stopped and kept as the standby).
//! Traffic is never left pointing at nothing: green is in the pool before
//! blue leaves it. A green that does not become healthy never gets
//! traffic; it is removed and blue stays live. Run again after kiln was
//! killed, a rollout goes on from the step it had completed (each step is
//! safe to repeat). A rollback is the same steps with the kept standby as
//! green: resumed instead of started.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use chrono::Utc;
use kiln_definition::Service;

use crate::driver::{Driver, DriverError, Instance, Start};
use crate::haproxy::{Front, FrontError, SlotState};
use crate::health;
use crate::state::{Progress, Record, State, StateError};

/// Why a rollout did not happen or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error(transparent)]
    Front(#[from] FrontError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{service} {version} did not become healthy, so it got no traffic and was removed; {live} stays live: {why}")]
    Unhealthy {
        service: String,
        version: String,
        live: String,
        why: String,
    },
    #[error("{service} {version} did not come back healthy after the rollout was undone (it is in the pool again, and serves once it is up): {why}")]
    NotBack {
        service: String,
        version: String,
        why: String,
    },
    #[error("{rollout}; undoing it failed: {undo}")]
    UndoFailed {
        rollout: Box<RolloutError>,
        undo: Box<RolloutError>,
    },
    #[error(
        "{0} has no kept instance to roll back to (none was replaced, or its soak period is over)"
    )]
    NothingToRollBackTo(String),
    #[error("finding a free loopback port: {0}")]
    Port(std::io::Error),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0} was never baked: run `kiln bake` first")]
    NotBaked(String),
    #[error("{0} {1} was never baked here (see `kiln history {0}`)")]
    NoVersion(String, String),
    #[error("{0} {1} was not published to a registry, where the Docker engine would pull it from")]
    NotPublished(String, String),
    #[error(transparent)]
    History(#[from] kiln_factory::history::HistoryError),
    #[error("locking {0}: {1}")]
    Lock(std::path::PathBuf, std::io::Error),
}

/// What a rollout deploys: a pinned image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub version: String,
    pub digest: String,
    /// What the driver starts: `REPOSITORY:VERSION@DIGEST` for docker.
    pub reference: String,
}

/// How a rollout went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Already live: nothing was done.
    AlreadyLive(Instance),
    /// `live` took the traffic from `replaced` (kept as the standby).
    Switched {
        live: Instance,
        replaced: Option<Instance>,
        /// From the rollout's start to traffic on green.
        to_traffic: Duration,
    },
}

/// What a rollout works with.
pub struct Rollout<'a> {
    pub service: &'a Service,
    pub driver: &'a dyn Driver,
    pub front: Front,
    pub state: &'a State,
    pub say: &'a dyn Fn(&str),
    /// When the command started: "to traffic" counts from it.
    pub clock: std::time::Instant,
}

fn free_port() -> Result<u16, RolloutError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(RolloutError::Port)
}

impl Rollout<'_> {
    fn name(&self) -> &str {
        &self.service.name
    }

    /// Removes the standby whose soak period is over.
    pub fn retire_expired(&self) -> Result<(), RolloutError> {
        let mut rec = self.state.record(self.name())?;
        if let (Some(standby), Some(until)) = (&rec.standby, rec.standby_until) {
            if Utc::now() >= until && self.state.unfinished(self.name())?.is_none() {
                (self.say)(&format!(
                    "retiring {} {} (kept since it was replaced; its soak period is over)",
                    self.name(),
                    standby.version
                ));
                self.driver.remove(standby)?;
                rec.standby = None;
                rec.standby_until = None;
                self.state.set_record(self.name(), &rec)?;
            }
        }
        Ok(())
    }

    /// Rolls `target` out (or finishes an interrupted rollout first).
    pub fn rollout(&self, target: &Target) -> Result<Report, RolloutError> {
        self.driver.check()?;
        self.front.servers()?; // the front answers, with the service's slots
        if let Some(p) = self.state.unfinished(self.name())? {
            if p.kind == "rollout" && matches!(p.step.as_str(), "planned" | "blue-down") {
                // killed before green started: start over
                let rec = self.state.record(self.name())?;
                let _ = self.abort(&p, &rec, "interrupted before green started");
            } else {
                (self.say)(&format!(
                    "resuming the {} of {} {} after step {:?}",
                    p.kind,
                    self.name(),
                    p.green.version,
                    p.step
                ));
                let report = self.advance(p)?;
                if matches!(&report, Report::Switched { live, .. } if live.digest == target.digest)
                {
                    return Ok(report);
                }
            }
        }
        self.retire_expired()?;
        let rec = self.state.record(self.name())?;
        if let Some(live) = rec.live.clone().filter(|l| l.digest == target.digest) {
            return Ok(Report::AlreadyLive(live));
        }
        let slot = match &rec.live {
            Some(l) if l.slot == 1 => 2,
            _ => 1,
        };
        // the kept standby holds the other slot's container: it goes now
        if let Some(standby) = &rec.standby {
            self.driver.remove(standby)?;
            let rec = Record {
                standby: None,
                standby_until: None,
                ..rec.clone()
            };
            self.state.set_record(self.name(), &rec)?;
        }
        let port = free_port()?;
        let green = Instance {
            id: self.driver.id_for(self.name(), slot),
            slot,
            version: target.version.clone(),
            digest: target.digest.clone(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let p = self.state.begin(self.name(), "rollout", &green)?;
        self.start_green(p, target)
    }

    fn start_green(&self, mut p: Progress, target: &Target) -> Result<Report, RolloutError> {
        self.hand_over_data(&mut p)?;
        (self.say)(&format!(
            "starting {} {} ({}) on {}",
            self.name(),
            target.version,
            self.driver.name(),
            p.green.addr
        ));
        let started = self.driver.start(&Start {
            service: self.service,
            reference: target.reference.clone(),
            version: target.version.clone(),
            digest: target.digest.clone(),
            slot: p.green.slot,
            port: p.green.addr.port(),
        })?;
        p.green = started;
        let detail = serde_json::to_string(&p.green).unwrap_or_default();
        self.state
            .step(self.name(), &mut p, "started", &detail, None)?;
        self.advance(p)
    }

    /// When blue and green cannot use the data at once: the live instance
    /// out of the pool and shut down cleanly, so its data disks can go to
    /// green; writes pause until green takes traffic.
    fn hand_over_data(&self, p: &mut Progress) -> Result<(), RolloutError> {
        let rec = self.state.record(self.name())?;
        let Some(blue) = rec.live.filter(|_| self.driver.exclusive_data()) else {
            return Ok(());
        };
        // requests fail from here: blue takes no new ones, green none yet
        let out_of_pool = Utc::now();
        self.drain(&blue)?;
        (self.say)(&format!(
            "shutting {} {} down to hand its data to {}",
            self.name(),
            blue.version,
            p.green.version
        ));
        if let Err(e) = self.driver.stop(&blue) {
            // still running: it takes the traffic again
            if self.driver.running(&blue).unwrap_or(false) {
                self.front.set_state(blue.slot, SlotState::Ready)?;
            }
            self.state.finish(p, "aborted", &e.to_string())?;
            return Err(e.into());
        }
        // the step's detail: when blue left the pool, where the pause began
        let detail = out_of_pool.to_rfc3339();
        self.state
            .step(self.name(), p, "blue-down", &detail, None)?;
        Ok(())
    }

    /// Rolls back to the kept standby (or, in the middle of a rollout,
    /// undoes it: green out, blue stays).
    pub fn rollback(&self) -> Result<Report, RolloutError> {
        self.front.servers()?;
        let rec = self.state.record(self.name())?;
        if let Some(p) = self.state.unfinished(self.name())? {
            (self.say)(&format!(
                "undoing the unfinished {} of {} {}",
                p.kind,
                self.name(),
                p.green.version
            ));
            return self.abort(&p, &rec, "rolled back before it finished");
        }
        let Some(standby) = rec.standby.clone() else {
            return Err(RolloutError::NothingToRollBackTo(self.name().to_string()));
        };
        if rec.standby_until.is_some_and(|u| Utc::now() >= u) {
            return Err(RolloutError::NothingToRollBackTo(self.name().to_string()));
        }
        let mut p = self.state.begin(self.name(), "rollback", &standby)?;
        self.hand_over_data(&mut p)?;
        (self.say)(&format!(
            "starting the kept {} {} again",
            self.name(),
            standby.version
        ));
        self.driver.resume(&standby)?;
        self.state.step(self.name(), &mut p, "started", "", None)?;
        self.advance(p)
    }

    /// Undoes an unfinished rollout: green out of the pool and removed
    /// (a rollback's green, the kept standby, is stopped and kept), the
    /// live instance in it.
    fn abort(&self, p: &Progress, rec: &Record, why: &str) -> Result<Report, RolloutError> {
        let mut back: Result<(), RolloutError> = Ok(());
        if let Some(live) = &rec.live {
            if live.digest != p.green.digest || live.slot != p.green.slot {
                if !self.driver.running(live)? {
                    // shut down to hand over its data: it comes back
                    let _ = self.front.set_state(p.green.slot, SlotState::Maint);
                    let _ = self.driver.remove(&p.green);
                    (self.say)(&format!("starting {} {} again", self.name(), live.version));
                    self.driver.resume(live)?;
                    let alive = || self.driver.running(live).unwrap_or(true);
                    // slower than its health timeout, it still goes back
                    // in the pool: nothing else can serve, and it serves
                    // once it is up
                    back = health::wait(&self.service.health, live.addr, &alive)
                        .map(drop)
                        .map_err(|why| RolloutError::NotBack {
                            service: self.name().to_string(),
                            version: live.version.clone(),
                            why,
                        });
                }
                self.front.set_addr(live.slot, live.addr)?;
                self.front.set_state(live.slot, SlotState::Ready)?;
            }
        }
        if rec.live.as_ref() != Some(&p.green) {
            let _ = self.front.set_state(p.green.slot, SlotState::Maint);
            if p.kind == "rollback" {
                let _ = self.driver.stop(&p.green);
            } else {
                let _ = self.driver.remove(&p.green);
            }
        }
        self.state.finish(p, "aborted", why)?;
        back?;
        match &rec.live {
            Some(live) => Ok(Report::AlreadyLive(live.clone())),
            None => Err(RolloutError::NothingToRollBackTo(self.name().to_string())),
        }
    }

    /// Takes `blue` out of the pool: drained (no new requests, the running
    /// ones finish, up to 30 s), then in maintenance.
    fn drain(&self, blue: &Instance) -> Result<(), RolloutError> {
        self.front.set_state(blue.slot, SlotState::Drain)?;
        let drained = self
            .front
            .wait_drained(blue.slot, Duration::from_secs(30))?;
        self.front.set_state(blue.slot, SlotState::Maint)?;
        (self.say)(&format!(
            "{} {} is out of the pool{}",
            self.name(),
            blue.version,
            if drained {
                ""
            } else {
                " (still busy after 30 s)"
            }
        ));
        Ok(())
    }

    /// How long the service had no instance: from blue leaving the pool to
    /// be shut down for the data handover (the `blue-down` step's detail;
    /// a step recorded without it counts from when it was recorded) until
    /// now, if blue was shut down first.
    pub fn pause(&self, p: &Progress) -> Result<Option<Duration>, RolloutError> {
        let down = self
            .state
            .steps(p.id)?
            .into_iter()
            .find(|(step, ..)| step == "blue-down")
            .and_then(|(_, at, detail)| {
                chrono::DateTime::parse_from_rfc3339(&detail)
                    .or_else(|_| chrono::DateTime::parse_from_rfc3339(&at))
                    .ok()
            });
        Ok(down.map(|at| {
            (Utc::now() - at.with_timezone(&Utc))
                .to_std()
                .unwrap_or_default()
        }))
    }

    /// After green is in the pool: blue drained, out of the pool, stopped
    /// and kept as the standby; the service's new instances recorded with
    /// the step.
    fn take_blue_out(
        &self,
        mut p: Progress,
        mut rec: Record,
        to_traffic: Duration,
    ) -> Result<Report, RolloutError> {
        let name = self.name().to_string();
        if let Some(blue) = rec.live.clone().filter(|b| b.slot != p.green.slot) {
            if self.driver.running(&blue)? {
                self.drain(&blue)?;
                self.driver.stop(&blue)?;
            }
        }
        let replaced = rec.live.take().filter(|b| b.slot != p.green.slot);
        rec = Record {
            live: Some(p.green.clone()),
            standby_until: replaced
                .as_ref()
                .map(|_| Utc::now() + chrono::Duration::seconds(self.service.soak as i64)),
            standby: replaced.clone(),
            since: Some(Utc::now()),
        };
        self.state.step(&name, &mut p, "out", "", Some(&rec))?;
        self.state.finish(&p, "done", "")?;
        if let Some(b) = &replaced {
            (self.say)(&format!(
                "{name} {} is kept stopped for {} s for `kiln rollback`",
                b.version, self.service.soak
            ));
        }
        Ok(Report::Switched {
            live: p.green,
            replaced,
            to_traffic,
        })
    }

    /// Takes rollout `p` from the step it completed to its end.
    fn advance(&self, mut p: Progress) -> Result<Report, RolloutError> {
        let clock = self.clock;
        let mut to_traffic = Duration::ZERO;
        let rec = self.state.record(self.name())?;
        let name = self.name().to_string();
        loop {
            match p.step.as_str() {
                "planned" if p.kind == "rollback" => {
                    // killed before the standby started again
                    self.driver.resume(&p.green)?;
                    self.state.step(&name, &mut p, "started", "", None)?;
                }
                "planned" | "blue-down" => {
                    return self.abort(&p, &rec, "interrupted before green started");
                }
                "started" => {
                    let alive = || self.driver.running(&p.green).unwrap_or(true);
                    match health::wait(&self.service.health, p.green.addr, &alive) {
                        Ok(took) => {
                            (self.say)(&format!(
                                "{name} {} is healthy after {:.1} s",
                                p.green.version,
                                took.as_secs_f64()
                            ));
                            self.state.step(&name, &mut p, "healthy", "", None)?;
                        }
                        Err(why) => {
                            let live = rec
                                .live
                                .as_ref()
                                .map_or("nothing".to_string(), |l| l.version.clone());
                            let unhealthy = RolloutError::Unhealthy {
                                service: name,
                                version: p.green.version.clone(),
                                live,
                                why: why.clone(),
                            };
                            // an undo that failed is said too: then the
                            // live instance may not be serving
                            return Err(match self.abort(&p, &rec, &why) {
                                Ok(_) => unhealthy,
                                Err(undo) => RolloutError::UndoFailed {
                                    rollout: Box::new(unhealthy),
                                    undo: Box::new(undo),
                                },
                            });
                        }
                    }
                }
                "healthy" => {
                    self.front.set_addr(p.green.slot, p.green.addr)?;
                    self.front.set_state(p.green.slot, SlotState::Ready)?;
                    to_traffic = clock.elapsed();
                    (self.say)(&format!("{name} {} takes traffic", p.green.version));
                    if let Some(pause) = self.pause(&p)? {
                        (self.say)(&format!(
                            "writes paused {:.1} s while the data moved from blue to green",
                            pause.as_secs_f64()
                        ));
                    }
                    self.state.step(&name, &mut p, "in", "", None)?;
                }
                "in" => return self.take_blue_out(p, rec, to_traffic),
                _ => {
                    // "out" recorded with its record: only the end is missing
                    self.state.finish(&p, "done", "")?;
                    return Ok(Report::Switched {
                        live: p.green,
                        replaced: rec.standby.clone(),
                        to_traffic,
                    });
                }
            }
        }
    }
}
