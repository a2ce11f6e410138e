//! One module per command.

mod build;
mod ci;
mod dockerfile_check;
mod factory;
mod registry;
mod rollout;
mod serve;
pub mod store_cmds;
pub mod trust;
mod vm;

use anyhow::Context as _;

use crate::args::{CiCommand, Cli, Command, DockerfileCommand, KeyCommand, LockCommand, VmCommand};
use crate::exit::Exit;
use crate::printer::Printer;

pub fn run(cli: Cli, printer: &Printer) -> anyhow::Result<Exit> {
    let store_dir = cli.store.clone().unwrap_or_else(kiln_store::default_root);
    // kiln serve handles its signals itself (it stops cleanly)
    let own_signals = matches!(cli.command, Command::Serve(_));
    let open = || {
        kiln_store::Store::open(&store_dir)
            .map(|s| {
                if !own_signals {
                    crate::interrupt::clean_up_on_signal(s.tmp_dir());
                }
                s.with_wait_notice(Printer::to_stderr)
            })
            .with_context(|| format!("opening the store {}", store_dir.display()))
    };
    let client = || registry::client(&cli.insecure_registries, &cli.ca_certs);
    match cli.command {
        Command::Dockerfile(DockerfileCommand::Check(args)) => dockerfile_check::run(args, printer),
        Command::Build(args) => build::run(args, &open()?, &client()?, printer),
        Command::Run(args) => store_cmds::run(args, &open()?, printer),
        Command::Images(args) => store_cmds::images(args, &open()?, printer),
        Command::Inspect(args) => store_cmds::inspect(args, &open()?, printer),
        Command::Rmi(args) => store_cmds::rmi(args, &open()?, printer),
        Command::Fsck(args) => store_cmds::fsck(args, &open()?, printer),
        Command::Prune => store_cmds::prune(&open()?, printer),
        Command::Save(args) => store_cmds::save(args, &open()?, printer),
        Command::Pull(args) => registry::pull(args, &open()?, &client()?, printer),
        Command::Push(args) => registry::push(args, &open()?, &client()?, printer),
        Command::Plan(args) => factory::plan(args, &open()?, &client()?, printer),
        Command::Bake(args) => factory::bake(args, &open()?, &client()?, printer),
        Command::History(args) => factory::history(args, &open()?, printer),
        Command::Serve(args) => serve::run(args, &open()?, &client()?, printer),
        Command::Pin(args) => rollout::pin(args, printer),
        Command::Rollout(args) => rollout::rollout(args, &open()?, printer),
        Command::Rollback(args) => rollout::rollback(args, &open()?, printer),
        Command::Services(args) => rollout::services(args, &open()?, printer),
        Command::Key(KeyCommand::Generate(args)) => trust::key_generate(args, printer),
        Command::Sbom(args) => trust::sbom(args, &open()?, printer),
        Command::Verify(args) => trust::verify(args, &open()?, &client()?, printer),
        Command::Schema => {
            printer.data(kiln_definition::schema().trim_end());
            Ok(Exit::Success)
        }
        Command::Login(args) => registry::login(args, &client()?, printer),
        Command::Vm(VmCommand::Build(args)) => vm::build(*args, &open()?, printer),
        Command::Vm(VmCommand::Boot(args)) => vm::boot(args, &open()?, printer),
        Command::Vm(VmCommand::Push(args)) => vm::push(args, &client()?, printer),
        Command::Vm(VmCommand::Pull(args)) => vm::pull(args, &client()?, printer),
        Command::Vm(VmCommand::Ls(args)) => vm::ls(args, &open()?, printer),
        Command::Vm(VmCommand::Rm(args)) => vm::rm(args, &open()?, printer),
        Command::Ci(CiCommand::Github(args)) => ci::github(args, printer),
        Command::Ci(CiCommand::Index(args)) => ci::index(args, &client()?, printer),
        Command::Lock(LockCommand::Merge(args)) => ci::lock_merge(args, printer),
    }
}

/// `-f FILE`, or `CONTEXT/Dockerfile`, shown without a leading `./`; a
/// missing file is a usage error.
fn dockerfile_path(
    file: Option<std::path::PathBuf>,
    context: &std::path::Path,
) -> anyhow::Result<std::path::PathBuf> {
    let path = file.unwrap_or_else(|| context.join("Dockerfile"));
    let path = path
        .strip_prefix("./")
        .map(std::path::Path::to_path_buf)
        .unwrap_or(path);
    if !path.is_file() {
        return Err(crate::exit::Failure::usage(format!(
            "{}: no such Dockerfile",
            path.display()
        )));
    }
    Ok(path)
}

/// A `--platform` value; a bad one is a usage error.
fn platform(flag: Option<&str>) -> anyhow::Result<Option<kiln_dockerfile::Platform>> {
    flag.map(|p| {
        kiln_dockerfile::Platform::parse(p)
            .map_err(|e| crate::exit::Failure::usage(format!("--platform: {e}")))
    })
    .transpose()
}

/// The store image `name` for `--platform` (this machine's when not given).
fn image_for(
    store: &kiln_store::Store,
    name: &str,
    flag: Option<&str>,
) -> anyhow::Result<kiln_store::Image> {
    let p = platform(flag)?.unwrap_or_else(kiln_dockerfile::Platform::host);
    Ok(store.image_for(name, &kiln_build::oci_platform(&p))?)
}
