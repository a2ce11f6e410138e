//! Where output goes: data to stdout, messages to stderr.

use std::io::Write;

/// The one way kiln writes to the terminal.
pub struct Printer {
    _private: (),
}

impl Printer {
    pub fn stdio() -> Self {
        Printer { _private: () }
    }

    /// Data the user asked for (a report, JSON).
    pub fn data(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }

    /// Errors, warnings and progress.
    pub fn error(&self, text: &str) {
        Self::to_stderr(text)
    }

    /// A line on stderr, for messages from deep inside an operation (a
    /// store lock that keeps it waiting).
    pub fn to_stderr(text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = err.write_all(b"\n");
        }
    }
}

/// Build progress on stderr: a spinner per running step on a terminal,
/// plain lines otherwise (and with NO_COLOR or TERM=dumb); RUN output is
/// shown under its stage either way.
pub struct StepPrinter<'a> {
    printer: &'a Printer,
    count: usize,
    passthrough: bool,
    bars: Option<Bars>,
}

struct Bars {
    multi: indicatif::MultiProgress,
    /// The running step of each stage.
    running: std::collections::BTreeMap<String, indicatif::ProgressBar>,
}

fn fancy() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

impl<'a> StepPrinter<'a> {
    pub fn new(printer: &'a Printer) -> Self {
        let bars = fancy().then(|| Bars {
            multi: indicatif::MultiProgress::new(),
            running: Default::default(),
        });
        StepPrinter {
            printer,
            count: 0,
            passthrough: false,
            bars,
        }
    }

    /// For `kiln run`: the command's output goes to stdout as it is.
    pub fn passthrough(printer: &'a Printer) -> Self {
        StepPrinter {
            printer,
            count: 0,
            passthrough: true,
            bars: None,
        }
    }

    fn line(&self, text: &str) {
        match &self.bars {
            Some(b) => {
                let _ = b.multi.println(text);
            }
            None => self.printer.error(text),
        }
    }
}

impl Bars {
    /// A finished step leaves a plain line; only running steps spin.
    fn finish(&mut self, stage: &str) {
        if let Some(bar) = self.running.remove(stage) {
            let _ = self.multi.println(format!(
                "{} {}",
                bar.message(),
                indicatif::HumanDuration(bar.elapsed())
            ));
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }
}

impl Drop for StepPrinter<'_> {
    fn drop(&mut self) {
        if let Some(b) = &mut self.bars {
            let stages: Vec<String> = b.running.keys().cloned().collect();
            for stage in stages {
                b.finish(&stage);
            }
        }
    }
}

impl kiln_build::Progress for StepPrinter<'_> {
    fn step(&mut self, stage: &str, line: usize, text: &str, cached: bool) {
        self.count += 1;
        let first = text.lines().next().unwrap_or("");
        let mark = if cached { " CACHED" } else { "" };
        let msg = format!("#{} [{stage}] line {line}: {first}{mark}", self.count);
        let Some(b) = &mut self.bars else {
            self.printer.error(&msg);
            return;
        };
        b.finish(stage);
        if cached {
            let _ = b.multi.println(msg);
            return;
        }
        let bar = b.multi.add(indicatif::ProgressBar::new_spinner());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message(msg);
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        b.running.insert(stage.to_string(), bar);
    }

    fn output(&mut self, stage: &str, line: &str) {
        if self.passthrough {
            self.printer.data(line);
        } else if stage.is_empty() {
            self.line(line);
        } else {
            // stages build concurrently: each output line says whose it is
            self.line(&format!("  {stage} | {line}"));
        }
    }
}

/// Bake progress on stderr: every line as `[image] text`; on a terminal
/// also a spinner per image at work showing its latest line.
pub struct BakePrinter<'a> {
    printer: &'a Printer,
    bars: Option<std::sync::Mutex<Bars>>,
}

impl<'a> BakePrinter<'a> {
    pub fn new(printer: &'a Printer) -> Self {
        let bars = fancy().then(|| {
            std::sync::Mutex::new(Bars {
                multi: indicatif::MultiProgress::new(),
                running: Default::default(),
            })
        });
        BakePrinter { printer, bars }
    }
}

impl kiln_factory::bake::BakeLog for BakePrinter<'_> {
    fn line(&self, image: &str, text: &str) {
        let line = if image.is_empty() {
            text.to_string()
        } else {
            format!("[{image}] {text}")
        };
        let Some(bars) = &self.bars else {
            self.printer.error(&line);
            return;
        };
        let Ok(mut b) = bars.lock() else { return };
        let _ = b.multi.println(&line);
        if image.is_empty() {
            return;
        }
        let bar = match b.running.get(image) {
            Some(bar) => bar.clone(),
            None => {
                let bar = b.multi.add(indicatif::ProgressBar::new_spinner());
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {prefix} {wide_msg} {elapsed}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                bar.set_prefix(image.to_string());
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                b.running.insert(image.to_string(), bar.clone());
                bar
            }
        };
        bar.set_message(text.trim().to_string());
    }

    fn done(&self, image: &str, _outcome: &kiln_factory::bake::Outcome) {
        if let Some(bars) = &self.bars {
            if let Ok(mut b) = bars.lock() {
                if let Some(bar) = b.running.remove(image) {
                    bar.finish_and_clear();
                    b.multi.remove(&bar);
                }
            }
        }
    }
}

impl Drop for BakePrinter<'_> {
    fn drop(&mut self) {
        if let Some(bars) = &self.bars {
            if let Ok(mut b) = bars.lock() {
                for (_, bar) in std::mem::take(&mut b.running) {
                    bar.finish_and_clear();
                }
            }
        }
    }
}
