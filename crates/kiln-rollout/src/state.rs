//! The rollout database (`STORE/rollouts.db`, SQLite): each service's live
//! and standby instances, and every rollout with the step it reached, so
//! a rollout interrupted at any step (kiln killed) is resumed — or rolled
//! back — by running the command again.

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use rusqlite_migration::{Migrations, M};
use serde::Serialize;

use crate::driver::Instance;

const MIGRATIONS: &[M<'static>] = &[M::up(
    "CREATE TABLE service (
        name TEXT PRIMARY KEY,
        live TEXT,
        standby TEXT,
        standby_until TEXT,
        since TEXT
    );
    CREATE TABLE rollout (
        id INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        kind TEXT NOT NULL,
        green TEXT NOT NULL,
        step TEXT NOT NULL,
        started TEXT NOT NULL,
        finished TEXT,
        outcome TEXT,
        detail TEXT
    );
    CREATE TABLE step (
        rollout INTEGER NOT NULL,
        step TEXT NOT NULL,
        at TEXT NOT NULL,
        detail TEXT NOT NULL
    );",
)];

/// Why the database could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the rollout database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("the rollout database: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("the rollout database: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the rollout database: another thread panicked while using it")]
    Poisoned,
}

/// A service's instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Record {
    pub live: Option<Instance>,
    /// The replaced instance, stopped and kept for a rollback until
    /// `standby_until`.
    pub standby: Option<Instance>,
    pub standby_until: Option<DateTime<Utc>>,
    /// When `live` went live.
    pub since: Option<DateTime<Utc>>,
}

/// A rollout (or rollback) not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub id: i64,
    /// rollout or rollback.
    pub kind: String,
    /// The instance going live.
    pub green: Instance,
    /// The last step it completed.
    pub step: String,
}

/// The database.
pub struct State {
    conn: Mutex<Connection>,
}

fn time(s: Option<String>) -> Option<DateTime<Utc>> {
    s.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn json<T: serde::de::DeserializeOwned>(s: Option<String>) -> Option<T> {
    s.and_then(|t| serde_json::from_str(&t).ok())
}

impl State {
    pub fn open(path: &Path) -> Result<State, StateError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Migrations::from_slice(MIGRATIONS).to_latest(&mut conn)?;
        Ok(State {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StateError> {
        self.conn.lock().map_err(|_| StateError::Poisoned)
    }

    /// Service `name`'s instances (none when it never ran).
    pub fn record(&self, name: &str) -> Result<Record, StateError> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                "SELECT live, standby, standby_until, since FROM service WHERE name = ?1",
                [name],
                |r| {
                    Ok(Record {
                        live: json(r.get(0)?),
                        standby: json(r.get(1)?),
                        standby_until: time(r.get(2)?),
                        since: time(r.get(3)?),
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
    }

    fn put(conn: &Connection, name: &str, r: &Record) -> Result<(), StateError> {
        let j = |i: &Option<Instance>| i.as_ref().map(serde_json::to_string).transpose();
        conn.execute(
            "INSERT INTO service (name, live, standby, standby_until, since) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (name) DO UPDATE SET live = ?2, standby = ?3, standby_until = ?4, since = ?5",
            params![
                name,
                j(&r.live)?,
                j(&r.standby)?,
                r.standby_until.map(|t| t.to_rfc3339()),
                r.since.map(|t| t.to_rfc3339())
            ],
        )?;
        Ok(())
    }

    /// Replaces service `name`'s instances.
    pub fn set_record(&self, name: &str, r: &Record) -> Result<(), StateError> {
        let conn = self.conn()?;
        Self::put(&conn, name, r)
    }

    /// The unfinished rollout of `name`, if any.
    pub fn unfinished(&self, name: &str) -> Result<Option<Progress>, StateError> {
        let conn = self.conn()?;
        let row: Option<(i64, String, String, String)> = conn
            .query_row(
                "SELECT id, kind, green, step FROM rollout WHERE service = ?1 AND finished IS NULL
                 ORDER BY id DESC LIMIT 1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        Ok(match row {
            Some((id, kind, green, step)) => Some(Progress {
                id,
                kind,
                green: serde_json::from_str(&green)?,
                step,
            }),
            None => None,
        })
    }

    /// Starts a rollout of `green`.
    pub fn begin(&self, name: &str, kind: &str, green: &Instance) -> Result<Progress, StateError> {
        let conn = self.conn()?;
        let now = Utc::now().to_rfc3339();
        conn.execute(
            "INSERT INTO rollout (service, kind, green, step, started) VALUES (?1, ?2, ?3, 'planned', ?4)",
            params![name, kind, serde_json::to_string(green)?, now],
        )?;
        let id = conn.last_insert_rowid();
        conn.execute(
            "INSERT INTO step (rollout, step, at, detail) VALUES (?1, 'planned', ?2, '')",
            params![id, now],
        )?;
        Ok(Progress {
            id,
            kind: kind.to_string(),
            green: green.clone(),
            step: "planned".into(),
        })
    }

    /// Records that rollout `p` completed `step`; with `record`, the
    /// service's new instances in the same transaction.
    pub fn step(
        &self,
        name: &str,
        p: &mut Progress,
        step: &str,
        detail: &str,
        record: Option<&Record>,
    ) -> Result<(), StateError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let now = Utc::now().to_rfc3339();
        tx.execute(
            "UPDATE rollout SET step = ?2 WHERE id = ?1",
            params![p.id, step],
        )?;
        tx.execute(
            "INSERT INTO step (rollout, step, at, detail) VALUES (?1, ?2, ?3, ?4)",
            params![p.id, step, now, detail],
        )?;
        if let Some(r) = record {
            Self::put(&tx, name, r)?;
        }
        tx.commit()?;
        p.step = step.to_string();
        Ok(())
    }

    /// Ends rollout `p`: `done`, `failed` or `aborted`.
    pub fn finish(&self, p: &Progress, outcome: &str, detail: &str) -> Result<(), StateError> {
        self.conn()?.execute(
            "UPDATE rollout SET finished = ?2, outcome = ?3, detail = ?4 WHERE id = ?1",
            params![p.id, Utc::now().to_rfc3339(), outcome, detail],
        )?;
        Ok(())
    }

    /// The steps of rollout `id`: (step, at, detail).
    pub fn steps(&self, id: i64) -> Result<Vec<(String, String, String)>, StateError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare("SELECT step, at, detail FROM step WHERE rollout = ?1 ORDER BY rowid")?;
        let rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(slot: u8) -> Instance {
        Instance {
            id: format!("kiln-web-{slot}"),
            slot,
            version: format!("v{slot}"),
            digest: "sha256:x".into(),
            addr: ([127, 0, 0, 1], 4000 + u16::from(slot)).into(),
        }
    }

    #[test]
    fn a_rollout_is_resumed_where_it_stopped_and_its_end_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(&dir.path().join("r.db")).unwrap();
        assert_eq!(s.record("web").unwrap(), Record::default());
        let mut p = s.begin("web", "rollout", &inst(1)).unwrap();
        s.step("web", &mut p, "started", "", None).unwrap();
        // kiln killed: opened again, the rollout is where it was
        drop(s);
        let s = State::open(&dir.path().join("r.db")).unwrap();
        let mut again = s.unfinished("web").unwrap().unwrap();
        assert_eq!(again.step, "started");
        assert_eq!(again.green, inst(1));
        let live = Record {
            live: Some(inst(1)),
            ..Record::default()
        };
        s.step("web", &mut again, "out", "", Some(&live)).unwrap();
        assert_eq!(s.record("web").unwrap(), live);
        s.finish(&again, "done", "").unwrap();
        assert!(s.unfinished("web").unwrap().is_none());
        let steps: Vec<String> = s
            .steps(again.id)
            .unwrap()
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(steps, ["planned", "started", "out"]);
    }
}
