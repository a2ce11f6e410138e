//! `kiln pin`: the image references of Kubernetes manifests that name a
//! factory image rewritten to the lock's pinned `REPOSITORY:VERSION@DIGEST`
//! — every other byte of the file as it was (comments, order, quoting). A
//! container's `image` (in `containers`, `initContainers` or
//! `ephemeralContainers`, so Deployments, StatefulSets, DaemonSets, Jobs,
//! CronJobs and Pods alike) is replaced; a kustomization's `images:` entry
//! naming the repository gets `newTag` and `digest` (set where present,
//! added under `name` where not). The YAML is read by an event parser for
//! where each value is, and edited by span.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A factory image as manifests should name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// `REGISTRY/PATH` without tag or digest.
    pub repository: String,
    pub version: String,
    pub digest: String,
}

impl Pinned {
    pub fn reference(&self) -> String {
        format!("{}:{}@{}", self.repository, self.version, self.digest)
    }
}

/// One changed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// 1-based.
    pub line: usize,
    pub from: String,
    pub to: String,
}

/// A reference's repository: without `@digest` and without a `:tag` after
/// its last `/`.
pub fn repository(reference: &str) -> &str {
    let r = reference.split('@').next().unwrap_or(reference);
    match r.rfind(':') {
        Some(i) if !r[i..].contains('/') => &r[..i],
        _ => r,
    }
}

#[derive(Debug)]
enum Frame {
    Map {
        key: Option<String>,
        expect_key: bool,
    },
    Seq {
        key: Option<String>,
    },
}

/// A scalar value and where its source text is.
#[derive(Debug, Clone)]
struct Value {
    text: String,
    start: usize,
    end: usize,
    line: usize,
    quote: Option<char>,
}

/// A kustomization `images:` entry.
#[derive(Debug, Default)]
struct Entry {
    name: Option<Value>,
    new_tag: Option<Value>,
    digest: Option<Value>,
    /// Byte offset where the `name` key starts, and its column.
    name_key: Option<(usize, usize)>,
}

struct Walker<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
    stack: Vec<Frame>,
    /// The key of the value being read, and where it started.
    key_at: Option<(usize, usize)>,
    images: Vec<Value>,
    entries: Vec<Entry>,
    entry: Option<Entry>,
}

impl Walker<'_> {
    /// The byte offset of a marker (line 1-based, column 0-based chars).
    fn offset(&self, m: &Marker) -> usize {
        let start = self
            .line_starts
            .get(m.line().saturating_sub(1))
            .copied()
            .unwrap_or(0);
        self.text[start..]
            .char_indices()
            .nth(m.col())
            .map_or(self.text.len(), |(i, _)| start + i)
    }

    fn value(&self, text: String, style: TScalarStyle, m: &Marker) -> Value {
        let start = self.offset(m);
        let quote = match style {
            TScalarStyle::SingleQuoted => Some('\''),
            TScalarStyle::DoubleQuoted => Some('"'),
            _ => None,
        };
        let end = match quote {
            // image references hold no quotes or escapes
            Some(q) => self.text[start + 1..]
                .find(q)
                .map_or(self.text.len(), |i| start + 1 + i + 1),
            None => start + text.len(),
        };
        Value {
            text,
            start,
            end,
            line: m.line(),
            quote,
        }
    }

    /// Whether the innermost sequence is a list of containers.
    fn in_containers(&self) -> bool {
        let seq = self.stack.iter().rev().find_map(|f| match f {
            Frame::Seq { key } => Some(key.as_deref()),
            Frame::Map { .. } => None,
        });
        matches!(
            seq,
            Some(Some(
                "containers" | "initContainers" | "ephemeralContainers"
            ))
        )
    }

    /// Whether the innermost mapping is an entry of a top-level `images:`.
    fn in_images_entry(&self) -> bool {
        matches!(
            self.stack.as_slice(),
            [Frame::Map { .. }, Frame::Seq { key: Some(k) }, Frame::Map { .. }] if k == "images"
        )
    }

    /// The key the next container (sequence or mapping) is the value of.
    fn take_key(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            Some(Frame::Map { key, expect_key }) if !*expect_key => {
                *expect_key = true;
                key.take()
            }
            _ => None,
        }
    }
}

impl MarkedEventReceiver for Walker<'_> {
    fn on_event(&mut self, ev: Event, m: Marker) {
        match ev {
            Event::MappingStart(..) => {
                self.take_key();
                self.stack.push(Frame::Map {
                    key: None,
                    expect_key: true,
                });
                if self.in_images_entry() {
                    self.entry = Some(Entry::default());
                }
            }
            Event::SequenceStart(..) => {
                let key = self.take_key();
                self.stack.push(Frame::Seq { key });
            }
            Event::MappingEnd => {
                if self.in_images_entry() {
                    if let Some(e) = self.entry.take() {
                        self.entries.push(e);
                    }
                }
                self.stack.pop();
            }
            Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Scalar(text, style, ..) => {
                let is_key = matches!(
                    self.stack.last(),
                    Some(Frame::Map {
                        expect_key: true,
                        ..
                    })
                );
                if is_key {
                    let at = self.offset(&m);
                    self.key_at = Some((at, m.col()));
                    if let Some(Frame::Map { key, expect_key }) = self.stack.last_mut() {
                        *key = Some(text);
                        *expect_key = false;
                    }
                    return;
                }
                let key = self.take_key();
                let v = self.value(text, style, &m);
                match key.as_deref() {
                    Some("image") if self.in_containers() => self.images.push(v),
                    Some(k @ ("name" | "newTag" | "digest")) if self.in_images_entry() => {
                        let key_at = self.key_at;
                        if let Some(e) = self.entry.as_mut() {
                            match k {
                                "name" => {
                                    e.name = Some(v);
                                    e.name_key = key_at;
                                }
                                "newTag" => e.new_tag = Some(v),
                                _ => e.digest = Some(v),
                            }
                        }
                    }
                    _ => {}
                }
            }
            Event::Alias(_) => {
                self.take_key();
            }
            _ => {}
        }
    }
}

/// Rewrites the references in `text` (one YAML file, one or more
/// documents) that name a repository of `pins`; the new text and what
/// changed.
pub fn pin(text: &str, pins: &[Pinned]) -> Result<(String, Vec<Change>), String> {
    let mut w = Walker {
        text,
        line_starts: std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect(),
        stack: Vec::new(),
        key_at: None,
        images: Vec::new(),
        entries: Vec::new(),
        entry: None,
    };
    let mut parser = Parser::new_from_str(text);
    parser
        .load(&mut w, true)
        .map_err(|e| format!("line {}: {}", e.marker().line(), e.info()))?;
    // (start, end, replacement, change)
    let mut edits: Vec<(usize, usize, String, Change)> = Vec::new();
    let find = |r: &str| pins.iter().find(|p| p.repository == repository(r));
    for v in &w.images {
        if let Some(p) = find(&v.text) {
            let to = p.reference();
            if v.text != to {
                let q = v.quote.map(String::from).unwrap_or_default();
                edits.push((
                    v.start,
                    v.end,
                    format!("{q}{to}{q}"),
                    Change {
                        line: v.line,
                        from: v.text.clone(),
                        to,
                    },
                ));
            }
        }
    }
    for e in &w.entries {
        let Some(name) = &e.name else { continue };
        let Some(p) = find(&name.text) else { continue };
        for (field, value, want) in [
            ("newTag", &e.new_tag, &p.version),
            ("digest", &e.digest, &p.digest),
        ] {
            match value {
                Some(v) if &v.text == want => {}
                Some(v) => {
                    let q = v.quote.map(String::from).unwrap_or_default();
                    edits.push((
                        v.start,
                        v.end,
                        format!("{q}{want}{q}"),
                        Change {
                            line: v.line,
                            from: v.text.clone(),
                            to: want.clone(),
                        },
                    ));
                }
                None => {
                    // a new line under `name`, at its indentation
                    let (_, col) = e.name_key.unwrap_or((0, 0));
                    let eol = text[name.end..]
                        .find('\n')
                        .map_or(text.len(), |i| name.end + i);
                    edits.push((
                        eol,
                        eol,
                        format!("\n{}{field}: {want}", " ".repeat(col)),
                        Change {
                            line: name.line,
                            from: String::new(),
                            to: format!("{field}: {want}"),
                        },
                    ));
                }
            }
        }
    }
    edits.sort_by_key(|e| (e.0, e.1));
    let mut out = text.to_string();
    for (start, end, with, _) in edits.iter().rev() {
        out.replace_range(*start..*end, with);
    }
    let changes = edits.into_iter().map(|e| e.3).collect();
    Ok((out, changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> Vec<Pinned> {
        vec![Pinned {
            repository: "127.0.0.1:5000/svc/web".into(),
            version: "20261207.2".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
        }]
    }

    #[test]
    fn repositories_drop_tags_and_digests_not_ports() {
        assert_eq!(
            repository("127.0.0.1:5000/svc/web:1.0"),
            "127.0.0.1:5000/svc/web"
        );
        assert_eq!(
            repository("127.0.0.1:5000/svc/web"),
            "127.0.0.1:5000/svc/web"
        );
        assert_eq!(repository("r/web:1@sha256:ab"), "r/web");
        assert_eq!(repository("web@sha256:ab"), "web");
    }

    #[test]
    fn only_the_image_values_change() {
        let text = r#"# the web tier
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web  # keep
spec:
  template:
    spec:
      initContainers:
        - name: init
          image: "127.0.0.1:5000/svc/web:old"
      containers:
      - name: web
        image: 127.0.0.1:5000/svc/web:20261201.1 # pinned by kiln
        env:
        - name: image
          value: 127.0.0.1:5000/svc/web:not-an-image-field
      - name: sidecar
        image: busybox:1.36
---
kind: CronJob
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers:
          - image: '127.0.0.1:5000/svc/web'
"#;
        let (out, changes) = pin(text, &web()).unwrap();
        let pinned = web()[0].reference();
        assert_eq!(changes.len(), 3, "{changes:?}");
        let expected = text
            .replace("\"127.0.0.1:5000/svc/web:old\"", &format!("\"{pinned}\""))
            .replace(
                "127.0.0.1:5000/svc/web:20261201.1 #",
                &format!("{pinned} #"),
            )
            .replace("'127.0.0.1:5000/svc/web'", &format!("'{pinned}'"));
        assert_eq!(out, expected);
        // pinning again changes nothing
        let (again, none) = pin(&out, &web()).unwrap();
        assert_eq!((again, none.len()), (out, 0));
    }

    #[test]
    fn kustomization_images_get_a_tag_and_digest() {
        let text = "resources:\n- deployment.yaml\nimages:\n- name: 127.0.0.1:5000/svc/web\n  newTag: old # moved by kiln\n- name: other\n  newTag: \"2\"\n";
        let (out, changes) = pin(text, &web()).unwrap();
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(
            out,
            format!(
                "resources:\n- deployment.yaml\nimages:\n- name: 127.0.0.1:5000/svc/web\n  digest: sha256:{}\n  newTag: 20261207.2 # moved by kiln\n- name: other\n  newTag: \"2\"\n",
                "a".repeat(64)
            )
        );
    }
}
