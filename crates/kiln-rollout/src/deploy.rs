//! A service's rollout as the commands and the service start it: the
//! pinned image from the lock (or a version from the bake history), the
//! service's driver and HAProxy front, the rollout database in the store.
//! `kiln rollout`, `kiln bake` (services with `auto = true`) and `kiln
//! serve` all go through [`deploy`].

use std::path::Path;
use std::time::Instant;

use kiln_definition::{Driver as DriverKind, Factory, Front as FrontDef, Service};
use kiln_factory::history::History;
use kiln_factory::plan::Locks;

use crate::docker::Docker;
use crate::driver::Driver;
use crate::haproxy::{self, Front};
use crate::rollout::{Report, Rollout, RolloutError, Target};
use crate::state::State;

/// The service's driver.
pub fn driver(s: &Service, store_root: &Path) -> Result<Box<dyn Driver>, RolloutError> {
    match s.driver {
        DriverKind::Docker => Ok(Box::new(Docker)),
        DriverKind::Qemu => Ok(Box::new(crate::qemu::Qemu {
            store_root: store_root.to_path_buf(),
            service: s.clone(),
        })),
    }
}

/// The service's HAProxy: started by kiln for `front.listen` (its files
/// in `STORE/services/NAME/`), checked for an operator's.
pub fn front(s: &Service, store_root: &Path) -> Result<Front, RolloutError> {
    let front = match &s.front {
        FrontDef::Local { listen } => {
            haproxy::ensure_local(&s.name, *listen, &store_root.join("services").join(&s.name))?
        }
        FrontDef::External { socket, backend } => Front {
            socket: socket.clone(),
            backend: backend.clone(),
        },
    };
    // it answers, with the two slots, before anything changes
    front.servers()?;
    Ok(front)
}

/// The rollout database of the store.
pub fn state(store_root: &Path) -> Result<State, RolloutError> {
    Ok(State::open(&store_root.join("rollouts.db"))?)
}

/// What the lock pins for the service's image, or `version` from the
/// history; the docker driver pulls it from the registry it was published
/// to.
pub fn target(
    s: &Service,
    factory: &Factory,
    locks: &Locks,
    history: &History,
    version: Option<&str>,
) -> Result<Target, RolloutError> {
    let image = &s.runs;
    let (v, digest, published) = match (locks.get(image), version) {
        (Some(l), None) => (l.version.clone(), l.digest.clone(), l.published.clone()),
        (Some(l), Some(v)) if l.version == v => {
            (l.version.clone(), l.digest.clone(), l.published.clone())
        }
        (None, None) => return Err(RolloutError::NotBaked(image.clone())),
        (_, Some(v)) => {
            let file = &factory.files[factory.images[image].file].path;
            let e = history
                .recent(file, image, 1000)?
                .into_iter()
                .find(|e| e.outcome == "built" && e.version.as_deref() == Some(v))
                .ok_or_else(|| RolloutError::NoVersion(image.clone(), v.to_string()))?;
            (v.to_string(), e.digest.unwrap_or_default(), e.published)
        }
    };
    let reference = match s.driver {
        // the VM image kept in the store
        DriverKind::Qemu => format!("{image}:{v}"),
        DriverKind::Docker => published
            .iter()
            .find_map(|p| p.strip_prefix("docker://"))
            .ok_or_else(|| RolloutError::NotPublished(image.clone(), v.clone()))?
            .to_string(),
    };
    Ok(Target {
        version: v,
        digest,
        reference,
    })
}

/// What a rollout of a factory's service needs.
pub struct Deploy<'a> {
    pub factory: &'a Factory,
    pub locks: &'a Locks,
    pub history: &'a History,
    pub store_root: &'a Path,
    pub say: &'a dyn Fn(&str),
}

impl Deploy<'_> {
    /// Runs `f` with a rollout of service `s`: its driver, its front
    /// (started or checked), the store's rollout database.
    fn with<T>(
        &self,
        s: &Service,
        f: impl FnOnce(&Rollout<'_>) -> Result<T, RolloutError>,
    ) -> Result<T, RolloutError> {
        let clock = Instant::now();
        let _one = self.lock(s)?;
        let driver = driver(s, self.store_root)?;
        let front = front(s, self.store_root)?;
        let state = state(self.store_root)?;
        f(&Rollout {
            service: s,
            driver: driver.as_ref(),
            front,
            state: &state,
            say: self.say,
            clock,
        })
    }

    /// One rollout of a service at a time: an exclusive lock on
    /// `STORE/services/NAME/rollout.lock`, held until it is dropped.
    fn lock(&self, s: &Service) -> Result<std::fs::File, RolloutError> {
        let dir = self.store_root.join("services").join(&s.name);
        let path = dir.join("rollout.lock");
        let file = std::fs::create_dir_all(&dir)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
            })
            .map_err(|e| RolloutError::Lock(path.clone(), e))?;
        if file.try_lock().is_err() {
            (self.say)(&format!("waiting for another rollout of {} to end", s.name));
            file.lock().map_err(|e| RolloutError::Lock(path, e))?;
        }
        Ok(file)
    }

    /// Rolls service `s` out to `version` (default: what the lock pins).
    pub fn rollout(&self, s: &Service, version: Option<&str>) -> Result<Report, RolloutError> {
        self.with(s, |r| {
            let target = target(s, self.factory, self.locks, self.history, version)?;
            r.rollout(&target)
        })
    }

    /// Rolls service `s` back to its kept standby.
    pub fn rollback(&self, s: &Service) -> Result<Report, RolloutError> {
        self.with(s, |r| r.rollback())
    }

    /// Rolls out every `auto` service whose image `summary`'s bake built
    /// and published.
    pub fn auto(
        &self,
        summary: &kiln_factory::baked::Summary,
    ) -> Vec<(String, Result<Report, RolloutError>)> {
        let published: Vec<&String> = summary
            .images
            .iter()
            .filter(|i| i.outcome == kiln_factory::baked::Outcome::Built && !i.published.is_empty())
            .map(|i| &i.name)
            .collect();
        self.factory
            .services
            .values()
            .filter(|s| s.auto && published.contains(&&s.runs))
            .map(|s| {
                (self.say)(&format!(
                    "{}: rolling out the new {} (auto)",
                    s.name, s.runs
                ));
                (s.name.clone(), self.rollout(s, None))
            })
            .collect()
    }
}
