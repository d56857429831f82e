//! Why a config was refused, in words that name the file, the line and the
//! field: `sidecar.yaml:14:7: upstreams[0].nodes[1].port: 0 is not in 1..=65535`.
//!
//! A config fails in one of two stages. Parsing stops at the first problem
//! (serde cannot go on past a value it could not read); its line and column
//! come from the YAML parser and its field path from a [`SourceMap`]. When
//! parsing succeeds, validation reports every problem it finds, each named
//! by its field path, with the line looked up in the same map.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::MessageFormatter;
use thiserror::Error;

use super::source_map::{Position, SourceMap};

/// A config that could not be read, parsed or validated.
///
/// `Display` prints one problem per line, each as
/// `<file>:<line>:<col>: <field path>: <what is wrong>`, leaving out the
/// parts that are not known (the file for [`Config::from_yaml`]).
///
/// [`Config::from_yaml`]: super::Config::from_yaml
#[derive(Debug, Error)]
#[error("{}", render(.file.as_deref(), .kind))]
pub struct ConfigError {
    file: Option<PathBuf>,
    kind: Kind,
}

/// One thing wrong in a config's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    path: String,
    position: Option<Position>,
    message: String,
}

/// A problem found by validation, named by its canonical field path.
#[derive(Debug)]
pub(super) struct Issue {
    pub(super) path: String,
    pub(super) message: String,
}

#[derive(Debug)]
enum Kind {
    Read(std::io::Error),
    Invalid(Vec<Problem>),
}

// === impl ConfigError ===

impl ConfigError {
    /// The problems in the config's text, in the order of their lines; empty
    /// when the file could not be read.
    pub fn problems(&self) -> &[Problem] {
        match &self.kind {
            Kind::Read(_) => &[],
            Kind::Invalid(problems) => problems,
        }
    }

    /// The file the config came from, when it came from one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    pub(super) fn read(file: &Path, err: std::io::Error) -> Self {
        ConfigError {
            file: Some(file.to_owned()),
            kind: Kind::Read(err),
        }
    }

    /// Names `file` as the config's source.
    pub(super) fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_owned());
        self
    }

    /// The error serde-saphyr gave while parsing `text`.
    pub(super) fn parse(err: &serde_saphyr::Error, text: &str) -> Self {
        let inner = original(err);
        let position = err
            .location()
            .filter(|l| l.line() > 0)
            .map(|l| (l.line(), l.column()));
        let message = sanitize(serde_saphyr::UserMessageFormatter.format_message(inner));
        // A type error sits on the key of the field being read.
        let field_at_key = matches!(
            inner,
            serde_saphyr::Error::SerdeInvalidType { .. }
                | serde_saphyr::Error::SerdeInvalidValue { .. }
                | serde_saphyr::Error::SerdeInvalidLength { .. }
                | serde_saphyr::Error::SerdeUnknownVariant { .. }
        );
        let path = position
            .and_then(|pos| {
                Some(
                    SourceMap::parse(text)?
                        .path_at(pos, field_at_key)?
                        .to_owned(),
                )
            })
            .unwrap_or_default();
        ConfigError {
            file: None,
            kind: Kind::Invalid(vec![Problem {
                path,
                position,
                message,
            }]),
        }
    }

    /// A config text with no YAML document in it: nothing but blank lines,
    /// comments and document markers.
    pub(super) fn empty() -> Self {
        ConfigError {
            file: None,
            kind: Kind::Invalid(vec![Problem {
                path: String::new(),
                position: None,
                message: "the config is empty: it holds no YAML document".to_owned(),
            }]),
        }
    }

    /// The problems validation found in the config parsed from `text`.
    pub(super) fn invalid(issues: Vec<Issue>, text: &str) -> Self {
        let map = SourceMap::parse(text);
        let mut problems: Vec<Problem> = issues
            .into_iter()
            .map(|issue| {
                let found = map.as_ref().and_then(|m| m.locate(&issue.path));
                let (path, position) = match found {
                    Some((path, pos)) => (path, Some(pos)),
                    None => (issue.path, None),
                };
                Problem {
                    path,
                    position,
                    message: issue.message,
                }
            })
            .collect();
        // Stable: problems on one line keep the order validation found them in.
        problems.sort_by_key(|p| p.position.unwrap_or((u64::MAX, u64::MAX)));
        ConfigError {
            file: None,
            kind: Kind::Invalid(problems),
        }
    }
}

// === impl Problem ===

impl Problem {
    /// The field the problem is in, such as `upstreams[0].nodes[1].port`, as
    /// written in the file; `""` for the document as a whole.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The 1-based line of the field, or of its nearest written ancestor
    /// when the field itself was left out.
    pub fn line(&self) -> Option<u64> {
        self.position.map(|(line, _)| line)
    }

    /// The 1-based column that goes with [`Problem::line`].
    pub fn column(&self) -> Option<u64> {
        self.position.map(|(_, col)| col)
    }

    /// What is wrong, without the location.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, col)) = self.position {
            write!(f, "{line}:{col}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

// === impl Issue ===

impl Issue {
    pub(super) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Issue {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The `Display` text of a [`ConfigError`].
fn render(file: Option<&Path>, kind: &Kind) -> String {
    let file = file.map(|f| f.display().to_string());
    match kind {
        Kind::Read(err) => match file {
            Some(file) => format!("{file}: cannot read the config: {err}"),
            None => format!("cannot read the config: {err}"),
        },
        Kind::Invalid(problems) => {
            let lines: Vec<String> = problems
                .iter()
                .map(|p| match (&file, p.position) {
                    (Some(file), Some(_)) => format!("{file}:{p}"),
                    (Some(file), None) => format!("{file}: {p}"),
                    (None, _) => p.to_string(),
                })
                .collect();
            lines.join("\n")
        }
    }
}

/// The error beneath serde-saphyr's snippet and alias wrappers.
fn original(mut err: &serde_saphyr::Error) -> &serde_saphyr::Error {
    loop {
        match err {
            serde_saphyr::Error::WithSnippet { error, .. }
            | serde_saphyr::Error::AliasError { error, .. } => err = error,
            other => return other,
        }
    }
}

/// Escapes control characters, which a YAML value may carry into a message.
fn sanitize(message: Cow<'_, str>) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
