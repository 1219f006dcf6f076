//! What can be wrong with a topology file, located by file and line.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong in a file, with where it is and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in.
    pub path: PathBuf,
    /// 1-based line of the offending table or key.
    pub line: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Problem {
    /// A problem at `line` of `path`.
    pub fn new(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

/// Why a topology could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("cannot read topology file {}: {source}; check the path and its permissions", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid topology; every problem found is listed.
    #[error("{}", render(path, problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// All problems found, ordered by line.
        problems: Vec<Problem>,
    },
    /// The topology could not be written as TOML (for example a non-UTF-8 path).
    #[error("cannot write the topology as TOML: {0}; use UTF-8 paths and names")]
    Write(#[from] toml::ser::Error),
}

impl TopologyError {
    /// The problems of an `Invalid` error; empty for the other kinds.
    pub fn problems(&self) -> &[Problem] {
        match self {
            TopologyError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

/// "FILE is invalid (N problems):" followed by one "FILE:LINE: message" per line.
pub(crate) fn render(path: &std::path::Path, problems: &[Problem]) -> String {
    let noun = if problems.len() == 1 {
        "problem"
    } else {
        "problems"
    };
    let mut out = format!(
        "{} is invalid ({} {noun}); fix these and load it again:",
        path.display(),
        problems.len()
    );
    for problem in problems {
        out.push_str("\n  ");
        out.push_str(&problem.to_string());
    }
    out
}

/// 1-based line of byte `offset` in `text` (offsets past the end count as the last line).
/// Why a configuration file could not be read as text.
pub(crate) enum ReadText {
    /// The OS refused (missing file, permissions).
    Io(std::io::Error),
    /// The bytes are not UTF-8; the problem names the line.
    NotUtf8(Problem),
}

/// Read `path` as UTF-8 text, locating a bad byte by line.
pub(crate) fn read_text(path: &std::path::Path) -> Result<String, ReadText> {
    let bytes = std::fs::read(path).map_err(ReadText::Io)?;
    String::from_utf8(bytes).map_err(|err| {
        let valid = err.utf8_error().valid_up_to();
        let line = line_of(&String::from_utf8_lossy(err.as_bytes()), valid);
        ReadText::NotUtf8(Problem::new(
            path,
            line,
            format!("the file is not UTF-8 (bad byte at offset {valid}); save it as UTF-8"),
        ))
    })
}

pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()
        .get(..end)
        .unwrap_or_default()
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based() {
        let text = "a\nb\n\nc";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 2), 2);
        assert_eq!(line_of(text, 5), 4);
        assert_eq!(line_of(text, 999), 4);
    }

    #[test]
    fn error_lists_file_line_message() {
        let err = TopologyError::Invalid {
            path: "t.toml".into(),
            problems: vec![
                Problem::new("t.toml", 3, "bad"),
                Problem::new("t.toml", 7, "worse"),
            ],
        };
        assert_eq!(
            err.to_string(),
            "t.toml is invalid (2 problems); fix these and load it again:\n  t.toml:3: bad\n  t.toml:7: worse"
        );
    }
}
