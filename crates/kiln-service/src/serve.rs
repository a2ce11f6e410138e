//! The service loop: plan every factory, queue what is stale, bake the
//! queued jobs one factory at a time with exactly the code `kiln bake`
//! uses, then sleep until the next schedule tick or poll — and on start,
//! run again what a killed service left running.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_build::Compression;
use kiln_definition::Factory;
use kiln_factory::bake::{self, BakeLog, BakeOptions};
use kiln_factory::graph::Graph;
use kiln_factory::history::History;
use kiln_factory::plan::{self, Locks, PlanOptions};
use kiln_factory::probe::Probing;
use kiln_registry::Client;
use kiln_store::Store;

use crate::queue::{Job, Queue, QueueError, State};

/// What `kiln serve` was asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    /// The factory directories (or files) it keeps fresh.
    pub factories: Vec<PathBuf>,
    /// How often it plans even when no schedule is due (registry bases,
    /// package updates, changed files).
    pub poll: Duration,
    pub kiln_exe: PathBuf,
    pub compression: Compression,
}

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    History(#[from] kiln_factory::history::HistoryError),
}

/// What the service says: one line at a time.
pub type Log<'a> = &'a (dyn Fn(&str) + Sync);

/// Runs until `stop` is set.
pub fn serve(
    cfg: &Config,
    store: &Store,
    client: &Client,
    stop: &AtomicBool,
    log: Log<'_>,
) -> Result<(), ServiceError> {
    let queue = Queue::open(&store.root().join("service.db"))?;
    let history = History::open(&store.root().join("history.db"))?;
    for j in queue.recover(Utc::now())? {
        log(&format!(
            "job {} ({}) was interrupted when the service stopped: {}",
            j.id,
            j.factory,
            if queue.get(j.id)?.is_some_and(|j| j.state == State::Failed) {
                "failed twice, not run again"
            } else {
                "it runs again"
            }
        ));
    }
    log(&format!(
        "serving {} factor{}; planning every {} s and at each schedule tick",
        cfg.factories.len(),
        if cfg.factories.len() == 1 { "y" } else { "ies" },
        cfg.poll.as_secs()
    ));
    while !stop.load(Ordering::Relaxed) {
        let mut wake = Utc::now() + chrono::Duration::from_std(cfg.poll).unwrap_or_default();
        for dir in &cfg.factories {
            match plan_and_queue(dir, store, client, &queue, &history, log) {
                Ok(next) => wake = next.map_or(wake, |n| n.min(wake)),
                Err(e) => log(&format!("{}: {e}", dir.display())),
            }
        }
        while let Some(job) = queue.claim(Utc::now())? {
            let result = run(cfg, &job, store, client, &history, log);
            let state = queue.finish(job.id, result.clone(), Utc::now())?;
            log(&format!(
                "job {} ({}): {}",
                job.id,
                job.factory,
                match (&result, state) {
                    (Ok(()), _) => "done".to_string(),
                    (Err(e), State::Failed) =>
                        format!("failed twice, not retried until something changes: {e}"),
                    (Err(e), _) => format!("failed, it runs once more: {e}"),
                }
            ));
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
        }
        sleep_until(wake, stop);
    }
    Ok(())
}

/// Sleeps until `when`, waking early when `stop` is set.
fn sleep_until(when: DateTime<Utc>, stop: &AtomicBool) {
    while Utc::now() < when && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn open(dir: &Path) -> Result<(Factory, Graph, Locks), String> {
    kiln_factory::open(&[dir.to_path_buf()]).map_err(|e| e.to_string())
}

fn plan_options(
    factory: &Factory,
    locks: &Locks,
    history: &History,
    store: &Store,
    selected: &[String],
) -> Result<PlanOptions, String> {
    PlanOptions::now(selected, factory, locks, history, store.root()).map_err(|e| e.to_string())
}

/// Plans one factory and queues a bake when something is stale; returns
/// its next schedule tick.
fn plan_and_queue(
    dir: &Path,
    store: &Store,
    client: &Client,
    queue: &Queue,
    history: &History,
    log: Log<'_>,
) -> Result<Option<DateTime<Utc>>, String> {
    let (factory, g, locks) = open(dir)?;
    let opts = plan_options(&factory, &locks, history, store, &[])?;
    let resolver = Probing::new(store, client);
    let planned = plan::plan(&factory, &g, &locks, &resolver, &opts).map_err(|e| e.to_string())?;
    let stale: Vec<(&str, String)> = planned
        .images
        .iter()
        .filter(|i| i.stale)
        .map(|i| (i.name.as_str(), plan::describe(&i.reasons)))
        .collect();
    if !stale.is_empty() {
        // what it would bake: the same reasons are the same job
        let key = serde_json::to_string(&stale).unwrap_or_default();
        let key = kiln_oci::digest::sha256(key.as_bytes()).to_string();
        let reason = stale
            .iter()
            .map(|(n, why)| format!("{n}: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        let factory_id = dir.display().to_string();
        if let Some(id) = queue
            .enqueue(&factory_id, &[], &reason, &key, Utc::now())
            .map_err(|e| e.to_string())?
        {
            log(&format!("queued job {id} for {factory_id}: {reason}"));
        }
    }
    Ok(next_tick(&factory, &locks, &opts))
}

/// The earliest schedule tick of the factory's images after their last
/// bake or check.
fn next_tick(factory: &Factory, locks: &Locks, opts: &PlanOptions) -> Option<DateTime<Utc>> {
    factory
        .images
        .iter()
        .filter_map(|(name, image)| {
            let schedule = image.schedule.as_ref()?;
            let baked = DateTime::parse_from_rfc3339(&locks.get(name)?.baked_at).ok()?;
            let mut last = baked.with_timezone(&Utc);
            if let Some(c) = opts.checked.get(name) {
                last = last.max(*c);
            }
            schedule.next_after(last)
        })
        .min()
}

/// Bakes a job's factory as `kiln bake` does; a failed image fails the job.
fn run(
    cfg: &Config,
    job: &Job,
    store: &Store,
    client: &Client,
    history: &History,
    log: Log<'_>,
) -> Result<(), String> {
    log(&format!(
        "job {} ({}): baking, attempt {}",
        job.id, job.factory, job.attempts
    ));
    let (factory, g, mut locks) = open(Path::new(&job.factory))?;
    let opts = BakeOptions {
        plan: plan_options(&factory, &locks, history, store, &job.images)?,
        dry_run: false,
        no_publish: false,
        kiln_exe: cfg.kiln_exe.clone(),
        compression: cfg.compression,
        source_date_epoch: None,
    };
    let lines = |image: &str, text: &str| {
        if image.is_empty() {
            log(text)
        } else {
            log(&format!("[{image}] {text}"))
        }
    };
    let summary = bake::bake(
        &factory,
        &g,
        &mut locks,
        store,
        client,
        &Probing::new(store, client),
        &opts,
        Some(history),
        &lines as &dyn BakeLog,
    )
    .map_err(|e| e.to_string())?;
    let failed: Vec<String> = summary
        .images
        .iter()
        .filter(|i| !i.outcome.ok())
        .map(|i| i.name.clone())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} did not bake", failed.join(", ")))
    }
}
