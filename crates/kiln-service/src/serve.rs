//! The service: one worker thread per factory plans it, queues what is
//! stale and bakes the queued jobs with exactly the code `kiln bake` uses
//! (one bake per factory at a time), then sleeps until the next schedule
//! tick, poll or request; a delivery thread sends webhooks; the HTTP
//! server ([`crate::http`]) reads the board and queues requests. On start
//! the job a killed service left running is run once more; on stop
//! (SIGTERM) no job starts, a running bake ends after its current step
//! (or finishes publishing) and goes back to the queue.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kiln_build::Compression;
use kiln_definition::Factory;
use kiln_factory::bake::{self, BakeLog, BakeOptions};
use kiln_factory::baked::{Outcome, Summary};
use kiln_factory::graph::Graph;
use kiln_factory::history::History;
use kiln_factory::plan::{self, Locks, PlanOptions};
use kiln_factory::probe::Probing;
use kiln_registry::Client;
use kiln_store::Store;

use crate::board::Board;
use crate::metrics::Metrics;
use crate::notify::{self, Hook};
use crate::queue::{Job, Queue, QueueError, State};
use crate::view;

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
    /// Where the HTTP API and dashboard listen, if anywhere.
    pub listen: Option<SocketAddr>,
    /// The bearer token write requests need (none: nothing is writable).
    pub token: Option<String>,
    /// Webhooks told of each published, unchanged or failed image.
    pub hooks: Vec<Hook>,
    /// Fetch and fast-forward each factory's git checkout before planning.
    pub git: bool,
}

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    History(#[from] kiln_factory::history::HistoryError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP server: {0}")]
    Http(std::io::Error),
}

/// What the service says: one line at a time.
pub type Log<'a> = &'a (dyn Fn(&str) + Sync);

/// What the workers and the HTTP server share.
pub struct Service {
    pub cfg: Config,
    pub queue: Queue,
    pub history: History,
    pub board: Board,
    pub metrics: Metrics,
    /// Set on SIGTERM: no job starts, a running bake is cancelled cleanly.
    pub stop: Arc<AtomicBool>,
}

impl Service {
    /// Opens the service's databases in `store`.
    pub fn open(
        cfg: Config,
        store: &Store,
        stop: Arc<AtomicBool>,
    ) -> Result<Service, ServiceError> {
        Ok(Service {
            queue: Queue::open(&store.root().join("service.db"))?,
            history: History::open(&store.root().join("history.db"))?,
            board: Board::new(&cfg.factories),
            metrics: Metrics::new(),
            cfg,
            stop,
        })
    }

    /// The directory of factory `i`.
    pub fn factory_dir(&self, i: usize) -> &Path {
        &self.cfg.factories[i]
    }
}

/// Runs until `stop` is set.
pub fn serve(
    cfg: Config,
    store: &Store,
    client: &Client,
    stop: Arc<AtomicBool>,
    log: Log<'_>,
) -> Result<(), ServiceError> {
    let listener = match cfg.listen {
        Some(addr) => {
            Some(TcpListener::bind(addr).map_err(|source| ServiceError::Listen { addr, source })?)
        }
        None => None,
    };
    let svc = Arc::new(Service::open(cfg, store, stop)?);
    recover(&svc, log)?;
    log(&format!(
        "serving {} factor{}; planning every {} s and at each schedule tick",
        svc.cfg.factories.len(),
        if svc.cfg.factories.len() == 1 {
            "y"
        } else {
            "ies"
        },
        svc.cfg.poll.as_secs()
    ));
    std::thread::scope(|s| -> Result<(), ServiceError> {
        let workers: Vec<_> = (0..svc.cfg.factories.len())
            .map(|i| {
                let svc = &svc;
                s.spawn(move || {
                    let r = worker(svc, store, client, i, log);
                    if r.is_err() {
                        // the service cannot go on without its database
                        svc.stop.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        s.spawn(|| deliverer(&svc, log));
        let server = match listener {
            Some(l) => {
                let addr = l.local_addr().map_err(ServiceError::Http)?;
                log(&format!("dashboard and API on http://{addr}/"));
                let svc = svc.clone();
                Some(s.spawn(move || crate::http::run(svc, l)))
            }
            None => None,
        };
        for w in workers {
            w.join().expect("worker")?;
        }
        if let Some(server) = server {
            server.join().expect("server").map_err(ServiceError::Http)?;
        }
        Ok(())
    })?;
    log("stopped");
    Ok(())
}

fn recover(svc: &Service, log: Log<'_>) -> Result<(), ServiceError> {
    for j in svc.queue.recover(Utc::now())? {
        log(&format!(
            "job {} ({}) was interrupted when the service stopped: {}",
            j.id,
            j.factory,
            if svc
                .queue
                .get(j.id)?
                .is_some_and(|j| j.state == State::Failed)
            {
                "failed twice, not run again"
            } else {
                "it runs again"
            }
        ));
    }
    Ok(())
}

/// Keeps factory `i` fresh until the service stops.
fn worker(
    svc: &Service,
    store: &Store,
    client: &Client,
    i: usize,
    log: Log<'_>,
) -> Result<(), ServiceError> {
    let dir = svc.factory_dir(i).to_path_buf();
    let factory_id = dir.display().to_string();
    let stop = &svc.stop;
    // a git failure is said once, not at every poll, until it changes
    let mut git_error = None;
    while !stop.load(Ordering::Relaxed) {
        if svc.cfg.git {
            match crate::git::update(&dir) {
                Ok(commit) => {
                    if let Some(commit) = commit {
                        log(&format!("{factory_id}: fast-forwarded to {commit}"));
                    }
                    git_error = None;
                }
                Err(e) if git_error.as_ref() != Some(&e) => {
                    log(&format!("{factory_id}: git: {e}"));
                    git_error = Some(e);
                }
                Err(_) => {}
            }
        }
        let mut wake = Utc::now() + chrono::Duration::from_std(svc.cfg.poll).unwrap_or_default();
        match plan_and_queue(svc, i, store, client, log) {
            Ok(next) => wake = next.map_or(wake, |n| n.min(wake)),
            Err(e) => {
                log(&format!("{factory_id}: {e}"));
                svc.board.failed_plan(i, e);
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(job) = svc.queue.claim(Some(&factory_id), Utc::now())? {
            run_job(svc, store, client, i, &job, log)?;
            continue; // plan again: the board shows what the bake left
        }
        svc.board.sleep(i, wake, stop);
    }
    Ok(())
}

/// Sends due webhooks until the service stops (what is left is sent when
/// it starts again).
fn deliverer(svc: &Service, log: Log<'_>) {
    while !svc.stop.load(Ordering::Relaxed) {
        if let Err(e) = notify::deliver_due(&svc.queue, Utc::now(), &log) {
            log(&format!("webhooks: {e}"));
        }
        for _ in 0..5 {
            if svc.stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn open(dir: &Path) -> Result<(Factory, Graph, Locks), String> {
    kiln_factory::open(&[dir.to_path_buf()]).map_err(|e| e.to_string())
}

/// Plans factory `i`, shows the plan on the board and queues a bake when
/// something is stale; returns its next schedule tick.
fn plan_and_queue(
    svc: &Service,
    i: usize,
    store: &Store,
    client: &Client,
    log: Log<'_>,
) -> Result<Option<DateTime<Utc>>, String> {
    let clock = Instant::now();
    let dir = svc.factory_dir(i);
    let (factory, g, locks) = open(dir)?;
    let opts = PlanOptions::now(&[], &factory, &locks, &svc.history, store.root())
        .map_err(|e| e.to_string())?;
    let resolver = Probing::new(store, client);
    let planned = plan::plan(&factory, &g, &locks, &resolver, &opts).map_err(|e| e.to_string())?;
    let seconds = clock.elapsed().as_secs_f64();
    let sources = view::Sources {
        factory: &factory,
        plan: &planned,
        locks: &locks,
        opts: &opts,
        history: &svc.history,
        store,
    };
    let v = view::build(
        &svc.board.id(i),
        &dir.display().to_string(),
        &sources,
        seconds,
    );
    let next = v.next_tick;
    svc.board.planned(i, v);
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
        if let Some(id) = svc
            .queue
            .enqueue(&factory_id, &[], &reason, &key, Utc::now())
            .map_err(|e| e.to_string())?
        {
            log(&format!("queued job {id} for {factory_id}: {reason}"));
        }
    }
    Ok(next)
}

/// Runs a claimed job of factory `i` and records how it ended.
fn run_job(
    svc: &Service,
    store: &Store,
    client: &Client,
    i: usize,
    job: &Job,
    log: Log<'_>,
) -> Result<(), ServiceError> {
    svc.board.started(i, job.id);
    let say = |text: &str| {
        svc.board.line(job.id, text);
        log(text);
    };
    say(&format!(
        "job {} ({}): baking, attempt {}",
        job.id, job.factory, job.attempts
    ));
    let result = bake_job(svc, store, client, job, &say);
    // a failure while the service stops is taken as caused by the stop
    // (Ctrl-C reaches the step processes too): the job is not charged
    let stopping = svc.stop.load(Ordering::Relaxed);
    let cancelled = result.as_ref().is_ok_and(|s| {
        s.images
            .iter()
            .any(|r| r.outcome == Outcome::Cancelled || (stopping && !r.outcome.ok()))
    });
    if let Ok(summary) = &result {
        report(svc, i, job, summary, cancelled, &say)?;
        if !cancelled {
            auto_rollouts(svc, store, job, summary, &say);
        }
    }
    let outcome = result.and_then(|s| {
        let failed: Vec<String> = s
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
    });
    let said = if cancelled {
        svc.queue.requeue(job.id)?;
        "cancelled cleanly, it runs when the service starts again".to_string()
    } else {
        match (
            &outcome,
            svc.queue.finish(job.id, outcome.clone(), Utc::now())?,
        ) {
            (Ok(()), _) => "done".to_string(),
            (Err(e), State::Failed) => {
                format!("failed twice, not retried until something changes: {e}")
            }
            (Err(e), _) => format!("failed, it runs once more: {e}"),
        }
    };
    say(&format!("job {} ({}): {said}", job.id, job.factory));
    let text = svc.board.ended(i, job.id);
    svc.queue.set_log(job.id, &text)?;
    Ok(())
}

/// Counts a job's images in the metrics and queues their webhooks (what
/// a stop cut short is not news: the job runs again).
fn report(
    svc: &Service,
    i: usize,
    job: &Job,
    summary: &Summary,
    cancelled: bool,
    say: &dyn Fn(&str),
) -> Result<(), ServiceError> {
    let factory = svc.board.id(i);
    svc.metrics.baked(&factory, &summary.images);
    let news: Vec<_> = summary
        .images
        .iter()
        .filter(|r| !cancelled || r.outcome.ok())
        .cloned()
        .collect();
    let n = notify::queue_outcomes(
        &svc.queue,
        &svc.cfg.hooks,
        job.id,
        &factory,
        &news,
        Utc::now(),
    )?;
    if n > 0 {
        say(&format!(
            "{n} webhook deliver{} queued",
            if n == 1 { "y" } else { "ies" }
        ));
    }
    Ok(())
}

/// Rolls out the factory's services with `auto = true` whose image the
/// job published, as `kiln bake` does (a failed rollout is said; blue
/// stays live and the job counts as done: the images were published).
fn auto_rollouts(svc: &Service, store: &Store, job: &Job, summary: &Summary, say: &dyn Fn(&str)) {
    if !summary.images.iter().any(|r| r.outcome == Outcome::Built) {
        return;
    }
    let Ok((factory, _, locks)) = open(Path::new(&job.factory)) else {
        return;
    };
    let d = kiln_rollout::deploy::Deploy {
        factory: &factory,
        locks: &locks,
        history: &svc.history,
        store_root: store.root(),
        say,
    };
    for (name, r) in d.auto(summary) {
        match r {
            Ok(kiln_rollout::rollout::Report::Switched { live, .. }) => {
                say(&format!("{name}: {} is live", live.version));
            }
            Ok(kiln_rollout::rollout::Report::AlreadyLive(live)) => {
                say(&format!("{name}: {} was live already", live.version));
            }
            Err(e) => say(&format!("{name}: the rollout failed: {e}")),
        }
    }
}

/// Bakes a job's factory as `kiln bake` does.
fn bake_job(
    svc: &Service,
    store: &Store,
    client: &Client,
    job: &Job,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Summary, String> {
    let (factory, g, mut locks) = open(Path::new(&job.factory))?;
    let mut plan = PlanOptions::now(&job.images, &factory, &locks, &svc.history, store.root())
        .map_err(|e| e.to_string())?;
    plan.force = job.force;
    let opts = BakeOptions {
        plan,
        dry_run: false,
        no_publish: false,
        kiln_exe: svc.cfg.kiln_exe.clone(),
        compression: svc.cfg.compression,
        source_date_epoch: None,
        cancel: Some(svc.stop.clone()),
        runner: None,
        cache_from: vec![],
        cache_to: None,
    };
    let lines = |image: &str, text: &str| {
        if image.is_empty() {
            say(text)
        } else {
            say(&format!("[{image}] {text}"))
        }
    };
    bake::bake(
        &factory,
        &g,
        &mut locks,
        store,
        client,
        &Probing::new(store, client),
        &opts,
        Some(&svc.history),
        &lines as &dyn BakeLog,
    )
    .map_err(|e| e.to_string())
}
