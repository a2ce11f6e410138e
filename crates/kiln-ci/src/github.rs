//! A factory as a GitHub Actions workflow: a `plan` job, one job per image
//! (a matrix over platforms where it has several, on native runners where
//! GitHub has one), an index job per multi-platform image, and a `lock`
//! job that merges what every image job handed on into kiln.lock.
//!
//! Every string is written as a JSON string, which YAML reads as the same
//! string, so no name or path can change the file's structure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// `--force` when the run was dispatched with `force`.
const FORCE: &str = "${{ inputs.force && '--force' || '' }}";

use chrono_tz::Tz;

use crate::cron::{self, CronError};

/// One image of the factory, as the workflow needs it.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    /// The factory images it is built on.
    pub needs: Vec<String>,
    /// `linux/amd64`, …; empty: one image for the runner's platform.
    pub platforms: Vec<String>,
    /// Files and folders (from the repository's root) whose change makes
    /// it stale: its context, Dockerfile and factory file.
    pub paths: Vec<String>,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The factory's folders (or files), from the repository's root.
    pub factory: Vec<String>,
    /// In dependency order.
    pub images: Vec<Image>,
    /// The factory's schedules (each image's) and their time zones.
    pub schedules: Vec<(String, Tz)>,
    /// The shell command that installs kiln on a runner.
    pub install: String,
    /// Open a pull request with the new kiln.lock instead of pushing it.
    pub pull_request: bool,
    /// The year whose time-zone offsets the schedule is written for.
    pub year: i32,
    /// Registries every job logs in to before it runs kiln: the user is
    /// the secret `KILN_REGISTRY_USER` or the actor, the
    /// password the secret `KILN_REGISTRY_PASSWORD` or the job's token
    /// (enough for ghcr.io with `packages: write`).
    pub login: Vec<String>,
}

/// The workflow, and what a person should be told about it.
#[derive(Debug, Clone)]
pub struct Generated {
    pub text: String,
    /// Images whose name is not a valid job id: (image, job id).
    pub renamed: Vec<(String, String)>,
    /// Platforms built under QEMU for want of a native runner.
    pub emulated: Vec<String>,
}

/// The runner a platform builds on natively, if GitHub has one.
pub fn native_runner(platform: &str) -> Option<&'static str> {
    match platform {
        "linux/amd64" => Some("ubuntu-24.04"),
        "linux/arm64" | "linux/arm64/v8" => Some("ubuntu-24.04-arm"),
        _ => None,
    }
}

/// A job id for an image: `img-` and the name with every character a job
/// id cannot hold (anything but letters, digits, `-` and `_`) as `_`.
pub fn job_id(image: &str) -> String {
    let mapped: String = image
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("img-{mapped}")
}

/// The jobs whose results later images wait for: the image's job and, for
/// a multi-platform image, its index job (a platform that failed skips the
/// index job, so both are asked).
fn done_jobs(img: &Image) -> Vec<String> {
    let mut v = vec![job_id(&img.name)];
    if img.platforms.len() > 1 {
        v.push(format!("{}-index", job_id(&img.name)));
    }
    v
}

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}

/// The generated workflow.
pub fn workflow(spec: &Spec) -> Result<Generated, CronError> {
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut renamed = Vec::new();
    for img in &spec.images {
        let id = job_id(&img.name);
        if id != format!("img-{}", img.name) {
            renamed.push((img.name.clone(), id.clone()));
        }
        if let Some(other) = ids.insert(id.clone(), img.name.clone()) {
            // two names mapped onto one id: number the second
            let id2 = format!("{id}-{}", ids.len());
            ids.insert(id.clone(), other);
            ids.insert(id2.clone(), img.name.clone());
            renamed.push((img.name.clone(), id2));
        }
    }
    let mut w = String::new();
    let f: String = spec
        .factory
        .iter()
        .map(|d| format!(" -f {}", shell_word(d)))
        .collect();
    header(&mut w, spec, &renamed)?;
    plan_job(&mut w, spec, &f);
    let mut emulated = Vec::new();
    for img in &spec.images {
        image_job(&mut w, spec, img, &f, &mut emulated);
        if img.platforms.len() > 1 {
            index_job(&mut w, spec, img, &f);
        }
    }
    lock_job(&mut w, spec, &f);
    emulated.sort();
    emulated.dedup();
    Ok(Generated {
        text: w,
        renamed,
        emulated,
    })
}

fn header(w: &mut String, spec: &Spec, renamed: &[(String, String)]) -> Result<(), CronError> {
    let _ = writeln!(
        w,
        "# Generated by `kiln ci github` from the factory in {}.",
        spec.factory.join(", ")
    );
    let _ = writeln!(
        w,
        "# Do not edit: change the factory and run `kiln ci github` again;"
    );
    let _ = writeln!(
        w,
        "# `kiln ci github --check` fails while this file is out of date."
    );
    for (image, id) in renamed {
        let _ = writeln!(
            w,
            "# image {image:?} is job {id} (a job id holds only letters, digits, - and _)"
        );
    }
    let _ = writeln!(w, "name: kiln factory");
    let _ = writeln!(w, "on:");
    if !spec.schedules.is_empty() {
        let _ = writeln!(w, "  schedule:");
    }
    let mut written: Vec<String> = Vec::new();
    for (expr, tz) in &spec.schedules {
        let utc = cron::to_utc(expr, *tz, spec.year)?;
        let _ = writeln!(
            w,
            "    # the factory's schedule {expr:?} in {tz}; GitHub's cron is UTC."
        );
        if utc.offsets.len() > 1 {
            let _ = writeln!(
                w,
                "    # {tz} moves between UTC offsets (daylight-saving time), so the schedule is"
            );
            let _ = writeln!(
                w,
                "    # written for each: one line fires at the local time, the other an hour off,"
            );
            let _ = writeln!(
                w,
                "    # where `kiln plan` (reading the schedule in {tz}) finds nothing due."
            );
        }
        for l in utc.lines {
            if !written.contains(&l) {
                let _ = writeln!(w, "    - cron: {}", q(&l));
                written.push(l);
            }
        }
    }
    let _ = writeln!(w, "  workflow_dispatch:");
    let _ = writeln!(w, "    inputs:");
    let _ = writeln!(w, "      images:");
    let _ = writeln!(
        w,
        "        description: \"Images to bake (space-separated; empty: every stale image)\""
    );
    let _ = writeln!(w, "        type: string");
    let _ = writeln!(w, "        default: \"\"");
    let _ = writeln!(w, "      force:");
    let _ = writeln!(
        w,
        "        description: \"Rebuild them even when nothing changed\""
    );
    let _ = writeln!(w, "        type: boolean");
    let _ = writeln!(w, "        default: false");
    let _ = writeln!(w, "  push:");
    let _ = writeln!(w, "    paths:");
    let mut paths: Vec<&String> = spec.images.iter().flat_map(|i| &i.paths).collect();
    paths.sort();
    paths.dedup();
    for p in paths {
        let _ = writeln!(w, "      - {}", q(p));
    }
    let _ = writeln!(w, "permissions:");
    let _ = writeln!(w, "  contents: write");
    let _ = writeln!(w, "  packages: write");
    if spec.pull_request {
        let _ = writeln!(w, "  pull-requests: write");
    }
    let _ = writeln!(w, "concurrency:");
    let _ = writeln!(w, "  group: kiln-factory");
    let _ = writeln!(w, "  cancel-in-progress: false");
    let _ = writeln!(w, "jobs:");
    Ok(())
}

fn install(w: &mut String, spec: &Spec) {
    let _ = writeln!(w, "      - uses: actions/checkout@v4");
    let _ = writeln!(w, "      - name: install kiln");
    let _ = writeln!(w, "        run: {}", q(&spec.install));
    for registry in &spec.login {
        let _ = writeln!(w, "      - name: {}", q(&format!("log in to {registry}")));
        let _ = writeln!(w, "        env:");
        let _ = writeln!(
            w,
            "          KILN_REGISTRY_USER: ${{{{ secrets.KILN_REGISTRY_USER || github.actor }}}}"
        );
        let _ = writeln!(
            w,
            "          KILN_REGISTRY_PASSWORD: ${{{{ secrets.KILN_REGISTRY_PASSWORD || github.token }}}}"
        );
        // for kiln as the runner's user (plan, index) and as root (bake)
        let login = format!(
            "kiln login {} -u \"$KILN_REGISTRY_USER\" --password-stdin",
            shell_word(registry)
        );
        let _ = writeln!(
            w,
            "        run: {}",
            q(&format!(
                "echo \"$KILN_REGISTRY_PASSWORD\" | {login} && echo \"$KILN_REGISTRY_PASSWORD\" | sudo {login}"
            ))
        );
    }
}

/// Every fragment the jobs before it uploaded, into `kiln-fragments/`.
fn download(w: &mut String) {
    let _ = writeln!(w, "      - uses: actions/download-artifact@v4");
    let _ = writeln!(w, "        with:");
    let _ = writeln!(w, "          pattern: kiln-fragment-*");
    let _ = writeln!(w, "          path: kiln-fragments");
    let _ = writeln!(w, "          merge-multiple: true");
}

fn plan_job(w: &mut String, spec: &Spec, f: &str) {
    let _ = writeln!(w, "  plan:");
    let _ = writeln!(w, "    runs-on: ubuntu-24.04");
    let _ = writeln!(w, "    outputs:");
    let _ = writeln!(w, "      stale: ${{{{ steps.plan.outputs.stale }}}}");
    let _ = writeln!(w, "    steps:");
    install(w, spec);
    let _ = writeln!(w, "      - name: kiln plan");
    let _ = writeln!(w, "        id: plan");
    let _ = writeln!(w, "        env:");
    let _ = writeln!(w, "          IMAGES: ${{{{ inputs.images }}}}");
    let _ = writeln!(w, "          FORCE: {FORCE}");
    let _ = writeln!(
        w,
        "        run: {}",
        q(&format!(
            // the stale images of the plan's waves, as a JSON list
            "echo \"stale=$(kiln plan{f} --json $FORCE $IMAGES | jq -c '[.waves[][]]')\" >> \"$GITHUB_OUTPUT\""
        ))
    );
}

/// The `if:` of a job that builds `img`: it is stale, nothing it stands
/// on failed, and a skipped upstream (not stale) does not skip it.
fn condition(img: &Image, spec: &Spec) -> String {
    let mut c = format!(
        "${{{{ !cancelled() && contains(fromJSON(needs.plan.outputs.stale), {}) ",
        single(&img.name)
    );
    for n in &img.needs {
        if let Some(up) = spec.images.iter().find(|i| &i.name == n) {
            for j in done_jobs(up) {
                let _ = write!(c, "&& needs.{j}.result != 'failure' ");
            }
        }
    }
    c.push_str("}}");
    c
}

/// A string in a GitHub expression: single-quoted, quotes doubled.
fn single(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn needs(img: &Image, spec: &Spec) -> String {
    let mut n = vec!["plan".to_string()];
    n.extend(
        spec.images
            .iter()
            .filter(|i| img.needs.contains(&i.name))
            .flat_map(done_jobs),
    );
    format!("[{}]", n.join(", "))
}

fn image_job(w: &mut String, spec: &Spec, img: &Image, f: &str, emulated: &mut Vec<String>) {
    let id = job_id(&img.name);
    let _ = writeln!(w, "  {id}:");
    let _ = writeln!(w, "    name: {}", q(&format!("bake {}", img.name)));
    let _ = writeln!(w, "    needs: {}", needs(img, spec));
    let _ = writeln!(w, "    if: {}", condition(img, spec));
    let multi = img.platforms.len() > 1;
    let single_emulated = !multi
        && img
            .platforms
            .first()
            .is_some_and(|p| native_runner(p).is_none());
    if multi {
        matrix(w, img, emulated);
        let _ = writeln!(w, "    runs-on: ${{{{ matrix.runner }}}}");
    } else {
        let runner = img.platforms.first().and_then(|p| native_runner(p));
        if single_emulated {
            emulated.extend(img.platforms.iter().cloned());
            let _ = writeln!(
                w,
                "    # no GitHub runner for {}: built under QEMU user emulation",
                img.platforms[0]
            );
        }
        let _ = writeln!(w, "    runs-on: {}", q(runner.unwrap_or("ubuntu-24.04")));
    }
    let _ = writeln!(w, "    steps:");
    install(w, spec);
    if multi || single_emulated {
        let _ = writeln!(w, "      - name: QEMU user emulation");
        if multi {
            let _ = writeln!(w, "        if: ${{{{ matrix.qemu }}}}");
        }
        let _ = writeln!(w, "        run: sudo apt-get update && sudo apt-get install -y qemu-user-static binfmt-support");
    }
    let platform_arg = match (multi, single_emulated) {
        (true, _) => " --platform ${{ matrix.platform }}".to_string(),
        (false, true) => format!(" --platform {}", shell_word(&img.platforms[0])),
        _ => String::new(),
    };
    download(w);
    let slug = if img.platforms.len() > 1 {
        format!("{}-${{{{ matrix.slug }}}}", img.name)
    } else {
        img.name.clone()
    };
    // one platform of several is pushed by digest: its index job tags it
    let by_digest = if multi { " --push-by-digest" } else { "" };
    let _ = writeln!(w, "      - name: {}", q(&format!("kiln bake {}", img.name)));
    let _ = writeln!(w, "        env:");
    let _ = writeln!(w, "          FORCE: {FORCE}");
    let _ = writeln!(
        w,
        "        run: {}",
        q(&format!(
            "sudo kiln bake{f} {}{platform_arg}{by_digest} $FORCE --fragments kiln-fragments --fragment \"kiln-out/{slug}.toml\"",
            shell_word(&img.name)
        ))
    );
    upload(w, &slug);
}

/// A matrix over the image's platforms, each on its native runner or,
/// where GitHub has none, on amd64 under QEMU.
fn matrix(w: &mut String, img: &Image, emulated: &mut Vec<String>) {
    let _ = writeln!(w, "    strategy:");
    let _ = writeln!(w, "      fail-fast: false");
    let _ = writeln!(w, "      matrix:");
    let _ = writeln!(w, "        include:");
    for p in &img.platforms {
        let native = native_runner(p);
        let _ = writeln!(w, "          - platform: {}", q(p));
        let _ = writeln!(
            w,
            "            runner: {}",
            q(native.unwrap_or("ubuntu-24.04"))
        );
        let _ = writeln!(w, "            slug: {}", q(&p.replace('/', "-")));
        if native.is_none() {
            emulated.push(p.clone());
            let _ = writeln!(
                w,
                "            # no GitHub runner for {p}: built under QEMU user emulation"
            );
        }
        let _ = writeln!(w, "            qemu: {}", native.is_none());
    }
}

fn upload(w: &mut String, slug: &str) {
    let _ = writeln!(w, "      - uses: actions/upload-artifact@v4");
    let _ = writeln!(w, "        with:");
    let _ = writeln!(w, "          name: {}", q(&format!("kiln-fragment-{slug}")));
    let _ = writeln!(w, "          path: {}", q(&format!("kiln-out/{slug}.toml")));
}

fn index_job(w: &mut String, spec: &Spec, img: &Image, f: &str) {
    let id = format!("{}-index", job_id(&img.name));
    let _ = writeln!(w, "  {id}:");
    let _ = writeln!(w, "    name: {}", q(&format!("index {}", img.name)));
    let _ = writeln!(w, "    needs: [plan, {}]", job_id(&img.name));
    let _ = writeln!(
        w,
        "    if: ${{{{ !cancelled() && needs.{}.result == 'success' }}}}",
        job_id(&img.name)
    );
    let _ = writeln!(w, "    runs-on: ubuntu-24.04");
    let _ = writeln!(w, "    steps:");
    install(w, spec);
    download(w);
    let _ = writeln!(
        w,
        "      - name: {}",
        q(&format!("kiln ci index {}", img.name))
    );
    let _ = writeln!(
        w,
        "        run: {}",
        q(&format!(
            "kiln ci index{f} {} --fragments kiln-fragments --fragment \"kiln-out/{}.toml\"",
            shell_word(&img.name),
            img.name
        ))
    );
    upload(w, &img.name);
}

fn lock_job(w: &mut String, spec: &Spec, f: &str) {
    let all: Vec<String> = std::iter::once("plan".to_string())
        .chain(spec.images.iter().flat_map(done_jobs))
        .collect();
    let _ = writeln!(w, "  lock:");
    let _ = writeln!(w, "    name: kiln.lock");
    let _ = writeln!(w, "    needs: [{}]", all.join(", "));
    let _ = writeln!(
        w,
        "    # runs when some images failed too, so the successes are recorded"
    );
    let _ = writeln!(w, "    if: ${{{{ !cancelled() && needs.plan.result == 'success' && needs.plan.outputs.stale != '[]' }}}}");
    let _ = writeln!(w, "    runs-on: ubuntu-24.04");
    let _ = writeln!(w, "    steps:");
    install(w, spec);
    download(w);
    let _ = writeln!(w, "      - name: kiln lock merge");
    let _ = writeln!(
        w,
        "        run: {}",
        q(&format!("kiln lock merge{f} kiln-fragments"))
    );
    let message = "kiln.lock: images baked by the kiln factory workflow";
    let _ = writeln!(
        w,
        "      - name: {}",
        q(if spec.pull_request {
            "open a pull request"
        } else {
            "commit kiln.lock"
        })
    );
    let _ = writeln!(w, "        env:");
    let _ = writeln!(w, "          GH_TOKEN: ${{{{ github.token }}}}");
    let mut run = String::from(
        "git config user.name 'kiln factory' && git config user.email 'kiln@users.noreply.github.com' && ",
    );
    if spec.pull_request {
        let _ = write!(
            run,
            "git switch -c \"kiln/lock-$GITHUB_RUN_ID\" && git add -A '*kiln.lock' && \
             (git diff --cached --quiet || (git commit -m {msg} && git push origin HEAD && \
             gh pr create --fill --title {msg}))",
            msg = shell_word(message)
        );
    } else {
        let _ = write!(
            run,
            "git add -A '*kiln.lock' && (git diff --cached --quiet || (git commit -m {} && git push))",
            shell_word(message)
        );
    }
    let _ = writeln!(w, "        run: {}", q(&run));
}

/// `s` as one word of a POSIX shell command.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        let img = |name: &str, needs: &[&str], platforms: &[&str]| Image {
            name: name.into(),
            needs: needs.iter().map(|s| s.to_string()).collect(),
            platforms: platforms.iter().map(|s| s.to_string()).collect(),
            paths: vec![format!("factory/{name}/**"), "factory/kiln.toml".into()],
        };
        Spec {
            factory: vec!["factory".into()],
            images: vec![
                img("base", &[], &["linux/amd64", "linux/arm64"]),
                img("app.v2", &["base"], &["linux/amd64", "linux/riscv64"]),
                img("vm", &["base"], &[]),
            ],
            schedules: vec![("0 4 * * 1".into(), chrono_tz::Europe::Berlin)],
            install: "cargo install --locked kiln-cli".into(),
            pull_request: false,
            year: 2026,
            login: vec![],
        }
    }

    #[test]
    fn jobs_follow_the_graph_and_odd_names_are_mapped() {
        let g = workflow(&spec()).unwrap();
        assert_eq!(
            g.renamed,
            [("app.v2".to_string(), "img-app_v2".to_string())]
        );
        assert_eq!(g.emulated, ["linux/riscv64"]);
        let t = &g.text;
        assert!(
            t.contains(
                "  img-app_v2:\n    name: \"bake app.v2\"\n    needs: [plan, img-base, img-base-index]\n"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "needs.img-base.result != 'failure' && needs.img-base-index.result != 'failure'"
            ),
            "{t}"
        );
        assert!(
            t.contains("    - cron: \"0 3 * * 1\"\n    - cron: \"0 2 * * 1\"\n"),
            "{t}"
        );
        assert!(t.contains("# image \"app.v2\" is job img-app_v2"), "{t}");
        assert!(
            t.contains(
                "  img-vm:\n    name: \"bake vm\"\n    needs: [plan, img-base, img-base-index]\n"
            ),
            "{t}"
        );
    }
}
