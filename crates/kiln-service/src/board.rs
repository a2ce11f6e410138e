//! What the service knows right now, for its API, pages and metrics: a
//! view of each factory as its last plan left it, the jobs running and
//! their live logs (with a broadcast of each new line for the live pages),
//! and a waker per factory so a request does not wait for the next poll.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_factory::plan::Reason;
use serde::Serialize;
use tokio::sync::broadcast;

/// One factory as the service last planned it.
#[derive(Debug, Clone, Serialize)]
pub struct FactoryView {
    /// The name in URLs: its directory's name (made unique).
    pub id: String,
    pub dir: String,
    pub planned_at: Option<DateTime<Utc>>,
    /// How long the last plan took (registry bases and packages included).
    pub plan_seconds: Option<f64>,
    /// The earliest schedule tick of its images.
    pub next_tick: Option<DateTime<Utc>>,
    /// Why it could not be planned, when it could not.
    pub error: Option<String>,
    pub warnings: Vec<String>,
    pub images: Vec<ImageView>,
    /// The job baking it now.
    pub running: Option<i64>,
}

/// One image as the service last planned it.
#[derive(Debug, Clone, Serialize)]
pub struct ImageView {
    pub name: String,
    /// image or vm.
    pub kind: &'static str,
    /// fresh, stale, baking, failed or never-built.
    pub status: &'static str,
    pub stale: bool,
    pub reasons: Vec<Reason>,
    pub version: Option<String>,
    pub digest: Option<String>,
    pub baked_at: Option<DateTime<Utc>>,
    pub age_seconds: Option<i64>,
    /// How old its newest base is (a factory base: since it was baked; a
    /// registry base: since the image was created), when known.
    pub base_age_seconds: Option<i64>,
    pub next_run: Option<DateTime<Utc>>,
    pub pending_updates: usize,
    pub security_updates: usize,
    pub depends_on: Vec<String>,
    /// Where its locked version was published.
    pub published: Vec<String>,
    /// The factory file that defines it.
    #[serde(skip)]
    pub file: PathBuf,
    pub last: Option<LastBake>,
    pub last_success: Option<DateTime<Utc>>,
}

/// The image's last recorded bake.
#[derive(Debug, Clone, Serialize)]
pub struct LastBake {
    pub outcome: String,
    pub finished: String,
    pub seconds: f64,
    pub version: Option<String>,
    pub tests_passed: u32,
    pub tests_total: u32,
    pub detail: String,
}

/// A line of a running job's log, or its end.
#[derive(Debug, Clone)]
pub enum LogEvent {
    /// Line `n` (from 0) of job `job`.
    Line {
        job: i64,
        n: usize,
        text: String,
    },
    End {
        job: i64,
    },
}

#[derive(Default)]
struct Waker {
    poked: Mutex<bool>,
    cond: Condvar,
}

/// The shared state.
pub struct Board {
    factories: RwLock<Vec<FactoryView>>,
    logs: Mutex<BTreeMap<i64, Vec<String>>>,
    events: broadcast::Sender<LogEvent>,
    planned: Vec<AtomicBool>,
    wakers: Vec<Waker>,
}

/// Unique URL names for factory directories: their names, `-2`, `-3` on
/// a clash.
pub fn ids(dirs: &[PathBuf]) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    dirs.iter()
        .map(|d| {
            let base = factory_dir(d)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "factory".into());
            let n = seen.entry(base.clone()).or_default();
            *n += 1;
            if *n == 1 {
                base
            } else {
                format!("{base}-{n}")
            }
        })
        .collect()
}

/// The directory of a factory given as a directory or a file.
fn factory_dir(p: &Path) -> &Path {
    if p.extension().is_some_and(|e| e == "toml") {
        p.parent().unwrap_or(p)
    } else {
        p
    }
}

impl Board {
    pub fn new(dirs: &[PathBuf]) -> Board {
        let factories = ids(dirs)
            .into_iter()
            .zip(dirs)
            .map(|(id, dir)| FactoryView {
                id,
                dir: dir.display().to_string(),
                planned_at: None,
                plan_seconds: None,
                next_tick: None,
                error: None,
                warnings: vec![],
                images: vec![],
                running: None,
            })
            .collect();
        Board {
            factories: RwLock::new(factories),
            logs: Mutex::default(),
            events: broadcast::channel(1024).0,
            planned: dirs.iter().map(|_| AtomicBool::new(false)).collect(),
            wakers: dirs.iter().map(|_| Waker::default()).collect(),
        }
    }

    /// Every factory.
    pub fn factories(&self) -> Vec<FactoryView> {
        self.factories.read().map(|f| f.clone()).unwrap_or_default()
    }

    /// The URL name of factory `i`.
    pub fn id(&self, i: usize) -> String {
        self.factories
            .read()
            .map(|f| f[i].id.clone())
            .unwrap_or_default()
    }

    /// One factory by id.
    pub fn factory(&self, id: &str) -> Option<(usize, FactoryView)> {
        let all = self.factories.read().ok()?;
        all.iter()
            .enumerate()
            .find(|(_, f)| f.id == id)
            .map(|(i, f)| (i, f.clone()))
    }

    /// Ready once every factory was planned once.
    pub fn ready(&self) -> bool {
        self.planned.iter().all(|p| p.load(Ordering::Relaxed))
    }

    /// A new plan of factory `i` (its running job stays as it is).
    pub fn planned(&self, i: usize, mut view: FactoryView) {
        if let Ok(mut all) = self.factories.write() {
            view.running = all[i].running;
            mark_baking(&mut view);
            all[i] = view;
        }
        self.planned[i].store(true, Ordering::Relaxed);
    }

    /// Factory `i` could not be planned.
    pub fn failed_plan(&self, i: usize, error: String) {
        if let Ok(mut all) = self.factories.write() {
            all[i].error = Some(error);
            all[i].planned_at = Some(Utc::now());
        }
        self.planned[i].store(true, Ordering::Relaxed);
    }

    /// Job `job` started baking factory `i`.
    pub fn started(&self, i: usize, job: i64) {
        if let Ok(mut logs) = self.logs.lock() {
            logs.insert(job, vec![]);
        }
        if let Ok(mut all) = self.factories.write() {
            all[i].running = Some(job);
            mark_baking(&mut all[i]);
        }
    }

    /// A line of job `job`'s log.
    pub fn line(&self, job: i64, text: &str) {
        let Ok(mut logs) = self.logs.lock() else {
            return;
        };
        let lines = logs.entry(job).or_default();
        lines.push(text.to_string());
        let n = lines.len() - 1;
        // sent under the lock, so a reader that took the lines under it
        // gets every later line from the channel, in order
        let _ = self.events.send(LogEvent::Line {
            job,
            n,
            text: text.to_string(),
        });
    }

    /// Job `job` ended: its log, for the queue to keep.
    pub fn ended(&self, i: usize, job: i64) -> String {
        if let Ok(mut all) = self.factories.write() {
            if all[i].running == Some(job) {
                all[i].running = None;
            }
        }
        let lines = self
            .logs
            .lock()
            .ok()
            .and_then(|mut l| l.remove(&job))
            .unwrap_or_default();
        let _ = self.events.send(LogEvent::End { job });
        lines.join("\n")
    }

    /// The lines job `job` logged so far (when it is running), and a
    /// receiver of the lines that follow.
    pub fn follow(&self, job: i64) -> (Option<Vec<String>>, broadcast::Receiver<LogEvent>) {
        let logs = self.logs.lock().ok();
        let rx = self.events.subscribe();
        (logs.and_then(|l| l.get(&job).cloned()), rx)
    }

    /// Wakes factory `i`'s worker (a bake was requested).
    pub fn poke(&self, i: usize) {
        let w = &self.wakers[i];
        if let Ok(mut p) = w.poked.lock() {
            *p = true;
            w.cond.notify_all();
        }
    }

    /// Sleeps factory `i`'s worker until `when`, a poke, or `stop`.
    pub fn sleep(&self, i: usize, when: DateTime<Utc>, stop: &AtomicBool) {
        let w = &self.wakers[i];
        let Ok(mut poked) = w.poked.lock() else {
            return;
        };
        while !*poked && !stop.load(Ordering::Relaxed) {
            let left = (when - Utc::now()).to_std().unwrap_or_default();
            if left.is_zero() {
                break;
            }
            let slice = left.min(Duration::from_millis(200));
            poked = match w.cond.wait_timeout(poked, slice) {
                Ok((p, _)) => p,
                Err(_) => return,
            };
        }
        *poked = false;
    }
}

/// While a job runs, its factory's stale images are baking.
fn mark_baking(view: &mut FactoryView) {
    let running = view.running.is_some();
    for image in &mut view.images {
        image.status = status(image, running);
    }
}

/// An image's status word.
pub fn status(image: &ImageView, running: bool) -> &'static str {
    let failed = image
        .last
        .as_ref()
        .is_some_and(|l| !matches!(l.outcome.as_str(), "built" | "unchanged" | "cancelled"));
    match (image.stale, running, failed) {
        (false, ..) => "fresh",
        (true, true, _) => "baking",
        (true, false, true) => "failed",
        (true, false, false) if image.version.is_none() => "never-built",
        (true, false, false) => "stale",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_directory_names_made_unique() {
        let dirs = [
            PathBuf::from("/srv/web"),
            PathBuf::from("/other/web/kiln.toml"),
            PathBuf::from("/srv/ci"),
        ];
        assert_eq!(ids(&dirs), ["web", "web-2", "ci"]);
    }

    #[test]
    fn a_follower_gets_every_line_once() {
        let board = Board::new(&[PathBuf::from("/f")]);
        board.started(0, 7);
        board.line(7, "one");
        let (so_far, mut rx) = board.follow(7);
        board.line(7, "two");
        assert_eq!(so_far.unwrap(), ["one"]);
        match rx.try_recv().unwrap() {
            LogEvent::Line { n, text, .. } => assert_eq!((n, text.as_str()), (1, "two")),
            e => panic!("{e:?}"),
        }
        assert_eq!(board.ended(0, 7), "one\ntwo");
        assert!(matches!(rx.try_recv().unwrap(), LogEvent::End { job: 7 }));
        assert!(board.follow(7).0.is_none());
    }
}
