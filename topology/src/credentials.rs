//! A node's secrets file: its uplink password and the passwords of registrants.
//!
//! ```toml
//! uplink_password = "..."    # this node's password toward its parent (optional for the root)
//! default_password = "..."   # optional; for any registrant without its own entry
//! [devices]                  # registrants below: devices and child nodes, by ID
//! "35010201001320000001" = "secret"
//! [upper]                    # this node's passwords toward upper platforms, by their ID
//! "35000000002000000001" = "secret"
//! ```
//!
//! Secrets never reach logs: `Debug` redacts them, and error messages never
//! quote a value (which is why passwords are read as raw TOML values and
//! type-checked here rather than by serde, whose messages echo the value).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::id::GbId;
use crate::problem::{line_of, read_text, render, Problem, ReadText};

/// Passwords of one node.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    uplink_password: Option<String>,
    default_password: Option<String>,
    devices: BTreeMap<GbId, String>,
    upper: BTreeMap<GbId, String>,
}

/// Why a credentials file could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file could not be read.
    #[error("cannot read credentials file {}: {source}; check the path and its permissions", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid credentials file; every problem found is listed.
    #[error("{}", render(path, problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// All problems found, ordered by line.
        problems: Vec<Problem>,
    },
    /// The credentials could not be written as TOML.
    #[error("cannot write credentials as TOML: {0}")]
    Write(#[from] toml::ser::Error),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    uplink_password: Option<Spanned<toml::Value>>,
    default_password: Option<Spanned<toml::Value>>,
    #[serde(default)]
    devices: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    upper: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
}

#[derive(Serialize)]
struct WrittenCredentials<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    uplink_password: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    default_password: Option<&'a str>,
    devices: &'a BTreeMap<GbId, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    upper: &'a BTreeMap<GbId, String>,
}

impl Credentials {
    /// Reads and validates the credentials file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Credentials, CredentialsError> {
        let path = path.as_ref();
        match read_text(path) {
            Ok(text) => Credentials::parse(&text, path),
            Err(ReadText::Io(source)) => Err(CredentialsError::Read {
                path: path.to_path_buf(),
                source,
            }),
            Err(ReadText::NotUtf8(problem)) => Err(CredentialsError::Invalid {
                path: path.to_path_buf(),
                problems: vec![problem],
            }),
        }
    }

    /// Validates credentials TOML `text`; `path` names the file in messages.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Credentials, CredentialsError> {
        let path = path.as_ref();
        let mut problems = Vec::new();
        let raw: RawCredentials = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(err) => {
                // toml's own messages name keys and positions, never string contents.
                let line = err.span().map_or(1, |span| line_of(text, span.start));
                problems.push(Problem::new(
                    path,
                    line,
                    err.message().trim_end().to_owned(),
                ));
                return Err(CredentialsError::Invalid {
                    path: path.to_path_buf(),
                    problems,
                });
            }
        };
        let mut password = |key: &str, value: &Spanned<toml::Value>| -> Option<String> {
            let line = line_of(text, value.span().start);
            match value.get_ref() {
                toml::Value::String(s) if !s.is_empty() => Some(s.clone()),
                toml::Value::String(_) => {
                    problems.push(Problem::new(
                        path,
                        line,
                        format!("{key} is empty; set a password or remove the entry"),
                    ));
                    None
                }
                other => {
                    problems.push(Problem::new(
                        path,
                        line,
                        format!(
                            "{key} is {}; write the password as a quoted string",
                            kind_of(other)
                        ),
                    ));
                    None
                }
            }
        };
        let uplink_password = raw
            .uplink_password
            .as_ref()
            .and_then(|v| password("uplink_password", v));
        let default_password = raw
            .default_password
            .as_ref()
            .and_then(|v| password("default_password", v));
        let mut bad_ids = Vec::new();
        let mut by_id = |table: &str, raw: &BTreeMap<Spanned<String>, Spanned<toml::Value>>| {
            let mut out = BTreeMap::new();
            for (key, value) in raw {
                let pw = password(&format!("the password of {}", key.get_ref()), value);
                match GbId::parse(key.get_ref()) {
                    Ok(id) => {
                        if let Some(pw) = pw {
                            out.insert(id, pw);
                        }
                    }
                    Err(err) => bad_ids.push(Problem::new(
                        path,
                        line_of(text, key.span().start),
                        format!(
                            "[{table}] key {:?} is not a GB/T 28181 ID: {err}",
                            key.get_ref()
                        ),
                    )),
                }
            }
            out
        };
        let devices = by_id("devices", &raw.devices);
        let upper = by_id("upper", &raw.upper);
        problems.extend(bad_ids);
        if !problems.is_empty() {
            problems.sort_by_key(|p| p.line);
            return Err(CredentialsError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
        Ok(Credentials {
            uplink_password,
            default_password,
            devices,
            upper,
        })
    }

    /// The password this node uses to REGISTER to its parent.
    pub fn uplink_password(&self) -> Option<&str> {
        self.uplink_password.as_deref()
    }

    /// The password a registrant (device or child node) must use: its own
    /// entry, else `default_password`, else `None` (refuse it).
    pub fn password_for(&self, id: &GbId) -> Option<&str> {
        self.devices
            .get(id)
            .or(self.default_password.as_ref())
            .map(String::as_str)
    }

    /// The password this node uses to REGISTER to upper platform `id`.
    pub fn upper_password(&self, id: &GbId) -> Option<&str> {
        self.upper.get(id).map(String::as_str)
    }

    /// Adds or replaces the password toward an upper platform (builder style).
    pub fn with_upper(mut self, id: GbId, password: impl Into<String>) -> Self {
        self.upper.insert(id, password.into());
        self
    }

    /// IDs with their own entry, in order.
    pub fn registrants(&self) -> impl Iterator<Item = &GbId> + '_ {
        self.devices.keys()
    }

    /// Sets the uplink password (builder style, for generators and tests).
    pub fn with_uplink_password(mut self, password: impl Into<String>) -> Self {
        self.uplink_password = Some(password.into());
        self
    }

    /// Sets the default password (builder style).
    pub fn with_default_password(mut self, password: impl Into<String>) -> Self {
        self.default_password = Some(password.into());
        self
    }

    /// Adds or replaces a registrant's password (builder style).
    pub fn with_device(mut self, id: GbId, password: impl Into<String>) -> Self {
        self.devices.insert(id, password.into());
        self
    }

    /// The credentials as TOML, passwords included: for writing files only.
    pub fn to_toml_string(&self) -> Result<String, CredentialsError> {
        Ok(toml::to_string(&WrittenCredentials {
            uplink_password: self.uplink_password.as_deref(),
            default_password: self.default_password.as_deref(),
            devices: &self.devices,
            upper: &self.upper,
        })?)
    }
}

/// "a number", "a table", … for messages that must not show the value.
fn kind_of(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) | toml::Value::Float(_) => "a number",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |p: &Option<String>| if p.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("Credentials")
            .field(
                "uplink_password",
                &format_args!("{}", redact(&self.uplink_password)),
            )
            .field(
                "default_password",
                &format_args!("{}", redact(&self.default_password)),
            )
            .field("devices", &self.devices.keys().collect::<Vec<_>>())
            .field("upper", &self.upper.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAM: &str = "35010201001320000001";

    fn problems(text: &str) -> Vec<(usize, String)> {
        match Credentials::parse(text, "c.toml") {
            Err(CredentialsError::Invalid { problems, .. }) => {
                problems.into_iter().map(|p| (p.line, p.message)).collect()
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn loads_and_looks_up() {
        let text = format!(
            "uplink_password = \"up\"\ndefault_password = \"dflt\"\n[devices]\n\"{CAM}\" = \"cam\"\n35010201001320000002 = \"bare key\"\n"
        );
        let c = Credentials::parse(&text, "c.toml").unwrap();
        assert_eq!(c.uplink_password(), Some("up"));
        assert_eq!(c.password_for(&CAM.parse().unwrap()), Some("cam"));
        assert_eq!(
            c.password_for(&"35010201001320000002".parse().unwrap()),
            Some("bare key")
        );
        assert_eq!(
            c.password_for(&"35010201001320000009".parse().unwrap()),
            Some("dflt")
        );
        assert_eq!(c.registrants().count(), 2);
    }

    #[test]
    fn no_default_means_refuse() {
        let c = Credentials::parse("", "c.toml").unwrap();
        assert_eq!(c.uplink_password(), None);
        assert_eq!(c.password_for(&CAM.parse().unwrap()), None);
    }

    #[test]
    fn debug_redacts() {
        let c = Credentials::default()
            .with_uplink_password("hunter2")
            .with_default_password("letmein")
            .with_device(CAM.parse().unwrap(), "s3cret");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("letmein") && !shown.contains("s3cret")
        );
        assert!(shown.contains(CAM), "{shown}");
        assert!(shown.contains("<set>"), "{shown}");
    }

    #[test]
    fn round_trips_through_toml() {
        let c = Credentials::default()
            .with_uplink_password("up")
            .with_device(CAM.parse().unwrap(), "cam");
        let text = c.to_toml_string().unwrap();
        assert_eq!(Credentials::parse(&text, "c.toml").unwrap(), c);
    }

    #[test]
    fn errors_have_lines_and_hide_values() {
        let found = problems(&format!(
            "uplink_password = 12345\n[devices]\n\"3501x\" = \"pw\"\n\"{CAM}\" = \"\"\n"
        ));
        assert_eq!(found.len(), 3, "{found:#?}");
        assert_eq!(found[0].0, 1);
        assert!(
            found[0].1.contains("uplink_password is a number"),
            "{found:#?}"
        );
        assert!(!found[0].1.contains("12345"));
        assert_eq!(found[1].0, 3);
        assert!(found[1].1.contains("position 5"));
        assert_eq!(found[2].0, 4);
        assert!(found[2].1.contains("is empty"));
    }

    #[test]
    fn syntax_and_unknown_keys() {
        let found = problems("uplink_password = \"up\"\npassword = \"x\"\n");
        assert_eq!(found[0].0, 2);
        assert!(found[0].1.contains("unknown field `password`"));
        let found = problems("uplink_password = \"unterminated\n");
        assert_eq!(found[0].0, 1);
        assert!(!found[0].1.contains("unterminated"));
    }

    #[test]
    fn error_display_names_file_and_line() {
        let err = Credentials::parse("[devices]\n\"1\" = \"x\"\n", "creds/city.toml").unwrap_err();
        assert!(err
            .to_string()
            .contains("\n  creds/city.toml:2: [devices] key \"1\" is not a GB/T 28181 ID: ID must be 20 digits, got 1"));
    }

    #[test]
    fn missing_file_is_read_error() {
        let err = Credentials::load("/nonexistent/gbgate/creds.toml").unwrap_err();
        assert!(matches!(err, CredentialsError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/gbgate/creds.toml"));
    }
}
