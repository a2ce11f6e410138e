//! The dashboard: server-rendered HTML (no JavaScript build step; the live
//! log page has a few lines of inline script for its event stream).

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::api::{find, job_with_log, with_history};
use super::svg;
use super::{App, Problem};
use crate::board::ImageView;

type Reply = Result<Response, Problem>;

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:left}
.st{font-weight:bold}code{font-size:.9em}pre{background:#f5f5f5;padding:1em;overflow:auto}
.fresh{color:#2e7d32}.stale{color:#ef6c00}.baking{color:#1565c0}.failed{color:#c62828}.never-built{color:#757575}";

fn page(title: &str, body: Markup) -> Response {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { (title) " · kiln" }
                    style { (PreEscaped(STYLE)) }
                }
                body {
                    nav { a href="/" { "kiln" } " · " a href="/api/factories" { "API" } " · " a href="/metrics" { "metrics" } }
                    (body)
                }
            }
        }
        .into_string(),
    )
    .into_response()
}

/// `3m`, `5h`, `2d`.
pub fn age(seconds: i64) -> String {
    match seconds.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
}

fn short(digest: Option<&str>) -> String {
    digest.map_or("-".into(), |d| d.get(..19).unwrap_or(d).to_string())
}

fn last(im: &ImageView) -> String {
    im.last.as_ref().map_or("-".into(), |l| {
        format!("{} ({}/{} tests)", l.outcome, l.tests_passed, l.tests_total)
    })
}

pub async fn overview(State(app): State<App>, headers: HeaderMap) -> Reply {
    app.may_read(&headers)?;
    let factories = app.svc.board.factories();
    let jobs = app.svc.queue.recent(10).map_err(Problem::internal)?;
    Ok(page(
        "Factories",
        html! {
            h1 { "Factories" }
            @for f in &factories {
                section class="factory" data-factory=(f.id) {
                    h2 { (f.id) " " small { code { (f.dir) } } }
                    @if let Some(e) = &f.error { p class="failed" { "Cannot plan: " (e) } }
                    @if let Some(j) = f.running { p { "Baking now: " a href={"/jobs/" (j)} { "job " (j) " (live log)" } } }
                    p { "Planned " (when(f.planned_at)) "; next schedule tick " (when(f.next_tick)) }
                    table {
                        tr { th { "image" } th { "status" } th { "version" } th { "age" } th { "base age" }
                             th { "updates" } th { "security" } th { "next run" } th { "last bake" } }
                        @for im in &f.images {
                            tr class="image" data-image=(im.name) {
                                td { a href={"/factories/" (f.id) "/images/" (im.name)} { (im.name) } }
                                td class={"st " (im.status)} { (im.status) }
                                td { (im.version.as_deref().unwrap_or("-")) }
                                td { (im.age_seconds.map_or("-".into(), age)) }
                                td { (im.base_age_seconds.map_or("-".into(), age)) }
                                td { (im.pending_updates) }
                                td { (im.security_updates) }
                                td { (when(im.next_run)) }
                                td { (last(im)) }
                            }
                        }
                    }
                    h3 { "Lineage" }
                    (svg::lineage(f))
                }
            }
            h2 { "Recent jobs" }
            table {
                tr { th { "job" } th { "state" } th { "why" } th { "queued" } }
                @for j in &jobs {
                    tr { td { a href={"/jobs/" (j.id)} { (j.id) } } td { (format!("{:?}", j.state).to_lowercase()) }
                         td { (j.reason) } td { (when(Some(j.queued_at))) } }
                }
            }
        },
    ))
}

pub async fn lineage(
    State(app): State<App>,
    Path(factory): Path<String>,
    headers: HeaderMap,
) -> Reply {
    app.may_read(&headers)?;
    let (_, f, _) = find(&app, &factory, None)?;
    Ok((
        [(header::CONTENT_TYPE, "image/svg+xml")],
        svg::lineage(&f).into_string(),
    )
        .into_response())
}

pub async fn image(
    State(app): State<App>,
    Path((factory, image)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    app.may_read(&headers)?;
    let (i, im, history) = with_history(&app, &factory, &image)?;
    let running = app.svc.board.factories().get(i).and_then(|f| f.running);
    Ok(page(
        &image,
        html! {
            h1 { (image) " " small class={"st " (im.status)} { (im.status) } }
            p { img src={"/badge/" (factory) "/" (image) ".svg"} alt="status badge"; }
            p { "Badge for a README: " code { "![" (image) "](http://HOST/badge/" (factory) "/" (image) ".svg)" } }
            @if let Some(j) = running { p { "Baking now: " a href={"/jobs/" (j)} { "job " (j) " (live log)" } } }
            table {
                tr { th { "version" } td { (im.version.as_deref().unwrap_or("-")) } }
                tr { th { "digest" } td { code { (im.digest.as_deref().unwrap_or("-")) } } }
                tr { th { "baked" } td { (when(im.baked_at)) } }
                tr { th { "built on" } td { (im.depends_on.join(", ")) } }
                tr { th { "next scheduled run" } td { (when(im.next_run)) } }
                tr { th { "pending updates" } td { (im.pending_updates) " (" (im.security_updates) " security)" } }
                tr { th { "stale because" } td { (kiln_factory::plan::describe(&im.reasons)) } }
                tr { th { "published to" } td { @for p in &im.published { code { (p) } br; } } }
            }
            h2 { "Versions" }
            table class="history" {
                tr { th { "finished" } th { "outcome" } th { "version" } th { "digest" } th { "tests" } th { "seconds" } th { "published to" } th { "why" } }
                @for e in &history {
                    tr {
                        td { (e.finished) }
                        td class=(if matches!(e.outcome.as_str(), "built" | "unchanged") { "fresh" } else { "failed" }) { (e.outcome) }
                        td { (e.version.as_deref().unwrap_or("-")) }
                        td { code { (short(e.digest.as_deref())) } }
                        td { (e.tests_passed) "/" (e.tests_total) }
                        td { (format!("{:.1}", e.seconds)) }
                        td { @for p in &e.published { code { (p) } br; } }
                        td { (e.reasons.join("; ")) }
                    }
                }
            }
        },
    ))
}

pub async fn job(State(app): State<App>, Path(id): Path<i64>, headers: HeaderMap) -> Reply {
    app.may_read(&headers)?;
    let (job, mut lines) = job_with_log(&app, id)?;
    let live = matches!(
        job.state,
        crate::queue::State::Running | crate::queue::State::Queued
    );
    if job.state == crate::queue::State::Queued {
        lines.clear(); // a retry's earlier log; its new lines will stream
    }
    Ok(page(
        &format!("Job {id}"),
        html! {
            h1 { "Job " (id) }
            p { "State: " span id="state" { (format!("{:?}", job.state).to_lowercase()) } " · attempt " (job.attempts) }
            p { (job.reason) }
            @if let Some(e) = &job.error { p class="failed" { (e) } }
            pre id="log" { @for l in &lines { (l) "\n" } }
            @if live {
                script { (PreEscaped(format!(
                    "(function(){{var log=document.getElementById('log');var n={};\
                     var es=new EventSource('/api/jobs/{id}/events');\
                     es.onmessage=function(e){{if(n>0){{n--;return;}}log.appendChild(document.createTextNode(e.data+'\\n'));}};\
                     es.addEventListener('end',function(){{es.close();document.getElementById('state').textContent='ended';}});}})();",
                    lines.len()
                ))) }
            }
        },
    ))
}

pub async fn badge(State(app): State<App>, Path((factory, file)): Path<(String, String)>) -> Reply {
    let image = file.strip_suffix(".svg").unwrap_or(&file);
    let (_, _, im) = find(&app, &factory, Some(image))?;
    let im = im.expect("asked for");
    let message = match (im.status, im.age_seconds) {
        ("fresh", Some(a)) => format!("fresh · {}", age(a)),
        (s, _) => s.to_string(),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        svg::badge(image, &message, svg::colour(im.status)).into_string(),
    )
        .into_response())
}
