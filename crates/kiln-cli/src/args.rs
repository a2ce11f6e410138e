//! The command line as typed: clap structures and nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod ci;
pub use ci::{CiCommand, CiGithubArgs, CiIndexArgs, LockCommand, LockMergeArgs, RunnerArgs};

/// kiln bakes container and VM images from definitions in git, keeps them
/// fresh, chains them, and publishes them pinned.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, long_about = None)]
pub struct Cli {
    /// The store directory [default: $KILN_STORE, /var/lib/kiln as root]
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Reach this registry over plain HTTP (loopback registries always are)
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Trust this CA certificate (PEM) for registries, besides the system's
    #[arg(long = "ca-cert", global = true, value_name = "FILE")]
    pub ca_certs: Vec<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile, as root, with no daemon.
    ///
    /// Only the stages the target needs are built; unchanged steps are
    /// reused from the cache. The image is stored in kiln's store under the
    /// given names; --output also writes it elsewhere.
    /// Exit status: 0 built, 1 the Dockerfile or a step failed, 2 bad command line.
    Build(BuildArgs),
    /// Run a command in a throwaway container of an image in the store.
    ///
    /// Prints the command's output and exits with its exit code.
    Run(RunArgs),
    /// List the images in the store.
    Images(ImagesArgs),
    /// Show an image's manifest and config as JSON.
    Inspect(InspectArgs),
    /// Remove image names from the store (blobs stay until `kiln prune`).
    Rmi(RmiArgs),
    /// Remove blobs, snapshots and cache entries that no image name reaches.
    Prune,
    /// Verify every blob against its digest, every image's references and
    /// every snapshot (an unpacked layer) against its layer.
    ///
    /// Snapshots are compared by type, mode, owner, size and link target of
    /// each entry (no file is read); --full hashes every file too. A broken
    /// snapshot is harmless to remove: kiln unpacks it again from its layer
    /// when next needed (--repair does that). With --full, a snapshot whose
    /// layer has no blob yet (a builder stage's, kept only as a snapshot) is
    /// made into its tar again and checked against the diff ID its step
    /// recorded; --repair removes a broken one with its cache entry, so the
    /// step runs again.
    ///
    /// Exit status: 0 the store is clean, 1 problems were found (after
    /// --repair: problems it could not repair remain).
    Fsck(FsckArgs),
    /// Write an image in the store to an archive.
    Save(SaveArgs),
    /// Fetch an image from a registry into the store.
    ///
    /// Short names resolve as Docker's do (debian:bookworm is
    /// docker.io/library/debian:bookworm); an index yields the image for the
    /// host's platform (or --platform). Prints the manifest digest.
    Pull(PullArgs),
    /// Publish an image of the store to a registry.
    ///
    /// Blobs the registry has are skipped, blobs it has in another
    /// repository are mounted, the rest stream from disk; the manifest goes
    /// last. Prints the manifest digest.
    Push(PushArgs),
    /// Store credentials for a registry in ~/.docker/config.json, as docker login does.
    Login(LoginArgs),
    /// Work with Dockerfiles without building them.
    #[command(subcommand)]
    Dockerfile(DockerfileCommand),
    /// Bake and boot VM disk images made from images in the store.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Spread the factory over a CI engine.
    #[command(subcommand)]
    Ci(CiCommand),
    /// Work with kiln.lock.
    #[command(subcommand)]
    Lock(LockCommand),
    /// Show which images of the factory are stale, why, and how a bake
    /// would rebuild them.
    ///
    /// Reads kiln.toml (or the factory files named with -f), each image's
    /// Dockerfile and build context, the lock files beside the factory
    /// files, and asks registries where registry bases point now. For each
    /// image: up to date, or stale with every reason (never built,
    /// definition changed, context changed, base moved, upstream rebuilt or
    /// to be rebuilt, schedule due, --force); then the waves a bake builds
    /// in (images of one wave build concurrently).
    /// Exit status: 0 planned, 1 a factory file or Dockerfile is invalid or
    /// a base cannot be resolved, 2 bad command line.
    Plan(PlanArgs),
    /// Bring every image of the factory up to date: build what is stale and
    /// everything above it, test, publish, record in kiln.lock.
    ///
    /// Images build in the waves `kiln plan` shows, the images of a wave
    /// concurrently. Each new image is tagged NAME:VERSION (and its moving
    /// tags) in the store, its tests run in throwaway containers, then it is
    /// published to every target and its lock entry written — so a bake cut
    /// off anywhere resumes with what is still stale. A failure stops only
    /// the images built on the failed one.
    /// Exit status: 0 everything is up to date, 1 an image failed to build,
    /// test or publish (or the factory is invalid), 2 bad command line.
    Bake(BakeArgs),
    /// Show recorded bakes: when, why, from which inputs, the result
    /// digest, how long, the tests and where each image was published.
    ///
    /// Every image a bake built, failed or skipped is recorded in the
    /// store's history database (history.db).
    History(HistoryArgs),
    /// Keep factories fresh by itself: plan on every schedule tick and poll,
    /// queue what is stale, bake it as `kiln bake` does.
    ///
    /// The queue lives in the store (service.db): killed at any moment and
    /// started again, kiln serve runs the interrupted job once more; a job
    /// that fails twice is not retried until what it would bake changes.
    /// Every bake is recorded in the history.
    ///
    /// The same process serves a dashboard (/), a JSON API (/api/...),
    /// Prometheus metrics (/metrics), status badges (/badge/FACTORY/IMAGE.svg),
    /// /healthz and /readyz on --listen. Queueing a bake (POST) needs the
    /// bearer token of --token-file; reads are open on a loopback address
    /// and need the token on any other.
    ///
    /// SIGTERM or Ctrl-C stops it cleanly: no job starts, a running bake
    /// ends after its current step (publishing, once begun, finishes) and
    /// is queued again; a second signal stops it at once.
    Serve(ServeArgs),
    /// Replace a service blue-green with the version kiln.lock pins.
    ///
    /// Green starts beside the running blue (docker: a container of the
    /// pinned digest on a loopback port, the service's volume shared;
    /// qemu: the kept VM image booted in the background with its port
    /// forwarded to loopback, its data disks moved from blue, which is shut
    /// down cleanly first and the pause reported, or copied), must pass
    /// its health check, takes traffic in the service's HAProxy
    /// (switched through the runtime API, no reload), then blue is drained,
    /// taken out of the pool, stopped and kept for the soak period so
    /// `kiln rollback` can bring it back. A green that is not healthy never
    /// gets traffic and is removed; blue stays live. Every step is
    /// recorded (rollouts.db in the store): run again after an
    /// interruption, it goes on from where it stopped.
    /// Exit status: 0 switched or already live, 1 failed, 2 bad command line.
    Rollout(RolloutArgs),
    /// Switch a service back to the instance its last rollout replaced,
    /// while it is kept (or undo an unfinished rollout).
    Rollback(RollbackArgs),
    /// List the factory's services: live and standby versions, since when,
    /// and whether the live one is healthy.
    Services(ServicesArgs),
    /// Make a signing key pair (ECDSA P-256, what cosign's key-based mode
    /// and most verifiers accept).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print the SBOM of an image in the store: its operating-system
    /// packages (dpkg or apk database) with versions, architectures, source
    /// packages, declared licences and package URLs. For a kept VM image
    /// (NAME:VERSION of a [vm.NAME]): its image's, bound to its disk files.
    Sbom(SbomArgs),
    /// Check an image's signature and attestations against a public key.
    ///
    /// IMAGE is a name in the store, or a registry reference (docker://REF,
    /// or a REF the store does not have). Checks the cosign signature of
    /// its digest, every attestation's DSSE signature, and that each
    /// attestation names this exact digest; a multi-platform image's
    /// platforms are checked too. Each failure says what is wrong.
    /// Exit status: 0 verified, 1 not verified, 2 bad command line.
    Verify(VerifyArgs),
    /// Pin the factory's images in Kubernetes manifests: every container
    /// `image` (and kustomization `images:` entry) naming a factory image's
    /// repository becomes the lock's REPOSITORY:VERSION@DIGEST; every
    /// other byte of the files stays as it was.
    ///
    /// With --check nothing is written: exit 1 when a manifest is behind
    /// the lock (for CI), 0 when all are pinned.
    Pin(PinArgs),
    /// Print the JSON Schema of kiln.toml.
    Schema,
}

/// Which factory, and which of its images.
#[derive(Debug, Args)]
pub struct FactoryFiles {
    /// A factory file, or a directory holding kiln.toml and *.kiln.toml;
    /// several are combined into one factory [default: .]
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Only these images (and the images they are built on) [default: all]
    pub images: Vec<String>,
    /// Treat every selected image as stale: rebuild it even if up to date
    #[arg(long)]
    pub force: bool,
    /// Rebuild every selected image for freshness: its package steps run
    /// again instead of coming from the cache (see `refresh` in kiln.toml);
    /// an image that comes out the same is not released again
    #[arg(long)]
    pub refresh: bool,
    /// Ask no registry: registry bases are taken at the digests kiln.lock
    /// holds (a base moved upstream is not noticed)
    #[arg(long)]
    pub offline: bool,
    /// Fail when something could not be checked (a package source that
    /// cannot be reached), instead of warning
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct BakeArgs {
    #[command(flatten)]
    pub factory: FactoryFiles,
    /// Show what would be built and stop
    #[arg(long)]
    pub dry_run: bool,
    /// Build and test, but publish nothing and leave kiln.lock as it is
    #[arg(long)]
    pub no_publish: bool,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
    /// Clamp timestamps for reproducible digests [default: $SOURCE_DATE_EPOCH]
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<u64>,
    /// Layer compression: gzip, zstd (both cores) or none
    #[arg(long, default_value = "gzip", value_name = "ALGO")]
    pub compression: String,
    /// Take unchanged steps from the step cache in this registry
    /// repository (repeatable), besides `[factory] cache`
    #[arg(long, value_name = "REPOSITORY")]
    pub cache_from: Vec<String>,
    /// Write each image's steps to this registry repository's cache,
    /// besides `[factory] cache`
    #[arg(long, value_name = "REPOSITORY")]
    pub cache_to: Option<String>,
    #[command(flatten)]
    pub runner: RunnerArgs,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this image's bakes [default: every image]
    pub image: Option<String>,
    /// Print the entries as JSON, with their input digests
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A factory directory (or file) to keep fresh; give it once per
    /// factory [default: .]
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Seconds between plans when no schedule is due
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub poll: u64,
    /// Where the dashboard and API listen (port 0: any free port), or `none`
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: String,
    /// A file holding the bearer token that API writes need
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// POST a JSON document to URL for each image published, rebuilt
    /// unchanged or failed (repeatable)
    #[arg(long, value_name = "URL")]
    pub webhook: Vec<String>,
    /// The same as a Slack-compatible message ({"text": ...}) (repeatable)
    #[arg(long, value_name = "URL")]
    pub slack_webhook: Vec<String>,
    /// Fetch each factory's git checkout and fast-forward it to its
    /// upstream before planning (a checkout that cannot be fast-forwarded
    /// is left alone)
    #[arg(long)]
    pub git: bool,
    /// Layer compression: gzip, zstd (both cores) or none
    #[arg(long, default_value = "gzip", value_name = "ALGO")]
    pub compression: String,
}

#[derive(Debug, Args)]
pub struct PinArgs {
    /// Kubernetes manifests (YAML, one or more documents each) or
    /// kustomization files
    #[arg(required = true, value_name = "MANIFEST")]
    pub manifests: Vec<PathBuf>,
    /// A factory file or directory [default: .]
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Change nothing; fail when a manifest is behind the lock
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// The service ([service.NAME] in kiln.toml)
    pub service: String,
    /// Deploy this version of its image (from the bake history) instead of
    /// the one kiln.lock pins
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// A factory file or directory [default: .]
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The service ([service.NAME] in kiln.toml)
    pub service: String,
    /// A factory file or directory [default: .]
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServicesArgs {
    /// A factory file or directory [default: .]
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Print them as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub factory: FactoryFiles,
    /// Print the plan as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write PREFIX.key (the private key, PKCS#8 PEM, mode 0600) and
    /// PREFIX.pub (the public key, PEM); an existing file is not replaced.
    Generate(KeyGenerateArgs),
}

#[derive(Debug, Args)]
pub struct KeyGenerateArgs {
    /// Where the files go: PREFIX.key and PREFIX.pub
    #[arg(
        short = 'o',
        long = "output",
        value_name = "PREFIX",
        default_value = "kiln"
    )]
    pub prefix: PathBuf,
}

#[derive(Debug, Args)]
pub struct SbomArgs {
    /// An image in the store (NAME:TAG or a digest), or a kept VM image
    pub image: String,
    /// spdx (SPDX 2.3 JSON) or cyclonedx (CycloneDX 1.5 JSON)
    #[arg(long, default_value = "spdx", value_name = "FORMAT")]
    pub format: String,
    /// The platform's image of a multi-platform image [default: this machine's]
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// An image in the store, a kept VM image, or a registry reference
    pub image: String,
    /// The public key (PEM) it must be signed with
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Attestations it must carry, comma-separated: sbom, provenance
    #[arg(long, value_delimiter = ',', value_name = "KINDS")]
    pub require: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Write a bootable disk from an image in the store: GPT, an EFI system
    /// partition with systemd-boot (or GRUB) and the image's kernel, an ext4
    /// root filled from the image's layers (no loop devices, no mounts).
    ///
    /// The image must contain a kernel and an initramfs (e.g. Debian's
    /// linux-image-cloud-amd64) and systemd. With --boot-test the disk is
    /// booted in QEMU (OVMF; KVM when it works, else software emulation;
    /// KILN_ACCEL=kvm|tcg decides) until a first-boot unit
    /// reports multi-user.target. Prints the raw disk's path.
    /// Exit status: 0 written (and booted), 1 the image or the boot failed,
    /// 2 bad command line.
    Build(Box<VmBuildArgs>),
    /// Boot a VM image for a person: QEMU with the serial console on this
    /// terminal (Ctrl-A X quits); the OS disk is not changed, data disks are.
    ///
    /// NAME is a `[vm.NAME]` a bake kept in the store (the newest version,
    /// or NAME:TAG / NAME:VERSION): its data disks are made once in the
    /// store (STORE/vms/NAME/data/LABEL.raw) and attached at every boot, so
    /// booting a newer version keeps their contents. The VM has QEMU's
    /// user-mode network (its DHCP address is 10.0.2.15); --ssh-port makes
    /// its SSH server reachable on this machine. The boot tests baked into
    /// the disk run only with --check.
    /// Exit status: 0 QEMU ended normally (--check: the VM booted), 1 it
    /// failed, 2 bad command line.
    Boot(VmBootArgs),
    /// Publish disk files (NAME.raw, .qcow2, .vmdk, .vhdx) to a registry as
    /// one OCI artifact (artifactType application/vnd.kiln.vm.v1, each file
    /// a layer of type application/vnd.kiln.vm.disk.v1.FORMAT). Prints the
    /// manifest digest.
    Push(VmPushArgs),
    /// Fetch the disk files of a VM artifact into a directory, each verified
    /// against its digest.
    Pull(VmPullArgs),
    /// List the VM images bakes kept in the store: name, version, tags,
    /// artifact digest, the image they were made from, space on disk.
    Ls(VmLsArgs),
    /// Remove kept VM image versions (NAME:VERSION or NAME:TAG) from the
    /// store, with the tags naming them; data disks stay.
    Rm(VmRmArgs),
}

#[derive(Debug, Args)]
pub struct VmLsArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VmRmArgs {
    /// NAME:VERSION or NAME:TAG
    #[arg(required = true)]
    pub versions: Vec<String>,
}

#[derive(Debug, Args)]
pub struct VmPushArgs {
    /// REGISTRY/REPOSITORY[:TAG]
    pub target: String,
    /// The disk files
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VmPullArgs {
    /// REGISTRY/REPOSITORY[:TAG|@DIGEST]
    pub reference: String,
    /// Where the files go
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct VmBuildArgs {
    /// The image in the store (NAME[:TAG])
    pub image: String,
    /// Where the disk files go
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: PathBuf,
    /// The VM image's name, for its files (NAME.raw, NAME.qcow2…) [default: the image's name]
    #[arg(long)]
    pub name: Option<String>,
    /// Disk size (K, M, G, T)
    #[arg(long, default_value = "2G")]
    pub size: String,
    /// A separate /var partition of this size, filled with the image's /var
    #[arg(long, value_name = "SIZE")]
    pub var: Option<String>,
    /// EFI bootloader: systemd-boot or grub
    #[arg(long, default_value = "systemd-boot")]
    pub bootloader: String,
    /// Output formats besides raw: qcow2, vmdk, vhdx (comma-separated)
    #[arg(long = "format", value_delimiter = ',', value_name = "FORMAT")]
    pub formats: Vec<String>,
    /// The VM's hostname [default: the name]
    #[arg(long)]
    pub hostname: Option<String>,
    /// Extra kernel command line
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// A data disk, apart from the OS disk: LABEL:SIZE:MOUNT (repeatable);
    /// mounted by label, created once in --data-dir, never part of the image
    #[arg(long = "data-disk", value_name = "LABEL:SIZE:MOUNT")]
    pub data_disks: Vec<String>,
    /// Where data disks live (LABEL.raw) [default: the output directory]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A login user made at bake time (locked password, key logins only)
    #[arg(long, value_name = "NAME", requires = "ssh_key")]
    pub user: Option<String>,
    /// The user's SSH public key file (one line of authorized_keys)
    #[arg(long, value_name = "FILE", requires = "user")]
    pub ssh_key: Option<PathBuf>,
    /// A shell command the booted VM runs under --boot-test; it must exit 0
    /// (repeatable)
    #[arg(long = "test", value_name = "CMD")]
    pub tests: Vec<String>,
    /// Boot the disk in QEMU (with its data disks) and wait for a full boot
    #[arg(long)]
    pub boot_test: bool,
    /// Seconds the boot test waits
    #[arg(long, default_value = "300")]
    pub timeout: u64,
    /// Clamp times and seed identifiers for identical disks [default: $SOURCE_DATE_EPOCH]
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<u64>,
}

#[derive(Debug, Args)]
pub struct VmBootArgs {
    /// A VM image a bake kept in the store, NAME[:TAG|:VERSION] (its data
    /// disks attached, made on first boot in the store), or a raw disk file
    pub vm: String,
    /// A data disk to attach (repeatable)
    #[arg(long = "data", value_name = "DISK")]
    pub data: Vec<PathBuf>,
    /// No console: boot headless until the VM reports a full boot (its data
    /// disks mounted, its boot tests passed), print that, and stop it
    #[arg(long)]
    pub check: bool,
    /// Seconds --check waits
    #[arg(long, default_value = "300", requires = "check")]
    pub timeout: u64,
    /// Forward this port of 127.0.0.1 to the VM's SSH server (the VM gets
    /// its address by DHCP from QEMU's user-mode network)
    #[arg(long, value_name = "PORT", conflicts_with = "check")]
    pub ssh_port: Option<u16>,
}

#[derive(Debug, Subcommand)]
pub enum DockerfileCommand {
    /// Read a Dockerfile as BuildKit would and show its evaluated build graph.
    ///
    /// Prints the stages, their dependencies, the order a build runs them in
    /// and every instruction with its variables expanded; or, for a Dockerfile
    /// BuildKit rejects, the error with file, line, column and a hint. Also
    /// checks the context's .dockerignore (or <Dockerfile>.dockerignore).
    /// Exit status: 0 valid, 1 invalid, 2 bad command line.
    Check(CheckArgs),
}

/// The flags `kiln build` and `kiln dockerfile check` share.
#[derive(Debug, Args)]
pub struct DockerfileArgs {
    /// The Dockerfile [default: CONTEXT/Dockerfile]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Set a build argument (KEY=VALUE, or KEY to take it from the environment)
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Build up to this stage; stages it does not need are skipped
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub dockerfile: DockerfileArgs,
    /// Target platform, such as linux/amd64 or linux/arm64 [default: the host's]
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Print the result (graph or error) as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// The build context directory
    #[arg(default_value = ".", value_name = "CONTEXT")]
    pub context: PathBuf,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name the image NAME[:TAG] (repeatable)
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    #[command(flatten)]
    pub dockerfile: DockerfileArgs,
    /// Expose a secret to RUN --mount=type=secret: id=ID,src=PATH
    #[arg(long = "secret", value_name = "id=ID,src=PATH")]
    pub secrets: Vec<String>,
    /// Run every step, ignoring the cache
    #[arg(long)]
    pub no_cache: bool,
    /// Also write the image: type=oci,dest=FILE | type=docker,dest=FILE |
    /// type=oci-layout,dest=DIR | type=local,dest=DIR
    #[arg(long = "output", short = 'o', value_name = "type=TYPE,dest=PATH")]
    pub outputs: Vec<String>,
    /// Clamp timestamps for reproducible digests [default: $SOURCE_DATE_EPOCH]
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<u64>,
    /// Layer compression: gzip, zstd (both cores) or none
    #[arg(long, default_value = "gzip", value_name = "ALGO")]
    pub compression: String,
    /// Push every -t name that names a registry once built
    #[arg(long)]
    pub push: bool,
    /// Write the image's manifest digest to this file
    #[arg(long, value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
    /// Build for these platforms (os/arch[/variant], comma-separated or
    /// repeated); several give one image each, combined into an image index
    /// [default: this machine's]
    #[arg(long = "platform", value_name = "PLATFORM[,…]", value_delimiter = ',')]
    pub platforms: Vec<String>,
    /// The build context directory
    #[arg(default_value = ".", value_name = "CONTEXT")]
    pub context: PathBuf,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// REGISTRY/REPOSITORY[:TAG|@DIGEST]
    pub reference: String,
    /// The platform to take from a multi-platform image [default: the host's]
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image in the store
    pub image: String,
    /// Where to push (REGISTRY/REPOSITORY[:TAG]); several push the same image
    /// under each [default: the image's name]
    pub targets: Vec<String>,
    /// Write the pushed manifest digest to this file
    #[arg(long, value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
    /// Manifest media types: oci, or docker (v2 schema 2) for old registries
    #[arg(long, default_value = "oci")]
    pub format: String,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry, such as registry.example.com or localhost:5000
    pub registry: String,
    #[arg(short, long)]
    pub username: String,
    /// Read the password from standard input (it is never taken as an argument)
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The image (NAME[:TAG] or sha256:DIGEST)
    pub image: String,
    /// Which image of a multi-platform image [default: this machine's];
    /// another architecture runs under QEMU (binfmt_misc)
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Run with no network
    #[arg(long = "network", value_name = "MODE", default_value = "host")]
    pub network: String,
    /// The command, replacing the image's CMD
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    pub image: String,
    /// Show this platform's image of a multi-platform image [default: the
    /// index and every image in it]
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Hash the content of every snapshot's files too (reads them all),
    /// and check the snapshots of layers with no blob yet against their diff IDs
    #[arg(long)]
    pub full: bool,
    /// Remove broken snapshots, to be unpacked again from their layers
    #[arg(long)]
    pub repair: bool,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    pub image: String,
    /// oci or docker (loadable by `docker load`)
    #[arg(long, default_value = "oci")]
    pub format: String,
    /// The archive to write
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Save only this platform's image of a multi-platform image [default:
    /// all of it for oci; a docker archive holds one platform]
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}
