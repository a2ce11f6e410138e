//! `kiln pull`, `kiln push`, `kiln login`.

use std::io::Read;

use anyhow::Context as _;
use kiln_dockerfile::Platform;
use kiln_factory::transfer;
use kiln_registry::{Client, ClientOptions, Credentials, Reference, Secret};
use kiln_store::Store;

use crate::args::{LoginArgs, PullArgs, PushArgs};
use crate::exit::{Exit, Failure};
use crate::printer::Printer;

pub fn client(insecure: &[String], ca_certs: &[std::path::PathBuf]) -> anyhow::Result<Client> {
    let opts = ClientOptions {
        insecure_registries: insecure.to_vec(),
        ca_certs: ca_certs.to_vec(),
        ..ClientOptions::new()
    };
    Client::new(opts).map_err(|e| Failure::usage(e.to_string()))
}

pub fn pull(
    args: PullArgs,
    store: &Store,
    client: &Client,
    printer: &Printer,
) -> anyhow::Result<Exit> {
    let r = Reference::parse(&args.reference).map_err(|e| Failure::usage(e.to_string()))?;
    let platform = match &args.platform {
        Some(p) => Platform::parse(p).map_err(|e| Failure::usage(format!("--platform: {e}")))?,
        None => Platform::host(),
    };
    let log = |l: &str| printer.error(l);
    let pulled = transfer::pull(client, store, &r, &platform, &log)
        .map_err(|e| Failure::failed(format!("pulling {r}: {e}")))?;
    let image = if pulled.manifest == pulled.digest {
        String::new()
    } else {
        format!("its {platform} image {}, ", pulled.manifest)
    };
    printer.error(&format!(
        "pulled {} as {} ({image}{} blobs fetched)",
        pulled.digest, pulled.name, pulled.blobs_fetched
    ));
    printer.data(&pulled.digest);
    Ok(Exit::Success)
}

/// Pushes `image` to each target (the first with its tag, the rest too).
pub fn push_image(
    store: &Store,
    client: &Client,
    printer: &Printer,
    image: &str,
    targets: &[String],
    docker_media_types: bool,
) -> anyhow::Result<String> {
    let targets: Vec<Reference> = if targets.is_empty() {
        vec![image.to_string()]
    } else {
        targets.to_vec()
    }
    .iter()
    .map(|t| Reference::parse(t).map_err(|e| Failure::usage(e.to_string())))
    .collect::<anyhow::Result<_>>()?;
    let log = |l: &str| printer.error(l);
    let mut digest = String::new();
    for t in &targets {
        let pushed = transfer::push(client, store, image, t, &[], docker_media_types, &log)
            .map_err(|e| Failure::failed(format!("pushing {image} to {t}: {e}")))?;
        printer.error(&format!(
            "{t}: {} uploaded, {} mounted, {} already there",
            pushed.uploaded, pushed.mounted, pushed.skipped
        ));
        digest = pushed.digest;
    }
    Ok(digest)
}

pub fn push(
    args: PushArgs,
    store: &Store,
    client: &Client,
    printer: &Printer,
) -> anyhow::Result<Exit> {
    let docker = match args.format.as_str() {
        "oci" => false,
        "docker" => true,
        other => {
            return Err(Failure::usage(format!(
                "--format {other:?}: use oci or docker"
            )))
        }
    };
    let digest = push_image(store, client, printer, &args.image, &args.targets, docker)?;
    if let Some(f) = &args.digest_file {
        std::fs::write(f, format!("{digest}\n"))
            .with_context(|| format!("writing {}", f.display()))?;
    }
    printer.data(&digest);
    Ok(Exit::Success)
}

pub fn login(args: LoginArgs, client: &Client, printer: &Printer) -> anyhow::Result<Exit> {
    if !args.password_stdin {
        return Err(Failure::usage(
            "give the password on standard input with --password-stdin",
        ));
    }
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("reading the password")?;
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    let creds = Credentials {
        username: args.username.clone(),
        password: Secret::new(password),
    };
    // check them against the registry first and save them only when it
    // accepts them, as docker login does
    let probe = Reference::parse(&format!("{}/kiln-login-check", args.registry))
        .map_err(|e| Failure::usage(e.to_string()))?;
    client.use_credentials(&probe.registry, creds.clone());
    if let Err(e) = client.ping(&probe) {
        return Err(Failure::failed(format!(
            "{} did not accept these credentials ({e}); nothing was saved",
            args.registry
        )));
    }
    let path = kiln_registry::auth::store(&args.registry, &creds)
        .map_err(|e| Failure::failed(format!("saving the credentials: {e}")))?;
    printer.error(&format!(
        "login succeeded; credentials saved in {}",
        path.display()
    ));
    Ok(Exit::Success)
}
