//! A local run of a workflow `kiln ci github` wrote, as GitHub Actions
//! would run it: each job (each matrix row) in a fresh clone of the
//! repository with its own empty kiln store and home directory, jobs in
//! `needs:` order with every job whose needs are done started at once,
//! artifacts handed on only through `upload-artifact`/`download-artifact`.
//! It knows the expressions kiln writes and fails on any other, so a
//! change to the generator cannot slip past it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use yaml_rust2::Yaml;

/// What one job (every row of its matrix) came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    Success,
    Failure,
    Skipped,
}

impl JobResult {
    fn word(&self) -> &'static str {
        match self {
            JobResult::Success => "success",
            JobResult::Failure => "failure",
            JobResult::Skipped => "skipped",
        }
    }
}

/// One run of the workflow.
pub struct Run {
    /// The bare repository the jobs clone and the lock job pushes to.
    pub origin: PathBuf,
    /// Where every job's directory goes (`JOB[-ROW]/{work,home,store}`).
    pub dir: PathBuf,
    /// Where `kiln` and a `sudo` that runs its command are.
    pub bin: PathBuf,
    /// Environment every step gets (the runner's own, such as
    /// SOURCE_DATE_EPOCH).
    pub env: Vec<(String, String)>,
    /// `workflow_dispatch` inputs.
    pub force: bool,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub results: BTreeMap<String, JobResult>,
    /// Each job row's output (`JOB` or `JOB (ROW)` → its steps' stdout and
    /// stderr).
    pub logs: BTreeMap<String, String>,
    /// The order jobs started in, one batch of concurrent jobs per entry.
    pub batches: Vec<Vec<String>>,
    /// Each job row's seconds in its `run` steps but the one that installs
    /// kiln.
    pub seconds: BTreeMap<String, f64>,
}

struct State {
    results: BTreeMap<String, JobResult>,
    outputs: BTreeMap<String, BTreeMap<String, String>>,
    artifacts: BTreeMap<String, (String, Vec<u8>)>,
    logs: BTreeMap<String, String>,
    seconds: BTreeMap<String, f64>,
}

fn needs_of(job: &Yaml) -> Vec<String> {
    match &job["needs"] {
        Yaml::Array(a) => a
            .iter()
            .filter_map(|n| n.as_str().map(String::from))
            .collect(),
        Yaml::String(n) => vec![n.clone()],
        _ => vec![],
    }
}

impl Run {
    /// Runs `workflow` (its text) to the end.
    pub fn run(&self, workflow: &str) -> Report {
        let doc = &yaml_rust2::YamlLoader::load_from_str(workflow).unwrap()[0];
        let jobs: Vec<(String, Yaml)> = doc["jobs"]
            .as_hash()
            .expect("jobs")
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
            .collect();
        let state = Mutex::new(State {
            results: BTreeMap::new(),
            outputs: BTreeMap::new(),
            artifacts: BTreeMap::new(),
            logs: BTreeMap::new(),
            seconds: BTreeMap::new(),
        });
        let mut batches = Vec::new();
        loop {
            let ready: Vec<&(String, Yaml)> = {
                let st = state.lock().unwrap();
                jobs.iter()
                    .filter(|(id, job)| {
                        !st.results.contains_key(id)
                            && needs_of(job).iter().all(|n| st.results.contains_key(n))
                    })
                    .collect()
            };
            if ready.is_empty() {
                break;
            }
            batches.push(ready.iter().map(|(id, _)| id.clone()).collect());
            std::thread::scope(|sc| {
                for (id, job) in &ready {
                    let state = &state;
                    sc.spawn(move || {
                        let r = self.job(id, job, state);
                        state.lock().unwrap().results.insert(id.clone(), r);
                    });
                }
            });
        }
        let st = state.into_inner().unwrap();
        assert_eq!(
            st.results.len(),
            jobs.len(),
            "jobs never ready (a needs: cycle or unknown job)"
        );
        Report {
            results: st.results,
            logs: st.logs,
            batches,
            seconds: st.seconds,
        }
    }

    /// Runs one job: every matrix row at once.
    fn job(&self, id: &str, job: &Yaml, state: &Mutex<State>) -> JobResult {
        let run_it = {
            let st = state.lock().unwrap();
            match job["if"].as_str() {
                Some(cond) => self.condition(cond, &st),
                None => needs_of(job)
                    .iter()
                    .all(|n| st.results[n] == JobResult::Success),
            }
        };
        if !run_it {
            return JobResult::Skipped;
        }
        let rows: Vec<BTreeMap<String, String>> = match &job["strategy"]["matrix"]["include"] {
            Yaml::Array(rows) => rows
                .iter()
                .map(|r| {
                    r.as_hash()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| {
                            let v = match v {
                                Yaml::Boolean(b) => b.to_string(),
                                other => other.as_str().expect("a matrix value").to_string(),
                            };
                            (k.as_str().unwrap().to_string(), v)
                        })
                        .collect()
                })
                .collect(),
            _ => vec![BTreeMap::new()],
        };
        let ok: Vec<bool> = std::thread::scope(|sc| {
            let handles: Vec<_> = rows
                .iter()
                .map(|row| sc.spawn(move || self.row(id, job, row, state)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        if ok.iter().all(|o| *o) {
            JobResult::Success
        } else {
            JobResult::Failure
        }
    }

    /// One matrix row of a job on a runner of its own.
    fn row(
        &self,
        id: &str,
        job: &Yaml,
        row: &BTreeMap<String, String>,
        state: &Mutex<State>,
    ) -> bool {
        let label = match row.get("slug") {
            Some(slug) => format!("{id} ({slug})"),
            None => id.to_string(),
        };
        let root = self.dir.join(label.replace([' ', '(', ')'], "_"));
        let (work, home, store) = (root.join("work"), root.join("home"), root.join("store"));
        fs::create_dir_all(&home).unwrap();
        let mut log = String::new();
        let mut step_outputs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut ok = true;
        let mut seconds = 0.0;
        for (i, step) in job["steps"].as_vec().expect("steps").iter().enumerate() {
            if let Some(cond) = step["if"].as_str() {
                let inner = strip_expr(cond);
                let value = self.value(inner, row, &step_outputs);
                if value != "true" {
                    continue;
                }
            }
            let done = match step["uses"].as_str() {
                Some(action) => {
                    let with: BTreeMap<String, String> = step["with"]
                        .as_hash()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| {
                            let v = match v {
                                Yaml::Boolean(b) => b.to_string(),
                                other => other.as_str().unwrap_or_default().to_string(),
                            };
                            (
                                k.as_str().unwrap().to_string(),
                                self.substitute(&v, row, &step_outputs),
                            )
                        })
                        .collect();
                    self.action(action, &with, &work, state, &mut log)
                }
                None => {
                    let script = step["run"].as_str().expect("a step runs or uses");
                    let text = self.substitute(script, row, &step_outputs);
                    let output = root.join(format!("output-{i}"));
                    fs::write(&output, "").unwrap();
                    let mut cmd = Command::new("bash");
                    cmd.arg("-e").arg("-c").arg(&text).current_dir(&work);
                    cmd.env(
                        "PATH",
                        format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap()),
                    )
                    .env("HOME", &home)
                    .env("KILN_STORE", &store)
                    .env("GITHUB_OUTPUT", &output)
                    .env_remove("SOURCE_DATE_EPOCH");
                    for (k, v) in &self.env {
                        cmd.env(k, v);
                    }
                    if let Some(env) = step["env"].as_hash() {
                        for (k, v) in env {
                            let v = self.substitute(v.as_str().unwrap_or(""), row, &step_outputs);
                            cmd.env(k.as_str().unwrap(), v);
                        }
                    }
                    let started = std::time::Instant::now();
                    let out = cmd.output().unwrap();
                    if step["name"].as_str() != Some("install kiln") {
                        seconds += started.elapsed().as_secs_f64();
                    }
                    log.push_str(&format!(
                        "$ {text}\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                    if let Some(step_id) = step["id"].as_str() {
                        let said = fs::read_to_string(&output).unwrap();
                        let outs = said
                            .lines()
                            .filter_map(|l| l.split_once('='))
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect();
                        step_outputs.insert(step_id.to_string(), outs);
                    }
                    out.status.success()
                }
            };
            if !done {
                ok = false;
                break;
            }
        }
        let mut st = state.lock().unwrap();
        if let Some(outs) = job["outputs"].as_hash() {
            let mut mine = BTreeMap::new();
            for (k, v) in outs {
                let v = self.substitute(v.as_str().unwrap(), row, &step_outputs);
                mine.insert(k.as_str().unwrap().to_string(), v);
            }
            st.outputs.insert(id.to_string(), mine);
        }
        st.seconds.insert(label.clone(), seconds);
        st.logs.insert(label, log);
        ok
    }

    /// The actions kiln's workflow uses.
    fn action(
        &self,
        action: &str,
        with: &BTreeMap<String, String>,
        work: &Path,
        state: &Mutex<State>,
        log: &mut String,
    ) -> bool {
        let with = |k: &str| with.get(k).map(String::as_str).unwrap_or_default();
        match action {
            "actions/checkout@v4" => Command::new("git")
                .args(["clone", "-q"])
                .arg(&self.origin)
                .arg(work)
                .status()
                .unwrap()
                .success(),
            "actions/download-artifact@v4" => {
                let prefix = with("pattern").strip_suffix('*').expect("a NAME-* pattern");
                assert_eq!(with("merge-multiple"), "true");
                let into = work.join(with("path"));
                let st = state.lock().unwrap();
                for (name, (file, bytes)) in &st.artifacts {
                    if name.starts_with(prefix) {
                        fs::create_dir_all(&into).unwrap();
                        fs::write(into.join(file), bytes).unwrap();
                        log.push_str(&format!("downloaded {name}\n"));
                    }
                }
                true
            }
            "actions/upload-artifact@v4" => {
                let name = with("name").to_string();
                let path = work.join(with("path"));
                match fs::read(&path) {
                    Ok(bytes) => {
                        let file = path.file_name().unwrap().to_string_lossy().into_owned();
                        log.push_str(&format!("uploaded {name}\n"));
                        state.lock().unwrap().artifacts.insert(name, (file, bytes));
                    }
                    // GitHub warns and goes on
                    Err(_) => log.push_str(&format!("warning: no file for {name}\n")),
                }
                true
            }
            other => panic!("the local run does not know the action {other}"),
        }
    }

    /// `${{ … }}` in `text` replaced by their values.
    fn substitute(
        &self,
        text: &str,
        row: &BTreeMap<String, String>,
        steps: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("${{") {
            out.push_str(&rest[..i]);
            let end = rest[i..].find("}}").expect("a closed expression") + i;
            out.push_str(&self.value(rest[i + 3..end].trim(), row, steps));
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        out
    }

    /// The value of an expression kiln writes in a step.
    fn value(
        &self,
        e: &str,
        row: &BTreeMap<String, String>,
        steps: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> String {
        if let Some(k) = e.strip_prefix("matrix.") {
            return row
                .get(k)
                .cloned()
                .unwrap_or_else(|| panic!("no matrix value {k}"));
        }
        if let Some(path) = e.strip_prefix("steps.") {
            let (step, key) = path.split_once(".outputs.").expect("steps.ID.outputs.KEY");
            return steps
                .get(step)
                .and_then(|o| o.get(key))
                .cloned()
                .unwrap_or_default();
        }
        match e {
            "inputs.images" => String::new(),
            "inputs.force && '--force' || ''" => {
                if self.force {
                    "--force".into()
                } else {
                    String::new()
                }
            }
            "github.token" => String::new(),
            other => panic!("the local run does not know the expression {other:?}"),
        }
    }

    /// Whether a job's `if:` holds: the conjunctions kiln writes.
    fn condition(&self, cond: &str, st: &State) -> bool {
        strip_expr(cond).split(" && ").all(|c| {
            let c = c.trim();
            if c == "!cancelled()" {
                return true;
            }
            if let Some(rest) = c.strip_prefix("contains(fromJSON(needs.plan.outputs.stale), '") {
                let name = rest.strip_suffix("')").expect("contains(…, 'NAME')");
                let stale: Vec<String> = serde_json::from_str(&st.outputs["plan"]["stale"])
                    .expect("the plan's stale list is JSON");
                return stale.iter().any(|s| s == name);
            }
            if c == "needs.plan.outputs.stale != '[]'" {
                return st
                    .outputs
                    .get("plan")
                    .and_then(|o| o.get("stale"))
                    .is_some_and(|s| s != "[]");
            }
            let (left, op, right) = if let Some((l, r)) = c.split_once(" != ") {
                (l, "!=", r)
            } else if let Some((l, r)) = c.split_once(" == ") {
                (l, "==", r)
            } else {
                panic!("the local run does not know the condition {c:?}")
            };
            let job = left
                .strip_prefix("needs.")
                .and_then(|l| l.strip_suffix(".result"))
                .unwrap_or_else(|| panic!("the local run does not know {left:?}"));
            let want = right.trim_matches('\'');
            let is = st.results[job].word();
            (op == "==") == (is == want)
        })
    }
}

fn strip_expr(cond: &str) -> &str {
    cond.trim()
        .strip_prefix("${{")
        .and_then(|c| c.strip_suffix("}}"))
        .unwrap_or(cond)
        .trim()
}

/// A `bin` directory with `kiln` (the binary under test) and a `sudo` that
/// runs its command as it is (the tests run as root already).
pub fn runner_bin(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kiln"), bin.join("kiln")).unwrap();
    fs::write(bin.join("sudo"), "#!/bin/sh\nexec \"$@\"\n").unwrap();
    fs::set_permissions(bin.join("sudo"), fs::Permissions::from_mode(0o755)).unwrap();
    bin
}
