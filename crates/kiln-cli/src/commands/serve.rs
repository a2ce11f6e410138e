//! `kiln serve`: the service loop of kiln-service, with its lines on stderr.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use kiln_registry::Client;
use kiln_service::serve::{serve, Config};
use kiln_store::Store;

use super::build;
use crate::args::ServeArgs;
use crate::exit::{Exit, Failure};
use crate::printer::Printer;

pub fn run(
    args: ServeArgs,
    store: &Store,
    client: &Client,
    printer: &Printer,
) -> anyhow::Result<Exit> {
    let factories = if args.files.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.files.clone()
    };
    let cfg = Config {
        factories: factories
            .iter()
            .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
            .collect(),
        poll: Duration::from_secs(args.poll.max(1)),
        kiln_exe: std::env::current_exe().context("finding the kiln binary")?,
        compression: build::compression(&args.compression)?,
    };
    // SIGTERM and Ctrl-C end kiln as for every command; the queue runs
    // what was interrupted when kiln serve starts again
    let stop = AtomicBool::new(false);
    let log = |l: &str| printer.error(l);
    serve(&cfg, store, client, &stop, &log).map_err(|e| Failure::failed(e.to_string()))?;
    Ok(Exit::Success)
}
