//! `kiln serve`: the service of kiln-service, with its lines on stderr.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kiln_registry::Client;
use kiln_service::notify::{Format, Hook};
use kiln_service::serve::{serve, Config};
use kiln_store::Store;
use signal_hook::consts::{SIGINT, SIGTERM};

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
    let factories = super::factory::factory_paths(&args.files);
    let mut hooks: Vec<Hook> = args
        .webhook
        .iter()
        .map(|u| hook(u, Format::Json))
        .collect::<Result<_, _>>()?;
    for u in &args.slack_webhook {
        hooks.push(hook(u, Format::Slack)?);
    }
    let cfg = Config {
        factories: factories
            .iter()
            .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
            .collect(),
        poll: Duration::from_secs(args.poll.max(1)),
        kiln_exe: std::env::current_exe().context("finding the kiln binary")?,
        compression: build::compression(&args.compression)?,
        listen: listen(&args.listen)?,
        token: args.token_file.as_deref().map(token).transpose()?,
        hooks,
        git: args.git,
    };
    // the first SIGTERM or Ctrl-C stops the service cleanly, a second one
    // at once
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, stop.clone())
            .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
            .context("handling signals")?;
    }
    let log = |l: &str| printer.error(l);
    let result = serve(cfg, store, client, stop, &log);
    kiln_store::remove_temps_of(&store.tmp_dir(), std::process::id());
    result.map_err(|e| Failure::failed(e.to_string()))?;
    Ok(Exit::Success)
}

fn listen(addr: &str) -> anyhow::Result<Option<SocketAddr>> {
    if addr == "none" {
        return Ok(None);
    }
    addr.parse().map(Some).map_err(|_| {
        Failure::usage(format!(
            "--listen {addr:?}: expected an address and port such as 127.0.0.1:8080, or none"
        ))
    })
}

fn hook(url: &str, format: Format) -> anyhow::Result<Hook> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Failure::usage(format!(
            "webhook {}: expected an http:// or https:// URL",
            kiln_service::notify::redact(url)
        )));
    }
    Ok(Hook {
        url: url.to_string(),
        format,
    })
}

fn token(file: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the token file {}", file.display()))?;
    let t = text.trim();
    if t.is_empty() || t.contains(char::is_whitespace) {
        return Err(Failure::usage(format!(
            "{}: expected one token on one line",
            file.display()
        )));
    }
    Ok(t.to_string())
}
