//! Who calls the HTTP API: department bearer tokens (stored as SHA-256
//! hashes, never logged) and short-lived signed play tokens for the video
//! URLs, which players fetch without headers.
//!
//! The tokens file (TOML), written by `gbgate token new`:
//! ```toml
//! [[token]]
//! user = "li.wei"          # who holds it (audited)
//! dept = "traffic"         # the department the policy decides for
//! admin = false            # policy, audit and access-request endpoints
//! sha256 = "9f86d0…"       # SHA-256 of the token, hex; the token itself is never stored
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use policy::{Action, Subject};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use topology::GbId;

/// One token holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The person (`user:<name>` in the audit).
    pub user: String,
    /// The department decisions are made for (`dept:<name>`).
    pub dept: String,
    /// May use the admin endpoints.
    pub admin: bool,
}

impl Holder {
    /// The subject the policy decides for.
    pub fn subject(&self) -> Subject {
        Subject::Dept(self.dept.clone())
    }

    /// The person, as audited.
    pub fn user_subject(&self) -> Subject {
        Subject::User(self.user.clone())
    }
}

/// A tokens file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file cannot be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("{file}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// What `toml` said, with the line.
        message: String,
    },
    /// An entry is wrong.
    #[error("{file}: token {index}: {reason}")]
    Entry {
        /// The file.
        file: String,
        /// 1-based position of the `[[token]]` table.
        index: usize,
        /// Why.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    token: Vec<RawToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    user: String,
    dept: String,
    #[serde(default)]
    admin: bool,
    sha256: String,
}

/// The token holders of a node, by token hash.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Holder>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Tokens {
    /// Read a tokens file.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            file: path.to_owned(),
            source,
        })?;
        Tokens::parse(&text, &path.display().to_string())
    }

    /// Parse a tokens file's text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Tokens, TokensError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| TokensError::Syntax {
            file: file.into(),
            message: e.to_string(),
        })?;
        let mut by_hash = HashMap::new();
        for (i, t) in raw.token.into_iter().enumerate() {
            let entry = |reason: String| TokensError::Entry {
                file: file.into(),
                index: i + 1,
                reason,
            };
            if !valid_name(&t.user) || !valid_name(&t.dept) {
                return Err(entry(
                    "user and dept are names of letters, digits, '_', '.' and '-'".into(),
                ));
            }
            let hash =
                hex_32(&t.sha256).ok_or_else(|| entry("sha256 must be 64 hex digits".into()))?;
            let holder = Holder {
                user: t.user,
                dept: t.dept,
                admin: t.admin,
            };
            if by_hash.insert(hash, holder).is_some() {
                return Err(entry("the same token is listed twice".into()));
            }
        }
        Ok(Tokens { by_hash })
    }

    /// The holder of `token`, if it is one of ours. The lookup is by the
    /// token's SHA-256, so its time does not depend on how much of a
    /// guessed token is right.
    pub fn authenticate(&self, token: &str) -> Option<&Holder> {
        self.by_hash.get(&sha256(token.as_bytes()))
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// A new random token and the `[[token]]` entry that stores its hash.
pub fn new_token(user: &str, dept: &str, admin: bool) -> (String, String) {
    let token = format!("gbg_{}", hex(&rand::random::<[u8; 24]>()));
    let entry = format!(
        "\n[[token]]\nuser = \"{user}\"\ndept = \"{dept}\"\nadmin = {admin}\nsha256 = \"{}\"\n",
        hex(&sha256(token.as_bytes()))
    );
    (token, entry)
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_32(s: &str) -> Option<[u8; 32]> {
    let v = unhex(s)?;
    v.try_into().ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What a play token grants: one holder, one channel, one action, until
/// `expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayClaims {
    /// The holder's user name.
    pub user: String,
    /// The holder's department.
    pub dept: String,
    /// The channel.
    pub channel: GbId,
    /// live, playback or download.
    pub action: Action,
    /// Unix seconds after which the token no longer opens a stream.
    pub expires: u64,
}

/// Why a play token was refused (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlayTokenError {
    /// Not in our format.
    #[error("the play token is malformed; ask POST /api/v1/streams for a new URL")]
    Malformed,
    /// The signature does not match (altered, or from another node).
    #[error("the play token's signature does not match; ask POST /api/v1/streams for a new URL")]
    BadSignature,
    /// Past its time.
    #[error("the play token expired; ask POST /api/v1/streams for a new URL")]
    Expired,
    /// Valid, but for another channel or action.
    #[error("the play token is for another channel or action")]
    WrongStream,
}

/// The key play tokens are signed with: random per process, so a restart
/// invalidates URLs handed out before (they live minutes anyway).
#[derive(Clone)]
pub struct PlayKey([u8; 32]);

impl std::fmt::Debug for PlayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlayKey(..)")
    }
}

impl PlayKey {
    /// A fresh random key.
    pub fn random() -> Self {
        PlayKey(rand::random())
    }

    /// A key from fixed bytes (tests).
    pub fn from_bytes(b: [u8; 32]) -> Self {
        PlayKey(b)
    }

    fn mac(&self, payload: &str) -> Vec<u8> {
        // A 32-byte key is a valid HMAC-SHA256 key.
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return Vec::new();
        };
        m.update(payload.as_bytes());
        m.finalize().into_bytes().to_vec()
    }

    /// A token for `claims`: hex payload, a dot, hex HMAC-SHA256.
    pub fn sign(&self, c: &PlayClaims) -> String {
        let payload = format!(
            "{}|{}|{}|{}|{}",
            c.expires, c.user, c.dept, c.channel, c.action
        );
        format!("{}.{}", hex(payload.as_bytes()), hex(&self.mac(&payload)))
    }

    /// Check `token` for opening `action` on `channel` at `now`.
    pub fn verify(
        &self,
        token: &str,
        channel: &GbId,
        action: Action,
        now: SystemTime,
    ) -> Result<PlayClaims, PlayTokenError> {
        let (p, sig) = token.split_once('.').ok_or(PlayTokenError::Malformed)?;
        let payload = unhex(p)
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(PlayTokenError::Malformed)?;
        let sig = unhex(sig).ok_or(PlayTokenError::Malformed)?;
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return Err(PlayTokenError::BadSignature);
        };
        m.update(payload.as_bytes());
        // verify_slice compares in constant time.
        m.verify_slice(&sig)
            .map_err(|_| PlayTokenError::BadSignature)?;
        let parts: Vec<&str> = payload.split('|').collect();
        let [expires, user, dept, ch, act] = parts[..] else {
            return Err(PlayTokenError::Malformed);
        };
        let claims = PlayClaims {
            user: user.into(),
            dept: dept.into(),
            channel: GbId::parse(ch).map_err(|_| PlayTokenError::Malformed)?,
            action: act.parse().map_err(|_| PlayTokenError::Malformed)?,
            expires: expires.parse().map_err(|_| PlayTokenError::Malformed)?,
        };
        let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if now_s > claims.expires {
            return Err(PlayTokenError::Expired);
        }
        if claims.channel != *channel || claims.action != action {
            return Err(PlayTokenError::WrongStream);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_token_authenticates_its_holder_and_only_its_hash_is_stored() {
        let (token, entry) = new_token("li.wei", "traffic", false);
        assert!(!entry.contains(&token));
        let t = Tokens::parse(&entry, "tokens.toml").unwrap();
        let h = t.authenticate(&token).unwrap();
        assert_eq!(
            (h.user.as_str(), h.dept.as_str(), h.admin),
            ("li.wei", "traffic", false)
        );
        assert!(t.authenticate("gbg_wrong").is_none());
        let mut altered = token.clone();
        altered.pop();
        assert!(t.authenticate(&altered).is_none());
    }

    #[test]
    fn bad_tokens_files_name_the_entry() {
        let e = Tokens::parse(
            "[[token]]\nuser = \"a\"\ndept = \"b\"\nsha256 = \"xyz\"\n",
            "t.toml",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.toml: token 1: sha256 must be 64 hex digits"
        );
        let e = Tokens::parse(
            "[[token]]\nuser = \"a b\"\ndept = \"b\"\nsha256 = \"00\"\n",
            "t.toml",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("t.toml: token 1: user and dept"));
        let e = Tokens::parse("[[token]]\nusr = \"a\"\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("t.toml"), "{e}");
    }

    #[test]
    fn play_tokens_open_one_stream_until_they_expire() {
        let key = PlayKey::from_bytes([7; 32]);
        let ch = GbId::parse("35010201001310000001").unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let claims = PlayClaims {
            user: "li.wei".into(),
            dept: "traffic".into(),
            channel: ch,
            action: Action::Live,
            expires: 1_000_060,
        };
        let t = key.sign(&claims);
        assert_eq!(key.verify(&t, &ch, Action::Live, now), Ok(claims));
        let later = now + Duration::from_secs(61);
        assert_eq!(
            key.verify(&t, &ch, Action::Live, later),
            Err(PlayTokenError::Expired)
        );
        let other = GbId::parse("35010201001310000002").unwrap();
        assert_eq!(
            key.verify(&t, &other, Action::Live, now),
            Err(PlayTokenError::WrongStream)
        );
        assert_eq!(
            key.verify(&t, &ch, Action::Playback, now),
            Err(PlayTokenError::WrongStream)
        );
        // Any changed byte breaks the signature.
        let mut bytes = t.into_bytes();
        bytes[3] = if bytes[3] == b'0' { b'1' } else { b'0' };
        let altered = String::from_utf8(bytes).unwrap();
        assert_eq!(
            key.verify(&altered, &ch, Action::Live, now),
            Err(PlayTokenError::BadSignature)
        );
        let other_key = PlayKey::from_bytes([8; 32]);
        let t = key.sign(&PlayClaims {
            expires: 1_000_060,
            user: "a".into(),
            dept: "b".into(),
            channel: ch,
            action: Action::Live,
        });
        assert_eq!(
            other_key.verify(&t, &ch, Action::Live, now),
            Err(PlayTokenError::BadSignature)
        );
        assert_eq!(
            key.verify("nonsense", &ch, Action::Live, now),
            Err(PlayTokenError::Malformed)
        );
    }
}
