//! The service's job queue, in SQLite: every bake the service decides on
//! is a row before it starts, so a service killed at any moment (SIGKILL
//! included) finds, when it starts again, the job that was running, and
//! runs it once more. A job that fails twice in a row is marked failed and
//! not queued again until what it would bake changes: each job carries a
//! key (the digest of the plan's inputs for it), and a failed key is not
//! retried.

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use rusqlite_migration::{Migrations, M};
use serde::Serialize;

const MIGRATIONS: &[M<'static>] = &[
    M::up(
        "CREATE TABLE job (
        id INTEGER PRIMARY KEY,
        factory TEXT NOT NULL,
        images TEXT NOT NULL,
        reason TEXT NOT NULL,
        key TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        queued_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        error TEXT
    );
    CREATE INDEX job_state ON job (state, id);",
    ),
    M::up(
        "ALTER TABLE job ADD COLUMN force INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE job ADD COLUMN log TEXT;
    CREATE TABLE delivery (
        id INTEGER PRIMARY KEY,
        job INTEGER,
        url TEXT NOT NULL,
        format TEXT NOT NULL,
        event TEXT NOT NULL,
        image TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        next_at TEXT NOT NULL,
        delivered_at TEXT,
        status INTEGER,
        error TEXT
    );
    CREATE INDEX delivery_state ON delivery (state, next_at);",
    ),
];

/// How many failed runs in a row mark a job failed.
pub const TRIES: u32 = 2;

/// Why the queue could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the service's job queue: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("the service's job queue: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("the service's job queue: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the service's job queue: another thread panicked while using it")]
    Poisoned,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
        }
    }

    fn parse(s: &str) -> State {
        match s {
            "running" => State::Running,
            "succeeded" => State::Succeeded,
            "failed" => State::Failed,
            _ => State::Queued,
        }
    }
}

/// A bake of a factory (some of its images, or all of them when empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    pub id: i64,
    pub factory: String,
    pub images: Vec<String>,
    /// Why it was queued (a schedule tick, a poll, a request).
    pub reason: String,
    /// What it would bake, as a digest: the same key failed twice is not
    /// queued again.
    pub key: String,
    pub state: State,
    /// Runs started so far.
    pub attempts: u32,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// Rebuild the images even when up to date (a request can ask).
    pub force: bool,
}

fn insert(
    conn: &Connection,
    factory: &str,
    images: &[String],
    force: bool,
    reason: &str,
    key: &str,
    now: DateTime<Utc>,
) -> Result<i64, QueueError> {
    conn.execute(
        "INSERT INTO job (factory, images, reason, key, state, queued_at, force)
         VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6)",
        params![
            factory,
            serde_json::to_string(images)?,
            reason,
            key,
            now.to_rfc3339(),
            force
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// The queue.
pub struct Queue {
    conn: Mutex<Connection>,
}

const COLUMNS: &str = "id, factory, images, reason, key, state, attempts, queued_at, started_at, \
                       finished_at, error, force";

fn time(s: Option<String>) -> Option<DateTime<Utc>> {
    s.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn job(row: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    let images: String = row.get(2)?;
    let state: String = row.get(5)?;
    Ok(Job {
        id: row.get(0)?,
        factory: row.get(1)?,
        images: serde_json::from_str(&images).unwrap_or_default(),
        reason: row.get(3)?,
        key: row.get(4)?,
        state: State::parse(&state),
        attempts: row.get(6)?,
        queued_at: time(Some(row.get(7)?)).unwrap_or_default(),
        started_at: time(row.get(8)?),
        finished_at: time(row.get(9)?),
        error: row.get(10)?,
        force: row.get(11)?,
    })
}

impl Queue {
    /// Opens (creating or upgrading) the queue at `path`.
    pub fn open(path: &Path) -> Result<Queue, QueueError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // every change is on disk before it is acted on
        conn.pragma_update(None, "synchronous", "FULL")?;
        Migrations::from_slice(MIGRATIONS).to_latest(&mut conn)?;
        Ok(Queue {
            conn: Mutex::new(conn),
        })
    }

    /// The service database, for the other tables it holds (deliveries).
    pub(crate) fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, QueueError> {
        self.conn.lock().map_err(|_| QueueError::Poisoned)
    }

    /// Queues a bake, unless one with the same factory and key is queued or
    /// running, or failed [`TRIES`] times; returns its id when queued.
    pub fn enqueue(
        &self,
        factory: &str,
        images: &[String],
        reason: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, QueueError> {
        let conn = self.conn()?;
        let blocked: Option<i64> = conn
            .query_row(
                "SELECT id FROM job WHERE factory = ?1 AND key = ?2
                   AND state IN ('queued', 'running', 'failed') LIMIT 1",
                params![factory, key],
                |r| r.get(0),
            )
            .optional()?;
        if blocked.is_some() {
            return Ok(None);
        }
        insert(&conn, factory, images, false, reason, key, now).map(Some)
    }

    /// Queues a bake someone asked for (through the API): always queued,
    /// under a key of its own.
    pub fn request(
        &self,
        factory: &str,
        images: &[String],
        force: bool,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, QueueError> {
        let conn = self.conn()?;
        let key = format!("request {}", now.timestamp_nanos_opt().unwrap_or_default());
        insert(&conn, factory, images, force, reason, &key, now)
    }

    /// Takes the oldest queued job of a factory that has none running, and
    /// marks it running (one bake per factory at a time); only of `factory`
    /// when given.
    pub fn claim(
        &self,
        factory: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<Job>, QueueError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let found = tx
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM job q WHERE state = 'queued'
                       AND (?1 IS NULL OR factory = ?1)
                       AND NOT EXISTS (SELECT 1 FROM job r
                                       WHERE r.factory = q.factory AND r.state = 'running')
                     ORDER BY id LIMIT 1"
                ),
                [factory],
                job,
            )
            .optional()?;
        let Some(mut j) = found else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE job SET state = 'running', attempts = attempts + 1, started_at = ?2,
                            finished_at = NULL WHERE id = ?1",
            params![j.id, now.to_rfc3339()],
        )?;
        tx.commit()?;
        j.state = State::Running;
        j.attempts += 1;
        j.started_at = Some(now);
        Ok(Some(j))
    }

    /// Records how a running job ended: a success ends it; a failure puts
    /// it back in the queue, or marks it failed after [`TRIES`] runs.
    pub fn finish(
        &self,
        id: i64,
        result: Result<(), String>,
        now: DateTime<Utc>,
    ) -> Result<State, QueueError> {
        let conn = self.conn()?;
        let attempts: u32 =
            conn.query_row("SELECT attempts FROM job WHERE id = ?1", [id], |r| r.get(0))?;
        let (state, error) = match result {
            Ok(()) => (State::Succeeded, None),
            Err(e) if attempts >= TRIES => (State::Failed, Some(e)),
            Err(e) => (State::Queued, Some(e)),
        };
        conn.execute(
            "UPDATE job SET state = ?2, finished_at = ?3, error = ?4 WHERE id = ?1",
            params![id, state.name(), now.to_rfc3339(), error],
        )?;
        Ok(state)
    }

    /// Puts a running job back in the queue as if it had not started (the
    /// service is stopping and cancelled it cleanly).
    pub fn requeue(&self, id: i64) -> Result<(), QueueError> {
        self.conn()?.execute(
            "UPDATE job SET state = 'queued', attempts = MAX(attempts - 1, 0), started_at = NULL
             WHERE id = ?1",
            [id],
        )?;
        Ok(())
    }

    /// Keeps the log of a job's last run.
    pub fn set_log(&self, id: i64, log: &str) -> Result<(), QueueError> {
        self.conn()?
            .execute("UPDATE job SET log = ?2 WHERE id = ?1", params![id, log])?;
        Ok(())
    }

    /// The log of a job's last run, once it ended.
    pub fn log(&self, id: i64) -> Result<Option<String>, QueueError> {
        Ok(self
            .conn()?
            .query_row("SELECT log FROM job WHERE id = ?1", [id], |r| r.get(0))
            .optional()?
            .flatten())
    }

    /// The newest `limit` jobs of every state, newest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<Job>, QueueError> {
        self.recent_of(None, limit)
    }

    /// The newest `limit` jobs of `factory` (of all when `None`), newest
    /// first.
    pub fn recent_of(&self, factory: Option<&str>, limit: usize) -> Result<Vec<Job>, QueueError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM job WHERE ?1 IS NULL OR factory = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![factory, limit as i64], job)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// At start: the jobs a killed service was running. Each counts as a
    /// failed run — back in the queue to run once more, or failed after
    /// [`TRIES`] runs.
    pub fn recover(&self, now: DateTime<Utc>) -> Result<Vec<Job>, QueueError> {
        let interrupted: Vec<Job> = self.jobs(State::Running)?.into_iter().collect();
        for j in &interrupted {
            self.finish(
                j.id,
                Err("interrupted: the service stopped while it ran".into()),
                now,
            )?;
        }
        Ok(interrupted)
    }

    /// The jobs in `state`, oldest first.
    pub fn jobs(&self, state: State) -> Result<Vec<Job>, QueueError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM job WHERE state = ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([state.name()], job)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// One job by id.
    pub fn get(&self, id: i64) -> Result<Option<Job>, QueueError> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM job WHERE id = ?1"),
                [id],
                job,
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn the_migrations_are_valid() {
        assert!(Migrations::from_slice(MIGRATIONS).validate().is_ok());
    }

    #[test]
    fn one_bake_per_factory_and_no_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("q.db")).unwrap();
        let a = q
            .enqueue("/f/a", &[], "schedule", "k1", t(0))
            .unwrap()
            .unwrap();
        assert_eq!(
            q.enqueue("/f/a", &[], "poll", "k1", t(1)).unwrap(),
            None,
            "same key queued"
        );
        let a2 = q
            .enqueue("/f/a", &["x".into()], "request", "k2", t(2))
            .unwrap()
            .unwrap();
        let b = q.enqueue("/f/b", &[], "poll", "k1", t(3)).unwrap().unwrap();
        let first = q.claim(None, t(4)).unwrap().unwrap();
        assert_eq!(
            (first.id, first.attempts, first.state),
            (a, 1, State::Running)
        );
        // factory a is busy: b's job comes next, a's second waits
        assert_eq!(q.claim(None, t(5)).unwrap().unwrap().id, b);
        assert_eq!(q.claim(None, t(6)).unwrap(), None);
        assert_eq!(q.finish(a, Ok(()), t(7)).unwrap(), State::Succeeded);
        let next = q.claim(None, t(8)).unwrap().unwrap();
        assert_eq!((next.id, next.images.clone()), (a2, vec!["x".to_string()]));
        // a succeeded key may be queued again (a later schedule tick)
        assert!(q
            .enqueue("/f/a", &[], "schedule", "k1", t(9))
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_killed_service_runs_the_interrupted_job_once_more() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let id = {
            let q = Queue::open(&path).unwrap();
            let id = q
                .enqueue("/f/a", &[], "schedule", "k1", t(0))
                .unwrap()
                .unwrap();
            q.claim(None, t(1)).unwrap().unwrap();
            id // the service dies here: the job stays running
        };
        let q = Queue::open(&path).unwrap();
        let interrupted = q.recover(t(2)).unwrap();
        assert_eq!(interrupted.iter().map(|j| j.id).collect::<Vec<_>>(), [id]);
        let again = q.claim(None, t(3)).unwrap().unwrap();
        assert_eq!((again.id, again.attempts), (id, 2));
        assert_eq!(q.finish(id, Ok(()), t(4)).unwrap(), State::Succeeded);
        assert!(q.recover(t(5)).unwrap().is_empty());
    }

    #[test]
    fn a_job_failing_twice_is_failed_until_its_key_changes() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("q.db")).unwrap();
        let id = q.enqueue("/f/a", &[], "poll", "k1", t(0)).unwrap().unwrap();
        q.claim(None, t(1)).unwrap();
        assert_eq!(
            q.finish(id, Err("boom".into()), t(2)).unwrap(),
            State::Queued
        );
        q.claim(None, t(3)).unwrap();
        assert_eq!(
            q.finish(id, Err("boom".into()), t(4)).unwrap(),
            State::Failed
        );
        assert_eq!(q.get(id).unwrap().unwrap().error.as_deref(), Some("boom"));
        assert_eq!(q.claim(None, t(5)).unwrap(), None);
        assert_eq!(
            q.enqueue("/f/a", &[], "poll", "k1", t(6)).unwrap(),
            None,
            "not retried"
        );
        assert!(
            q.enqueue("/f/a", &[], "poll", "k2", t(7))
                .unwrap()
                .is_some(),
            "something changed"
        );
    }
}
