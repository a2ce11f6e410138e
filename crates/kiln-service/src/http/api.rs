//! The JSON API, health, readiness and metrics.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::{App, Problem};
use crate::board::{FactoryView, ImageView, LogEvent};
use crate::queue::{Job, State as JobState};

type Reply = Result<Response, Problem>;

pub async fn health() -> &'static str {
    "ok\n"
}

/// Ready once every factory was planned once.
pub async fn ready(State(app): State<App>) -> Response {
    if app.svc.board.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "planning\n").into_response()
    }
}

pub async fn metrics(State(app): State<App>, headers: HeaderMap) -> Reply {
    app.may_read(&headers)?;
    let queued = app
        .svc
        .queue
        .jobs(JobState::Queued)
        .map_err(Problem::internal)?
        .len();
    let text = app.svc.metrics.render(&app.svc.board.factories(), queued);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

pub async fn factories(State(app): State<App>, headers: HeaderMap) -> Reply {
    app.may_read(&headers)?;
    Ok(Json(app.svc.board.factories()).into_response())
}

/// A factory and an image of it, or a 404 naming what is missing.
pub(super) fn find(
    app: &App,
    factory: &str,
    image: Option<&str>,
) -> Result<(usize, FactoryView, Option<ImageView>), Problem> {
    let (i, f) = app
        .svc
        .board
        .factory(factory)
        .ok_or_else(|| Problem::not_found(format!("no factory {factory:?}")))?;
    let img = match image {
        Some(name) => Some(
            f.images
                .iter()
                .find(|im| im.name == name)
                .cloned()
                .ok_or_else(|| {
                    Problem::not_found(format!("factory {factory:?} has no image {name:?}"))
                })?,
        ),
        None => None,
    };
    Ok((i, f, img))
}

/// An image of a factory (and the factory's index) with its last 50
/// recorded bakes, newest first.
pub(super) fn with_history(
    app: &App,
    factory: &str,
    image: &str,
) -> Result<(usize, ImageView, Vec<kiln_factory::history::Entry>), Problem> {
    let (i, _, img) = find(app, factory, Some(image))?;
    let img = img.expect("asked for");
    let history = app
        .svc
        .history
        .recent(&img.file, image, 50)
        .map_err(Problem::internal)?;
    Ok((i, img, history))
}

/// The jobs of factory `i`, newest first.
pub(super) fn jobs_of(app: &App, i: usize, limit: usize) -> Result<Vec<Job>, Problem> {
    let dir = app.svc.factory_dir(i).display().to_string();
    app.svc
        .queue
        .recent_of(Some(&dir), limit)
        .map_err(Problem::internal)
}

pub async fn factory(
    State(app): State<App>,
    Path(factory): Path<String>,
    headers: HeaderMap,
) -> Reply {
    app.may_read(&headers)?;
    let (i, f, _) = find(&app, &factory, None)?;
    let jobs = jobs_of(&app, i, 20)?;
    let mut doc = serde_json::to_value(&f).map_err(Problem::internal)?;
    doc["jobs"] = serde_json::to_value(jobs).map_err(Problem::internal)?;
    Ok(Json(doc).into_response())
}

pub async fn image(
    State(app): State<App>,
    Path((factory, image)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    app.may_read(&headers)?;
    let (_, img, history) = with_history(&app, &factory, &image)?;
    let mut doc = serde_json::to_value(&img).map_err(Problem::internal)?;
    doc["history"] = serde_json::to_value(history).map_err(Problem::internal)?;
    Ok(Json(doc).into_response())
}

/// A bake request's body: every field may be left out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BakeRequest {
    /// Only these images (and what they stand on); all when empty.
    #[serde(default)]
    images: Vec<String>,
    /// Rebuild even when up to date.
    #[serde(default)]
    force: bool,
}

fn request(body: &Bytes) -> Result<BakeRequest, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(BakeRequest::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!("the request body is not a bake request: {e} (expected {{\"images\": [...], \"force\": false}})"),
        )
    })
}

fn queue(app: &App, i: usize, images: Vec<String>, force: bool) -> Reply {
    let dir = app.svc.factory_dir(i).display().to_string();
    let what = if images.is_empty() {
        "the factory".to_string()
    } else {
        images.join(", ")
    };
    let reason = format!(
        "requested through the API: {what}{}",
        if force { " (forced)" } else { "" }
    );
    let id = app
        .svc
        .queue
        .request(&dir, &images, force, &reason, Utc::now())
        .map_err(Problem::internal)?;
    app.svc.board.poke(i);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/jobs/{id}"))],
        Json(json!({ "job": id, "state": "queued", "url": format!("/api/jobs/{id}") })),
    )
        .into_response())
}

pub async fn bake_factory(
    State(app): State<App>,
    Path(factory): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    app.may_write(&headers)?;
    let req = request(&body)?;
    let (i, f, _) = find(&app, &factory, None)?;
    if let Some(missing) = req
        .images
        .iter()
        .find(|n| !f.images.iter().any(|im| &im.name == *n))
    {
        return Err(Problem::not_found(format!(
            "factory {factory:?} has no image {missing:?}"
        )));
    }
    queue(&app, i, req.images, req.force)
}

pub async fn bake_image(
    State(app): State<App>,
    Path((factory, image)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    app.may_write(&headers)?;
    let req = request(&body)?;
    if !req.images.is_empty() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "`images` belongs to a factory's bake request, not an image's",
        ));
    }
    let (i, _, _) = find(&app, &factory, Some(&image))?;
    queue(&app, i, vec![image], req.force)
}

pub async fn jobs(State(app): State<App>, headers: HeaderMap) -> Reply {
    app.may_read(&headers)?;
    Ok(Json(app.svc.queue.recent(100).map_err(Problem::internal)?).into_response())
}

/// A job with its log: live while it runs, as kept once it ended.
pub(super) fn job_with_log(app: &App, id: i64) -> Result<(Job, Vec<String>), Problem> {
    let job = app
        .svc
        .queue
        .get(id)
        .map_err(Problem::internal)?
        .ok_or_else(|| Problem::not_found(format!("no job {id}")))?;
    let (live, _) = app.svc.board.follow(id);
    let lines = match live {
        Some(lines) => lines,
        None => app
            .svc
            .queue
            .log(id)
            .map_err(Problem::internal)?
            .map(|l| l.lines().map(str::to_string).collect())
            .unwrap_or_default(),
    };
    Ok((job, lines))
}

pub async fn job(State(app): State<App>, Path(id): Path<i64>, headers: HeaderMap) -> Reply {
    app.may_read(&headers)?;
    let (job, log) = job_with_log(&app, id)?;
    let mut doc = serde_json::to_value(&job).map_err(Problem::internal)?;
    doc["log"] = json!(log);
    Ok(Json(doc).into_response())
}

/// The live log of a job as Server-Sent Events: each line a `message`
/// event whose id is its number, then an `end` event when the job ends (at
/// once when it ended already). A reconnecting client's `Last-Event-ID`
/// skips what it has.
pub async fn events(
    State(app): State<App>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    app.may_read(&headers)?;
    let (live, rx) = app.svc.board.follow(id);
    let (lines, running) = match live {
        Some(lines) => (lines, true),
        None => match job_with_log(&app, id)? {
            // not started yet: every line comes from the channel
            (job, _) if job.state == JobState::Queued => (vec![], true),
            (_, lines) => (lines, false),
        },
    };
    struct Follow {
        /// The number of the first pending line.
        first: usize,
        pending: std::collections::VecDeque<String>,
        rx: tokio::sync::broadcast::Receiver<LogEvent>,
        next: usize,
        running: bool,
        done: bool,
    }
    // a reconnecting browser says the last line it got
    let seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .map_or(0, |last| last + 1);
    let state = Follow {
        next: lines.len().max(seen),
        first: seen.min(lines.len()),
        pending: lines.into_iter().skip(seen).collect(),
        rx,
        running,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, move |mut s| async move {
        if let Some(line) = s.pending.pop_front() {
            let n = s.first;
            s.first += 1;
            return Some((Ok(Event::default().id(n.to_string()).data(line)), s));
        }
        if s.done {
            return None;
        }
        while s.running {
            match s.rx.recv().await {
                Ok(LogEvent::Line { job, n, text }) if job == id && n >= s.next => {
                    s.next = n + 1;
                    return Some((Ok(Event::default().id(n.to_string()).data(text)), s));
                }
                Ok(LogEvent::End { job }) if job == id => break,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            }
        }
        s.done = true;
        // (an event without data is not dispatched)
        Some((Ok(Event::default().event("end").data("end")), s))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

pub async fn deliveries(State(app): State<App>, headers: HeaderMap) -> Reply {
    app.may_read(&headers)?;
    Ok(
        Json(crate::notify::deliveries(&app.svc.queue, 200).map_err(Problem::internal)?)
            .into_response(),
    )
}
