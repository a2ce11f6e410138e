//! `[service.NAME]`: a long-lived service that `kiln rollout` replaces
//! blue-green, checked field by field so every error points at the value
//! that is wrong. Whether the image it names exists is checked once every
//! file is read ([`check`]).

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use crate::model::{HealthDef, ServiceDef};
use crate::{parse_duration, Error, Factory, Recipe};

type ErrAt<'a> = &'a dyn Fn(Range<usize>, String) -> Error;

/// A service, checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Service {
    pub name: String,
    /// Index into [`Factory::files`] of the file declaring it.
    #[serde(skip)]
    pub file: usize,
    #[serde(skip)]
    pub span: Range<usize>,
    /// The factory image (a container) or VM image it runs.
    pub runs: String,
    #[serde(skip)]
    pub runs_span: Range<usize>,
    pub driver: Driver,
    pub port: u16,
    pub network: Network,
    pub health: Health,
    /// docker: the named volume shared by blue and green, and its mount.
    pub volume: Option<(String, String)>,
    pub data: Handover,
    pub front: Front,
    /// Seconds the replaced instance is kept for a rollback.
    pub soak: u64,
    pub auto: bool,
}

/// Where instances run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Docker,
    Qemu,
}

/// How a container reaches its loopback port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Its `port` published on a loopback port.
    Bridge,
    /// The host's network; it listens on `$PORT`.
    Host,
}

/// How a VM's data disks reach green.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Handover {
    Move,
    Copy,
}

/// When an instance is healthy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    pub check: Check,
    /// Seconds it has to become healthy.
    pub timeout: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// GET `path` answers `status`.
    Http { path: String, status: u16 },
    /// `/bin/sh -c COMMAND` exits 0 (`KILN_HOST`, `KILN_PORT` set).
    Command(String),
}

/// The HAProxy in front.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Front {
    /// One kiln writes and starts, listening on `listen`.
    Local { listen: SocketAddr },
    /// One an operator runs: its runtime API socket and the backend.
    External { socket: PathBuf, backend: String },
}

/// The default soak: an hour.
pub const DEFAULT_SOAK: u64 = 3600;
/// The default health timeout: two minutes.
pub const DEFAULT_HEALTH_TIMEOUT: u64 = 120;

fn one_of<'a>(
    a: Option<&'a Spanned<String>>,
    b: Option<&'a Spanned<String>>,
    names: (&str, &str),
    what: &str,
    at: Range<usize>,
    err: ErrAt<'_>,
) -> Result<(bool, &'a Spanned<String>), Error> {
    match (a, b) {
        (Some(a), None) => Ok((true, a)),
        (None, Some(b)) => Ok((false, b)),
        (Some(_), Some(b)) => Err(err(
            b.span(),
            format!("{what}: give `{}` or `{}`, not both", names.0, names.1),
        )),
        (None, None) => Err(err(
            at,
            format!("{what}: give `{}` or `{}`", names.0, names.1),
        )),
    }
}

fn health(h: &HealthDef, at: Range<usize>, err: ErrAt<'_>) -> Result<Health, Error> {
    let (http, v) = one_of(
        h.http.as_ref(),
        h.command.as_ref(),
        ("http", "command"),
        "health",
        at,
        err,
    )?;
    let check = if http {
        let path = v.get_ref();
        if !path.starts_with('/') || path.contains(char::is_whitespace) {
            return Err(
                err(v.span(), format!("health: {path:?} is not an HTTP path"))
                    .with_hint("e.g. http = \"/healthz\""),
            );
        }
        let status = h.status.unwrap_or(200);
        if !(100..=599).contains(&status) {
            return Err(err(
                v.span(),
                format!("health: status {status} is not an HTTP status"),
            ));
        }
        Check::Http {
            path: path.clone(),
            status,
        }
    } else {
        if h.status.is_some() {
            return Err(err(
                v.span(),
                "health: `status` goes with `http`, not `command`".into(),
            ));
        }
        Check::Command(v.get_ref().clone())
    };
    let timeout = match &h.timeout {
        Some(t) => match parse_duration(t.get_ref()) {
            Ok(0) => return Err(err(t.span(), "health timeout must not be 0".into())),
            Ok(n) => n,
            Err(m) => return Err(err(t.span(), format!("health timeout: {m}"))),
        },
        None => DEFAULT_HEALTH_TIMEOUT,
    };
    Ok(Health { check, timeout })
}

/// The driver: named, or the default for what the service runs.
fn driver(d: Option<&Spanned<String>>, is_image: bool, err: ErrAt<'_>) -> Result<Driver, Error> {
    let Some(d) = d else {
        return Ok(if is_image {
            Driver::Docker
        } else {
            Driver::Qemu
        });
    };
    match (d.get_ref().as_str(), is_image) {
        ("docker", true) => Ok(Driver::Docker),
        ("qemu", false) => Ok(Driver::Qemu),
        ("docker", false) | ("qemu", true) => Err(err(
            d.span(),
            format!(
                "driver {:?} does not run {}",
                d.get_ref(),
                if is_image {
                    "container images"
                } else {
                    "VM images"
                }
            ),
        )
        .with_hint("docker runs `image`, qemu runs `vm`")),
        (other, _) => Err(err(d.span(), format!("driver {other:?} is not known"))
            .with_hint("kiln drives `docker` and `qemu`")),
    }
}

/// One of `choices` by name; the first when absent.
fn choice<T: Copy>(
    v: Option<&Spanned<String>>,
    what: &str,
    choices: &[(&str, T)],
    err: ErrAt<'_>,
) -> Result<T, Error> {
    let Some(v) = v else {
        return Ok(choices[0].1);
    };
    choices
        .iter()
        .find(|(n, _)| n == v.get_ref())
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            err(v.span(), format!("{what} {:?} is not known", v.get_ref()))
                .with_hint(names.join(" or "))
        })
}

/// The front: an HAProxy kiln runs (`listen`) or one an operator runs
/// (`socket`, `backend`).
fn front(
    def: &crate::model::FrontDef,
    name: &str,
    dir: &std::path::Path,
    at: Range<usize>,
    err: ErrAt<'_>,
) -> Result<Front, Error> {
    match (&def.listen, &def.socket) {
        (Some(l), None) => {
            if def.backend.is_some() {
                return Err(err(
                    l.span(),
                    "front: `backend` goes with `socket` (an HAProxy you run)".into(),
                ));
            }
            let listen = l.get_ref().parse().map_err(|_| {
                err(
                    l.span(),
                    format!("front: listen {:?} is not an address and port", l.get_ref()),
                )
                .with_hint("e.g. \"127.0.0.1:8080\"")
            })?;
            Ok(Front::Local { listen })
        }
        (None, Some(socket)) => Ok(Front::External {
            socket: dir.join(socket),
            backend: def.backend.clone().unwrap_or_else(|| name.to_string()),
        }),
        _ => Err(err(
            at,
            format!(
                "service {name:?}: its front needs `listen` (kiln runs an HAProxy) or `socket` (yours), one of them"
            ),
        )),
    }
}

pub(crate) fn read(
    name: Spanned<String>,
    def: ServiceDef,
    file: usize,
    dir: &std::path::Path,
    err: ErrAt<'_>,
) -> Result<Service, Error> {
    let span = name.span();
    let name = name.into_inner();
    let what = format!("service {name:?}");
    let (is_image, runs) = one_of(
        def.image.as_ref(),
        def.vm.as_ref(),
        ("image", "vm"),
        &what,
        span.clone(),
        err,
    )?;
    let driver = driver(def.driver.as_ref(), is_image, err)?;
    let docker_only = |v: Option<Range<usize>>, key: &str| match (v, driver) {
        (Some(s), Driver::Qemu) => Err(err(s, format!("`{key}` is for the docker driver"))),
        _ => Ok(()),
    };
    docker_only(def.network.as_ref().map(Spanned::span), "network")?;
    if def.volume.is_some() || def.mount.is_some() {
        docker_only(Some(span.clone()), "volume")?;
    }
    if let (Some(d), Driver::Docker) = (&def.data, driver) {
        return Err(err(
            d.span(),
            "`data` is for the qemu driver (a container shares its volume)".into(),
        ));
    }
    let network = choice(
        def.network.as_ref(),
        "network",
        &[("bridge", Network::Bridge), ("host", Network::Host)],
        err,
    )?;
    let data = choice(
        def.data.as_ref(),
        "data",
        &[("move", Handover::Move), ("copy", Handover::Copy)],
        err,
    )?;
    if *def.port.get_ref() == 0 {
        return Err(err(def.port.span(), "port must not be 0".into()));
    }
    let volume = match (def.volume, def.mount) {
        (Some(v), m) => {
            let m = m.unwrap_or_else(|| "/data".into());
            if !m.starts_with('/') {
                return Err(err(
                    span.clone(),
                    format!("mount {m:?} is not an absolute path"),
                ));
            }
            Some((v, m))
        }
        (None, Some(_)) => return Err(err(span.clone(), "`mount` needs a `volume`".into())),
        (None, None) => None,
    };
    let front = front(&def.front, &name, dir, span.clone(), err)?;
    let soak = match &def.soak {
        Some(s) => parse_duration(s.get_ref()).map_err(|m| err(s.span(), format!("soak: {m}")))?,
        None => DEFAULT_SOAK,
    };
    Ok(Service {
        health: health(&def.health, span.clone(), err)?,
        name,
        file,
        span,
        runs: runs.get_ref().clone(),
        runs_span: runs.span(),
        driver,
        port: *def.port.get_ref(),
        network,
        volume,
        data,
        front,
        soak,
        auto: def.auto,
    })
}

/// Every service runs what the factory makes: a container image for
/// docker, a VM image for qemu; and no two services share a name.
pub(crate) fn check(factory: &Factory) -> Result<(), Error> {
    for s in factory.services.values() {
        let at = |m: String| factory.error_at(s.file, s.runs_span.clone(), m);
        let want_vm = s.driver == Driver::Qemu;
        let known = |vm: bool| {
            let names: Vec<&str> = factory
                .images
                .iter()
                .filter(|(_, i)| matches!(i.recipe, Recipe::Vm(_)) == vm)
                .map(|(n, _)| n.as_str())
                .collect();
            format!(
                "known {}: {}",
                if vm { "VM images" } else { "images" },
                names.join(", ")
            )
        };
        match factory
            .images
            .get(&s.runs)
            .map(|i| matches!(i.recipe, Recipe::Vm(_)))
        {
            None => {
                return Err(at(format!(
                    "service {:?} runs {} {:?}, which no factory file declares",
                    s.name,
                    if want_vm { "VM image" } else { "image" },
                    s.runs
                ))
                .with_hint(known(want_vm)))
            }
            Some(is_vm) if is_vm != want_vm => {
                return Err(at(format!(
                    "service {:?}: {:?} is {}",
                    s.name,
                    s.runs,
                    if is_vm {
                        "a VM image: use `vm = ...`"
                    } else {
                        "a container image: use `image = ...`"
                    }
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}
