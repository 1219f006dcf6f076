//! Errors from loading a policy.

use std::fmt;
use std::path::PathBuf;

use crate::rules::{InvalidRule, Subject};

/// Why a policy cannot be loaded. Every variant names the file, and all but
/// I/O errors the line, so an operator can go straight to it.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A rule file could not be read.
    #[error("{}: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// A line is not a valid rule.
    #[error("{file}:{line}: {reason}")]
    Invalid {
        /// The file name.
        file: String,
        /// 1-based line number.
        line: u32,
        /// What is wrong.
        reason: InvalidRule,
    },
    /// `g` lines make a subject a member of itself; the line is one that closes the cycle.
    #[error("{file}:{line}: membership cycle {}", Cycle(cycle))]
    Cycle {
        /// The file name.
        file: String,
        /// 1-based line number.
        line: u32,
        /// The subjects around the cycle, the first repeated at the end.
        cycle: Vec<Subject>,
    },
}

/// Formats a cycle as `a -> b -> a`.
struct Cycle<'a>(&'a [Subject]);

impl fmt::Display for Cycle<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" -> ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// Every error found while loading a policy, in file and line order.
///
/// Displays one error per line, so `gbgate policy check` can print it as is.
#[derive(Debug)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl PolicyErrors {
    /// The errors.
    pub fn errors(&self) -> &[PolicyError] {
        &self.0
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}
