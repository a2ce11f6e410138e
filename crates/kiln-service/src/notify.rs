//! Notifications: a webhook per configured URL, as a generic JSON document
//! or a Slack-compatible message (`{"text": …}`), for each image a job
//! published, found unchanged or failed. Every delivery is a row in the
//! service database before it is sent, retried with backoff, and its
//! result kept (shown by the API, with the URL's path hidden: a Slack URL's
//! path is its secret).

use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_factory::baked::{ImageResult, Outcome};
use rusqlite::params;
use serde::Serialize;
use serde_json::json;

use crate::queue::{Queue, QueueError};

/// How many times a delivery is tried before it is marked failed.
pub const ATTEMPTS: u32 = 5;

/// A webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub url: String,
    pub format: Format,
}

/// What a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The event as a JSON document.
    Json,
    /// A Slack incoming-webhook message: `{"text": …}`.
    Slack,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
        }
    }
}

/// The notified outcomes: published, unchanged, failed; none for the rest.
fn event(outcome: &Outcome) -> Option<&'static str> {
    match outcome {
        Outcome::Built => Some("published"),
        Outcome::Unchanged => Some("unchanged"),
        Outcome::Failed { .. } | Outcome::TestFailed { .. } | Outcome::PublishFailed { .. } => {
            Some("failed")
        }
        _ => None,
    }
}

fn detail(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Failed { error } | Outcome::PublishFailed { error } => error.clone(),
        Outcome::TestFailed { test, exit_code } => format!("test {test:?} exited {exit_code}"),
        _ => String::new(),
    }
}

/// The generic document for one image's outcome.
pub fn document(
    job: i64,
    factory: &str,
    r: &ImageResult,
    at: DateTime<Utc>,
) -> Option<serde_json::Value> {
    let event = event(&r.outcome)?;
    Some(json!({
        "event": event,
        "factory": factory,
        "image": r.name,
        "version": r.version,
        "digest": r.digest,
        "published": r.published,
        "reasons": r.reasons.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "tests_passed": r.tests_passed,
        "detail": detail(&r.outcome),
        "job": job,
        "at": at.to_rfc3339(),
    }))
}

/// The Slack message for the same.
fn slack(doc: &serde_json::Value) -> serde_json::Value {
    let s = |k: &str| doc[k].as_str().unwrap_or("").to_string();
    let what = match s("event").as_str() {
        "published" => format!(
            "published {} ({})",
            s("version"),
            s("digest").get(..19).unwrap_or("")
        ),
        "unchanged" => "rebuilt unchanged: nothing published".to_string(),
        _ => format!("FAILED: {}", s("detail").lines().next().unwrap_or("")),
    };
    json!({ "text": format!("kiln {}: {} {what}", s("factory"), s("image")) })
}

/// Queues the deliveries of a finished job's outcomes to every hook.
pub fn queue_outcomes(
    queue: &Queue,
    hooks: &[Hook],
    job: i64,
    factory: &str,
    results: &[ImageResult],
    now: DateTime<Utc>,
) -> Result<usize, QueueError> {
    let conn = queue.conn()?;
    let mut n = 0;
    for doc in results
        .iter()
        .filter_map(|r| document(job, factory, r, now))
    {
        for hook in hooks {
            let body = match hook.format {
                Format::Json => doc.clone(),
                Format::Slack => slack(&doc),
            };
            conn.execute(
                "INSERT INTO delivery (job, url, format, event, image, payload, state, created_at, next_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7)",
                params![
                    job,
                    hook.url,
                    hook.format.name(),
                    doc["event"].as_str(),
                    doc["image"].as_str(),
                    body.to_string(),
                    now.to_rfc3339()
                ],
            )?;
            n += 1;
        }
    }
    Ok(n)
}

/// A delivery as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub job: Option<i64>,
    /// The URL with its path hidden.
    pub target: String,
    pub format: String,
    pub event: String,
    pub image: String,
    /// pending, delivered or failed.
    pub state: String,
    pub attempts: u32,
    pub created_at: String,
    pub delivered_at: Option<String>,
    /// The receiver's last HTTP status.
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// `scheme://host[:port]/…`: what a log may show of a URL.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    let more = if rest.len() > host.len() { "/…" } else { "" };
    format!("{scheme}://{host}{more}")
}

/// The newest `limit` deliveries, newest first.
pub fn deliveries(queue: &Queue, limit: usize) -> Result<Vec<Delivery>, QueueError> {
    let conn = queue.conn()?;
    let mut stmt = conn.prepare(
        "SELECT id, job, url, format, event, image, state, attempts, created_at, delivered_at,
                status, error
         FROM delivery ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit as i64], |r| {
        Ok(Delivery {
            id: r.get(0)?,
            job: r.get(1)?,
            target: redact(&r.get::<_, String>(2)?),
            format: r.get(3)?,
            event: r.get(4)?,
            image: r.get(5)?,
            state: r.get(6)?,
            attempts: r.get(7)?,
            created_at: r.get(8)?,
            delivered_at: r.get(9)?,
            status: r.get(10)?,
            error: r.get(11)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The wait before try `attempt + 1` after `attempt` failed: 1, 2, 4, 8 s.
fn backoff(attempt: u32) -> chrono::Duration {
    chrono::Duration::seconds(1 << attempt.saturating_sub(1).min(6))
}

/// Sends every delivery that is due; returns how many were tried.
pub fn deliver_due(
    queue: &Queue,
    now: DateTime<Utc>,
    log: &dyn Fn(&str),
) -> Result<usize, QueueError> {
    let due: Vec<(i64, String, String, u32)> = {
        let conn = queue.conn()?;
        let mut stmt = conn.prepare(
            "SELECT id, url, payload, attempts FROM delivery
             WHERE state = 'pending' AND next_at <= ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([now.to_rfc3339()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    for (id, url, payload, attempts) in &due {
        let attempt = attempts + 1;
        let (status, error) = send(url, payload);
        let at = Utc::now();
        let conn = queue.conn()?;
        if error.is_none() {
            conn.execute(
                "UPDATE delivery SET state = 'delivered', attempts = ?2, delivered_at = ?3,
                                     status = ?4, error = NULL WHERE id = ?1",
                params![id, attempt, at.to_rfc3339(), status],
            )?;
            continue;
        }
        let state = if attempt >= ATTEMPTS {
            "failed"
        } else {
            "pending"
        };
        conn.execute(
            "UPDATE delivery SET state = ?2, attempts = ?3, next_at = ?4, status = ?5, error = ?6
             WHERE id = ?1",
            params![
                id,
                state,
                attempt,
                (at + backoff(attempt)).to_rfc3339(),
                status,
                error
            ],
        )?;
        log(&format!(
            "webhook {} (delivery {id}, try {attempt} of {ATTEMPTS}): {}",
            redact(url),
            error.unwrap_or_default()
        ));
    }
    Ok(due.len())
}

/// POSTs `payload`; the receiver's status and, unless it took it (2xx),
/// what went wrong.
fn send(url: &str, payload: &str) -> (Option<u16>, Option<String>) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .redirects(0)
        .build();
    match agent
        .post(url)
        .set("Content-Type", "application/json")
        .set("User-Agent", "kiln-serve")
        .send_string(payload)
    {
        Ok(r) => (Some(r.status()), None),
        Err(ureq::Error::Status(code, _)) => {
            (Some(code), Some(format!("the receiver answered {code}")))
        }
        // the error may name the URL; keep its path out of logs and the API
        Err(ureq::Error::Transport(t)) => (None, Some(format!("{}", t.kind()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_paths_and_credentials() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(redact("http://u:p@127.0.0.1:9/x?y"), "http://127.0.0.1:9/…");
        assert_eq!(redact("http://127.0.0.1:9"), "http://127.0.0.1:9");
    }

    #[test]
    fn backoff_doubles() {
        assert_eq!(backoff(1).num_seconds(), 1);
        assert_eq!(backoff(2).num_seconds(), 2);
        assert_eq!(backoff(4).num_seconds(), 8);
    }

    #[test]
    fn only_published_unchanged_and_failed_are_notified() {
        let mut r = ImageResult {
            name: "app".into(),
            outcome: Outcome::Built,
            reasons: vec![],
            version: Some("1.0.0".into()),
            digest: Some(format!("sha256:{}", "a".repeat(64))),
            tests_passed: 1,
            published: vec!["r/app:1.0.0".into()],
            started: None,
            finished: None,
            seconds: 1.0,
            inputs: Default::default(),
            wave: None,
        };
        let doc = document(1, "f", &r, Utc::now()).unwrap();
        assert_eq!(doc["event"], "published");
        assert!(slack(&doc)["text"]
            .as_str()
            .unwrap()
            .contains("app published 1.0.0"));
        r.outcome = Outcome::Reused;
        assert!(document(1, "f", &r, Utc::now()).is_none());
        r.outcome = Outcome::TestFailed {
            test: "t".into(),
            exit_code: 3,
        };
        let doc = document(1, "f", &r, Utc::now()).unwrap();
        assert_eq!(doc["event"], "failed");
        assert!(slack(&doc)["text"].as_str().unwrap().contains("FAILED"));
    }
}
