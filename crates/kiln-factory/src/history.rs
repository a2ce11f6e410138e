//! Every bake of every image, in an SQLite database in the store
//! (`history.db`): when, why, from what, with what result, how long, the
//! tests and where it was published. `kiln history` reads it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use kiln_definition::Factory;
use rusqlite::{params, Connection};
use rusqlite_migration::{Migrations, M};
use serde::Serialize;

use crate::baked::{ImageResult, Outcome};
use crate::lock::Locks;

const MIGRATION_STEPS: &[M<'static>] = &[M::up(
    "CREATE TABLE bake (
        id INTEGER PRIMARY KEY,
        factory TEXT NOT NULL,
        image TEXT NOT NULL,
        started TEXT NOT NULL,
        finished TEXT NOT NULL,
        seconds REAL NOT NULL,
        reasons TEXT NOT NULL,
        inputs TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL,
        version TEXT,
        digest TEXT,
        tests_passed INTEGER NOT NULL,
        tests_total INTEGER NOT NULL,
        published TEXT NOT NULL
    );
    CREATE INDEX bake_image ON bake (image, started);",
)];
const MIGRATIONS: Migrations<'static> = Migrations::from_slice(MIGRATION_STEPS);

/// One recorded bake of one image.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Entry {
    pub factory: String,
    pub image: String,
    pub started: String,
    pub finished: String,
    pub seconds: f64,
    /// Why it was rebuilt.
    pub reasons: Vec<String>,
    /// Input digests: definition, context, each base.
    pub inputs: serde_json::Value,
    /// built, failed, test-failed, publish-failed, skipped.
    pub outcome: String,
    /// The error, the failed test, or why it was skipped.
    pub detail: String,
    pub version: Option<String>,
    pub digest: Option<String>,
    pub tests_passed: u32,
    pub tests_total: u32,
    pub published: Vec<String>,
}

/// The history database.
pub struct History {
    conn: Mutex<Connection>,
}

/// Why the history database could not be opened, written or read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("the bake history database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("the bake history database: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("the bake history database: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the bake history database: another thread panicked while writing it")]
    Poisoned,
}

impl History {
    /// Opens (creating or upgrading) the database at `path`.
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        MIGRATIONS.to_latest(&mut conn)?;
        Ok(History {
            conn: Mutex::new(conn),
        })
    }

    /// Records one image's bake.
    pub fn record(
        &self,
        factory: &Path,
        r: &ImageResult,
        tests_total: usize,
    ) -> Result<(), HistoryError> {
        let (outcome, detail) = match &r.outcome {
            Outcome::Built => ("built", String::new()),
            Outcome::Unchanged => ("unchanged", String::new()),
            Outcome::Failed { error } => ("failed", error.clone()),
            Outcome::TestFailed { test, exit_code } => {
                ("test-failed", format!("{test} (exit code {exit_code})"))
            }
            Outcome::PublishFailed { error } => ("publish-failed", error.clone()),
            Outcome::Skipped { because } => ("skipped", because.clone()),
            Outcome::Cancelled => ("cancelled", String::new()),
            Outcome::Reused | Outcome::WouldBuild => return Ok(()),
        };
        let now = chrono::Utc::now();
        let reasons: Vec<String> = r.reasons.iter().map(ToString::to_string).collect();
        let conn = self.conn.lock().map_err(|_| HistoryError::Poisoned)?;
        conn.execute(
            "INSERT INTO bake (factory, image, started, finished, seconds, reasons, inputs, outcome, detail,
                               version, digest, tests_passed, tests_total, published)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                factory.display().to_string(),
                r.name,
                r.started.unwrap_or(now).to_rfc3339(),
                r.finished.unwrap_or(now).to_rfc3339(),
                r.seconds,
                serde_json::to_string(&reasons)?,
                serde_json::to_string(&r.inputs)?,
                outcome,
                detail,
                r.version,
                r.digest,
                r.tests_passed as i64,
                tests_total as i64,
                serde_json::to_string(&r.published)?,
            ],
        )
        ?;
        Ok(())
    }

    /// When each image of `factory` was last rebuilt and found unchanged
    /// (the same as its locked digest): its schedule counts from then, not
    /// from when it was baked, since an unchanged image's lock entry is
    /// left as it was.
    pub fn last_checked(
        &self,
        factory: &Factory,
        locks: &Locks,
    ) -> Result<BTreeMap<String, DateTime<Utc>>, HistoryError> {
        let conn = self.conn.lock().map_err(|_| HistoryError::Poisoned)?;
        let mut stmt = conn.prepare(
            "SELECT MAX(finished) FROM bake
             WHERE factory = ?1 AND image = ?2 AND outcome = 'unchanged' AND digest = ?3",
        )?;
        let mut out = BTreeMap::new();
        for (name, image) in &factory.images {
            let Some(locked) = locks.get(name) else {
                continue;
            };
            let file = factory.files[image.file].path.display().to_string();
            let when: Option<String> =
                stmt.query_row(params![file, name, locked.digest], |row| row.get(0))?;
            if let Some(t) = when.and_then(|t| DateTime::parse_from_rfc3339(&t).ok()) {
                out.insert(name.clone(), t.with_timezone(&Utc));
            }
        }
        Ok(out)
    }

    /// Recorded bakes, oldest first; of one image when `image` is given.
    pub fn entries(&self, image: Option<&str>) -> Result<Vec<Entry>, HistoryError> {
        self.query(
            "WHERE ?1 IS NULL OR image = ?1 ORDER BY started, id",
            params![image],
        )
    }

    /// The last `limit` bakes of `image` of the factory file `factory`,
    /// newest first.
    pub fn recent(
        &self,
        factory: &Path,
        image: &str,
        limit: usize,
    ) -> Result<Vec<Entry>, HistoryError> {
        self.query(
            "WHERE factory = ?1 AND image = ?2 ORDER BY started DESC, id DESC LIMIT ?3",
            params![factory.display().to_string(), image, limit as i64],
        )
    }

    fn query(
        &self,
        filter: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Entry>, HistoryError> {
        let conn = self.conn.lock().map_err(|_| HistoryError::Poisoned)?;
        let mut stmt = conn.prepare(&format!(
            "SELECT factory, image, started, finished, seconds, reasons, inputs, outcome, detail,
                        version, digest, tests_passed, tests_total, published
                 FROM bake {filter}"
        ))?;
        let rows = stmt.query_map(params, |row| {
            let json = |i: usize| -> rusqlite::Result<String> { row.get(i) };
            Ok(Entry {
                factory: row.get(0)?,
                image: row.get(1)?,
                started: row.get(2)?,
                finished: row.get(3)?,
                seconds: row.get(4)?,
                reasons: serde_json::from_str(&json(5)?).unwrap_or_default(),
                inputs: serde_json::from_str(&json(6)?).unwrap_or_default(),
                outcome: row.get(7)?,
                detail: row.get(8)?,
                version: row.get(9)?,
                digest: row.get(10)?,
                tests_passed: row.get(11)?,
                tests_total: row.get(12)?,
                published: serde_json::from_str(&json(13)?).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrations_are_valid() {
        assert!(MIGRATIONS.validate().is_ok());
    }
}
