//! One module per command.

mod dockerfile_check;

use crate::args::{Cli, Command, DockerfileCommand};
use crate::exit::Exit;
use crate::printer::Printer;

pub fn run(cli: Cli, printer: &Printer) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Dockerfile(DockerfileCommand::Check(args)) => dockerfile_check::run(args, printer),
    }
}
