//! The shape of a kiln.toml file, as serde reads it. Every table denies
//! unknown keys; values that need checking after parsing keep their span.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

/// The format version this kiln reads.
pub const FORMAT: u32 = 1;

/// A kiln.toml file: the images one factory produces.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "kiln.toml")]
pub struct FileDef {
    /// Format version of this file. This kiln reads format 1.
    #[schemars(with = "u32")]
    pub kiln: Spanned<u32>,
    /// Settings for every image of this file.
    #[serde(default)]
    pub factory: FactoryDef,
    /// The images this factory produces, by name. Names are unique across
    /// every factory file baked together; another image refers to one by
    /// this name (in its Dockerfile's FROM, or in `bases`).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, ImageDef>")]
    pub image: BTreeMap<Spanned<String>, ImageDef>,
    /// VM disk images, by name: each made from an image of the factory,
    /// rebuilt when that image is, boot-tested before it is published.
    /// Names are unique across images and VM images.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, VmDef>")]
    pub vm: BTreeMap<Spanned<String>, VmDef>,
    /// Long-lived services run from a factory image or VM image, replaced
    /// blue-green by `kiln rollout`, by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, ServiceDef>")]
    pub service: BTreeMap<Spanned<String>, ServiceDef>,
}

/// A service: what it runs, where, how its health is checked, its data and
/// the load balancer in front of it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceDef {
    /// The factory image it runs as a container (or give `vm`).
    #[schemars(with = "Option<String>")]
    pub image: Option<Spanned<String>>,
    /// The factory VM image it runs as a VM (or give `image`).
    #[schemars(with = "Option<String>")]
    pub vm: Option<Spanned<String>>,
    /// `docker` (the default for an image) or `qemu` (the default, and the
    /// only driver, for a VM image).
    #[schemars(with = "Option<String>")]
    pub driver: Option<Spanned<String>>,
    /// The TCP port the service listens on in its container or VM.
    #[schemars(with = "u16")]
    pub port: Spanned<u16>,
    /// docker: `bridge` (the default: the port is published on a loopback
    /// port) or `host` (the container shares the host's network and is
    /// given the loopback port to listen on as `$PORT`).
    #[schemars(with = "Option<String>")]
    pub network: Option<Spanned<String>>,
    /// How kiln knows an instance is ready.
    pub health: HealthDef,
    /// docker: a named volume, kept apart from the containers and shared
    /// by blue and green.
    pub volume: Option<String>,
    /// docker: where the volume is mounted in the container (default
    /// `/data`).
    pub mount: Option<String>,
    /// qemu: how the VM image's data disks reach green: `move` (the
    /// default: blue is shut down cleanly and its disks attached to green)
    /// or `copy` (green gets a copy; blue keeps its own).
    #[schemars(with = "Option<String>")]
    pub data: Option<Spanned<String>>,
    /// The load balancer in front.
    pub front: FrontDef,
    /// How long the replaced instance is kept (stopped) for `kiln
    /// rollback`: `30m`, `6h`, `1d`, `0`. Default `1h`.
    #[schemars(with = "Option<String>")]
    pub soak: Option<Spanned<String>>,
    /// Roll out by itself whenever a bake publishes a new version of its
    /// image (default false).
    #[serde(default)]
    pub auto: bool,
}

/// A health check: an HTTP request and the status it must answer, or a
/// command that must exit 0.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthDef {
    /// An HTTP GET of this path (e.g. `/healthz`) on the instance.
    #[schemars(with = "Option<String>")]
    pub http: Option<Spanned<String>>,
    /// The status `http` must answer (default 200).
    pub status: Option<u16>,
    /// A command run on this machine (`/bin/sh -c`), with `KILN_HOST` and
    /// `KILN_PORT` naming the instance; it must exit 0.
    #[schemars(with = "Option<String>")]
    pub command: Option<Spanned<String>>,
    /// How long an instance has to become healthy: `60s`, `5m` (default
    /// `2m`).
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
}

/// The traffic front: an HAProxy, switched through its runtime API.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrontDef {
    /// kiln writes and starts an HAProxy for the service, listening here
    /// (`127.0.0.1:8080`).
    #[schemars(with = "Option<String>")]
    pub listen: Option<Spanned<String>>,
    /// Or drives an HAProxy an operator runs: its runtime API socket
    /// (`stats socket ... level admin`).
    pub socket: Option<PathBuf>,
    /// The backend of that HAProxy to switch; it must hold two servers
    /// named `kiln1` and `kiln2` (`server-template kiln 2 127.0.0.1:1
    /// disabled`). Default: the service's name.
    pub backend: Option<String>,
}

/// Settings shared by the images of one file.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FactoryDef {
    /// When every image of this file is due for a rebuild even if nothing in
    /// git changed: a 5-field cron expression (minute hour day-of-month
    /// month day-of-week). An image's own `schedule` takes precedence.
    #[schemars(with = "Option<String>")]
    pub schedule: Option<Spanned<String>>,
    /// IANA time zone the schedules of this file are read in (default UTC).
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Spanned<String>>,
    /// Default registry repository prefix: each image is published to
    /// `docker://REGISTRY/NAME` unless it lists its own `publish` targets.
    /// `${VAR}` and `${VAR:-default}` are read from the environment.
    #[schemars(with = "Option<String>")]
    pub registry: Option<Spanned<String>>,
    /// Platforms every image of this file is built for (`os/arch[/variant]`,
    /// e.g. `["linux/amd64", "linux/arm64"]`) unless it lists its own; more
    /// than one makes each image an image index. Default: the machine's.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub platforms: Vec<Spanned<String>>,
    /// Paths whose content carries the time a package step ran (logs,
    /// caches, package lists), ignored when a rebuild is compared with the
    /// image it would replace; wildcards as in .dockerignore (`**` for any
    /// depth). Default: kiln's list (see the README).
    pub volatile: Option<Vec<String>>,
    /// How long a check of an image's packages for updates is reused
    /// before the package sources are asked again: `30m`, `6h`, `1d`, `0`
    /// (every plan). Default `1h`.
    #[schemars(with = "Option<String>")]
    pub probe_interval: Option<Spanned<String>>,
    /// Sign every image of this file and attach its SBOM and provenance
    /// after its tests pass: `{ key = "kiln.key" }` (a private key file,
    /// relative to this file) or `{ key = "env:VAR" }` (an environment
    /// variable holding the PEM). Never the key itself.
    pub sign: Option<KeyDef>,
    /// Refuse to build on a base (a factory image or a registry image) that
    /// is not signed by this public key: `{ key = "kiln.pub" }` or
    /// `{ key = "env:VAR" }`.
    pub verify_bases: Option<KeyDef>,
    /// A registry repository holding the step cache of every image of this
    /// file (`REGISTRY/REPOSITORY`, no tag): each bake takes unchanged steps
    /// from it and writes the steps it used back, so a runner with an empty
    /// store rebuilds nothing another runner built. `${VAR}` and
    /// `${VAR:-default}` are read from the environment.
    #[schemars(with = "Option<String>")]
    pub cache: Option<Spanned<String>>,
}

/// Where a key is: a file or an environment variable.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyDef {
    /// A PEM file relative to the kiln.toml, or `env:VAR`.
    #[schemars(with = "String")]
    pub key: Spanned<String>,
}

/// One image of the factory: built from a Dockerfile, or bootstrapped.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageDef {
    /// Build context directory, relative to this file (default: the file's
    /// directory).
    pub context: Option<PathBuf>,
    /// Dockerfile, relative to the context (default `Dockerfile`).
    pub dockerfile: Option<PathBuf>,
    /// Build arguments (`--build-arg`).
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// Stage to build (`--target`).
    pub target: Option<String>,
    /// Secrets for `RUN --mount=type=secret`: id → file, relative to this
    /// file.
    #[serde(default)]
    pub secrets: BTreeMap<String, PathBuf>,
    /// Bases given explicitly: a reference as written in the Dockerfile's
    /// FROM → the factory image that replaces it. A FROM naming a factory
    /// image directly needs no entry here.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub bases: BTreeMap<String, Spanned<String>>,
    /// Bootstrap this image (a root of a chain) with mmdebstrap instead of
    /// building it from a Dockerfile.
    pub mmdebstrap: Option<MmdebstrapDef>,
    /// Version scheme: `date` (YYYYMMDD.N, N counting the bakes of the
    /// day; the default), `git` (the short commit of the definition's
    /// repository), or `file:PATH` (the first line of a file relative to
    /// this kiln.toml).
    #[schemars(with = "Option<String>")]
    pub version: Option<Spanned<String>>,
    /// Moving tags applied next to the version tag, e.g. `latest`, `stable`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Where the image goes once its tests pass: `docker://HOST/REPO` (a
    /// registry repository), `oci-archive:PATH` (a file relative to this
    /// kiln.toml), `store` (kiln's local store, where every image is also
    /// kept). `${VAR}` and `${VAR:-default}` are read from the environment.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub publish: Vec<Spanned<String>>,
    /// Commands run in a throwaway container of the new image; each must
    /// exit 0 before the image is published. A string runs with
    /// `/bin/sh -c`, an array runs as is.
    #[serde(default)]
    pub test: Vec<TestDef>,
    /// This image's own rebuild schedule (5-field cron).
    #[schemars(with = "Option<String>")]
    pub schedule: Option<Spanned<String>>,
    /// Time zone of this image's schedule (default: the factory's, or UTC).
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Spanned<String>>,
    /// Platforms this image is built for (default: the factory's, else the
    /// machine's). An image built on a factory image takes each platform's
    /// image of it, so a chain stays per platform; foreign platforms' RUN
    /// steps and tests run under QEMU user emulation.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub platforms: Option<Vec<Spanned<String>>>,
    /// Which RUN steps a rebuild for freshness (a due schedule, package
    /// updates, `kiln bake --refresh`) runs again instead of taking from
    /// the cache: `packages` (the default: steps that run apt-get, apt,
    /// apk, dnf, yum, microdnf or zypper), `runs` (every RUN) or `none`.
    #[schemars(with = "Option<String>")]
    pub refresh: Option<Spanned<String>>,
    /// This image's volatile paths, instead of the factory's.
    pub volatile: Option<Vec<String>>,
}

/// A Debian root filesystem made by mmdebstrap.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq, Eq, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MmdebstrapDef {
    /// Debian suite, e.g. `bookworm`.
    pub suite: String,
    /// mmdebstrap variant (default `minbase`).
    #[serde(default = "default_variant")]
    pub variant: String,
    /// Archive components (default `["main"]`).
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    /// Extra packages to install.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Debian architecture (default: the machine's). With `platforms`,
    /// leave it out: each platform's architecture is bootstrapped.
    pub architecture: Option<String>,
    /// Mirror URL (default: mmdebstrap's).
    pub mirror: Option<String>,
    /// A snapshot.debian.org timestamp (`YYYYMMDDTHHMMSSZ`): the archive as
    /// it was then, for a reproducible base.
    pub snapshot: Option<String>,
    /// More package sources, after the mirror, for the bootstrap and the
    /// base's own sources.list: one-line entries (`deb [trusted=yes]
    /// http://repo.example/debian bookworm main`) or URIs (the suite and
    /// components above).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

fn default_variant() -> String {
    "minbase".into()
}

fn default_components() -> Vec<String> {
    vec!["main".into()]
}

/// A test command.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum TestDef {
    /// Run with `/bin/sh -c`.
    Shell(String),
    /// Run as is (exec form).
    Exec(Vec<String>),
}

/// A VM disk image made from a factory image: the image's root filesystem
/// (which must install a kernel, an initramfs and systemd) on a GPT disk
/// with an EFI system partition and systemd-boot.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmDef {
    /// The factory image it is made from (its image for this machine's
    /// platform). The VM image is rebuilt whenever that image is.
    #[schemars(with = "String")]
    pub image: Spanned<String>,
    /// Disk size: a number with K, M, G or T (default `2G`).
    #[schemars(with = "Option<String>")]
    pub size: Option<Spanned<String>>,
    /// A separate /var partition of this size (K, M, G or T), filled with
    /// the image's /var; none: /var is on the root filesystem.
    #[schemars(with = "Option<String>")]
    pub var: Option<Spanned<String>>,
    /// Root filesystem: `ext4` (the only one; the default).
    #[schemars(with = "Option<String>")]
    pub filesystem: Option<Spanned<String>>,
    /// EFI bootloader: `systemd-boot` (the default; from the image's
    /// `systemd-boot-efi`, else this machine's) or `grub` (one EFI image
    /// made by `grub-mkimage` with its configuration built in, from the
    /// image's `grub-efi-amd64-bin` modules, else this machine's).
    #[schemars(with = "Option<String>")]
    pub bootloader: Option<Spanned<String>>,
    /// Extra kernel command line, after `root=` and the serial console
    /// (`console=ttyS0`, always set).
    #[serde(default)]
    pub cmdline: String,
    /// The VM's hostname (default: the VM image's name).
    pub hostname: Option<String>,
    /// A login user made at bake time: a locked password, logins with this
    /// SSH key only.
    pub user: Option<VmUserDef>,
    /// Files published besides the raw disk kiln keeps: any of `raw`,
    /// `qcow2`, `vmdk`, `vhdx` (default `["qcow2"]`).
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub formats: Option<Vec<Spanned<String>>>,
    /// Seconds the boot test waits for the VM to reach multi-user with its
    /// data disks mounted (default 300; software emulation is slow).
    #[schemars(with = "Option<u64>")]
    pub boot_timeout: Option<Spanned<u64>>,
    /// Shell commands run in the booted VM during the boot test (as root,
    /// after multi-user.target, data disks mounted); each must exit 0
    /// before the VM image is published. Their output comes back over a
    /// serial port.
    #[serde(default)]
    pub test: Vec<String>,
    /// Disks kept apart from the OS disk: created once (empty) where the VM
    /// runs, mounted by label; replacing the OS disk keeps them. The boot
    /// test attaches fresh ones.
    #[serde(default)]
    pub data_disks: Vec<DataDiskDef>,
    /// Version scheme, as for images (`date`, `git`, `file:PATH`).
    #[schemars(with = "Option<String>")]
    pub version: Option<Spanned<String>>,
    /// Moving tags applied next to the version tag.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Where the disk files go once the boot test passes:
    /// `docker://HOST/REPO` (an OCI artifact, artifactType
    /// `application/vnd.kiln.vm.v1`), `dir:PATH` (a directory relative to
    /// this kiln.toml), `store` (kiln's store, where every VM image is also
    /// kept). Default: the factory's `registry`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub publish: Vec<Spanned<String>>,
}

/// The login user of a VM image.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmUserDef {
    /// User name (lowercase letters, digits, `_`, `-`).
    pub name: String,
    /// Its SSH public key: the key itself (`ssh-ed25519 AAAA… comment`) or
    /// a `.pub` file relative to this kiln.toml.
    #[schemars(with = "String")]
    pub ssh_key: Spanned<String>,
}

/// A data disk: a whole disk of its own with one filesystem.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataDiskDef {
    /// Filesystem label it is mounted by (1 to 16 of `[A-Za-z0-9_-]`).
    #[schemars(with = "String")]
    pub label: Spanned<String>,
    /// Size (K, M, G or T).
    #[schemars(with = "String")]
    pub size: Spanned<String>,
    /// Absolute mount point in the VM.
    #[schemars(with = "String")]
    pub mount: Spanned<String>,
    /// Filesystem: `ext4` (the only one; the default).
    #[schemars(with = "Option<String>")]
    pub filesystem: Option<Spanned<String>>,
}
