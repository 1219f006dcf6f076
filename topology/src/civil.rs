//! Civil codes (GB/T 2260 administrative divisions) as used in IDs and catalogs.
//!
//! A civil code is 2 (province), 4 (city), 6 (county) or 8 (grassroots unit)
//! digits. The first 8 digits of a 20-digit ID carry one padded with `00`
//! pairs (`35010200` = county `350102`), so codes are kept normalised:
//! trailing `00` pairs are dropped on the way in. That makes "lies under"
//! a plain prefix test.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A normalised civil code: 0, 2, 4, 6 or 8 digits, never ending in `00`.
///
/// The empty code ("unspecified") only comes from an ID whose first 8 digits
/// are zero; every code lies under it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct CivilCode {
    // Unused tail bytes stay 0 so derived Eq/Hash/Ord only see the digits.
    digits: [u8; 8],
    len: u8,
}

/// How deep in the administrative hierarchy a civil code points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegionLevel {
    /// The empty code: no region given.
    Unspecified,
    /// 2 digits.
    Province,
    /// 4 digits.
    City,
    /// 6 digits.
    County,
    /// 8 digits.
    Grassroots,
}

/// Why a string is not a civil code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CivilCodeError {
    /// Not 2, 4, 6 or 8 characters.
    #[error("civil code must be 2, 4, 6 or 8 digits, got {len}")]
    Length {
        /// Number of characters found.
        len: usize,
    },
    /// A character is not an ASCII digit.
    #[error("civil code has {found:?} at position {position}; use digits 0-9 only")]
    NotDigit {
        /// 1-based character position.
        position: usize,
        /// The character found there.
        found: char,
    },
    /// All digits are zero, which names no region.
    #[error(
        "civil code {given} is all zeros and names no region; start with the 2-digit province code"
    )]
    Zero {
        /// The code as given.
        given: String,
    },
}

impl CivilCode {
    /// The empty code: no region given.
    pub const UNSPECIFIED: CivilCode = CivilCode {
        digits: [0; 8],
        len: 0,
    };

    /// Parses a 2/4/6/8-digit code, dropping trailing `00` pairs.
    pub fn parse(s: &str) -> Result<CivilCode, CivilCodeError> {
        if let Some((i, c)) = s.chars().enumerate().find(|(_, c)| !c.is_ascii_digit()) {
            return Err(CivilCodeError::NotDigit {
                position: i + 1,
                found: c,
            });
        }
        // All characters are ASCII digits here, so bytes == chars.
        let len = s.len();
        if !matches!(len, 2 | 4 | 6 | 8) {
            return Err(CivilCodeError::Length { len });
        }
        let code = CivilCode::from_digits(s.as_bytes());
        if code.is_empty() {
            return Err(CivilCodeError::Zero {
                given: s.to_owned(),
            });
        }
        Ok(code)
    }

    /// The civil code in the first 8 bytes of a validated ID.
    pub(crate) fn from_id_prefix(id: &[u8; 20]) -> CivilCode {
        CivilCode::from_digits(id.get(..8).unwrap_or_default())
    }

    /// Normalises up to 8 ASCII digits (caller guarantees digits, even length).
    fn from_digits(bytes: &[u8]) -> CivilCode {
        let mut digits = [0u8; 8];
        let mut len = bytes.len().min(8);
        for (slot, b) in digits.iter_mut().zip(bytes.iter().take(len)) {
            *slot = *b;
        }
        while len >= 2 && digits.get(len - 2..len) == Some(b"00".as_slice()) {
            len -= 2;
        }
        for slot in digits.iter_mut().skip(len) {
            *slot = 0;
        }
        CivilCode {
            digits,
            // len ≤ 8.
            len: u8::try_from(len).unwrap_or(8),
        }
    }

    /// The digits (empty for the unspecified code).
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are stored below `len`; the fallback is unreachable.
        std::str::from_utf8(self.digits.get(..usize::from(self.len)).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Number of digits: 0, 2, 4, 6 or 8.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// True for the unspecified code.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How deep the code points.
    pub fn level(&self) -> RegionLevel {
        match self.len {
            0 => RegionLevel::Unspecified,
            2 => RegionLevel::Province,
            4 => RegionLevel::City,
            6 => RegionLevel::County,
            _ => RegionLevel::Grassroots,
        }
    }

    /// True if `self` lies in `parent`'s region: `parent`'s digits are a
    /// prefix of `self`'s. A code lies under itself, and every code lies
    /// under the unspecified one.
    pub fn is_under(&self, parent: &CivilCode) -> bool {
        self.as_str().starts_with(parent.as_str())
    }

    /// True if `self` lies under `parent` and is strictly deeper.
    pub fn is_strictly_under(&self, parent: &CivilCode) -> bool {
        self.len > parent.len && self.is_under(parent)
    }

    /// The enclosing region (one level up), skipping `00` levels
    /// (`350102` → `3501`; `35` → unspecified). `None` for the unspecified code.
    pub fn parent(&self) -> Option<CivilCode> {
        if self.is_empty() {
            return None;
        }
        Some(CivilCode::from_digits(
            self.digits.get(..self.len() - 2).unwrap_or_default(),
        ))
    }

    /// Digits 1–2, unless absent or `00`.
    pub fn province(&self) -> Option<&str> {
        self.piece(0)
    }

    /// Digits 3–4, unless absent or `00`.
    pub fn city(&self) -> Option<&str> {
        self.piece(2)
    }

    /// Digits 5–6, unless absent or `00`.
    pub fn county(&self) -> Option<&str> {
        self.piece(4)
    }

    /// Digits 7–8, unless absent or `00`.
    pub fn grassroots(&self) -> Option<&str> {
        self.piece(6)
    }

    fn piece(&self, from: usize) -> Option<&str> {
        self.as_str()
            .get(from..from + 2)
            .filter(|piece| *piece != "00")
    }
}

impl fmt::Display for CivilCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CivilCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CivilCode({:?})", self.as_str())
    }
}

impl FromStr for CivilCode {
    type Err = CivilCodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CivilCode::parse(s)
    }
}

impl Serialize for CivilCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CivilCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = CivilCode;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 2, 4, 6 or 8-digit civil code as a string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CivilCode, E> {
                // "" is how the unspecified code serialises; accept it back.
                if v.is_empty() {
                    return Ok(CivilCode::UNSPECIFIED);
                }
                CivilCode::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cc(s: &str) -> CivilCode {
        CivilCode::parse(s).unwrap()
    }

    #[test]
    fn parse_normalises() {
        assert_eq!(cc("35010200").as_str(), "350102");
        assert_eq!(cc("35000000").as_str(), "35");
        assert_eq!(cc("3501"), cc("350100"));
        assert_eq!(cc("35010201").level(), RegionLevel::Grassroots);
        assert_eq!(cc("350102").level(), RegionLevel::County);
        // A 00 in the middle is kept: only trailing pairs are padding.
        let odd = cc("35001000");
        assert_eq!(odd.as_str(), "350010");
        assert_eq!(odd.city(), None);
        assert_eq!(odd.county(), Some("10"));
    }

    #[test]
    fn parse_errors() {
        assert_eq!(
            CivilCode::parse("350").unwrap_err(),
            CivilCodeError::Length { len: 3 }
        );
        assert_eq!(
            CivilCode::parse("35a1").unwrap_err(),
            CivilCodeError::NotDigit {
                position: 3,
                found: 'a'
            }
        );
        assert!(matches!(
            CivilCode::parse("0000"),
            Err(CivilCodeError::Zero { .. })
        ));
        assert!(CivilCode::parse("").is_err());
        assert!(CivilCode::parse("3501020100").is_err());
    }

    #[test]
    fn hierarchy() {
        let city = cc("3501");
        let county = cc("350102");
        assert!(county.is_under(&city));
        assert!(county.is_strictly_under(&city));
        assert!(county.is_under(&county));
        assert!(!county.is_strictly_under(&county));
        assert!(!city.is_under(&county));
        assert!(!cc("350202").is_under(&city));
        assert!(city.is_under(&CivilCode::UNSPECIFIED));
        assert_eq!(county.parent(), Some(city));
        assert_eq!(cc("35").parent(), Some(CivilCode::UNSPECIFIED));
        assert_eq!(CivilCode::UNSPECIFIED.parent(), None);
        assert_eq!(cc("35000010").parent(), Some(cc("35")));
    }

    #[test]
    fn serde_round_trip() {
        let v = toml::Value::try_from(cc("350102")).unwrap();
        assert_eq!(v.as_str(), Some("350102"));
        let back: CivilCode = v.try_into().unwrap();
        assert_eq!(back, cc("350102"));
        let empty: CivilCode = toml::Value::String(String::new()).try_into().unwrap();
        assert!(empty.is_empty());
    }

    fn normalise(s: &str) -> &str {
        let mut t = s;
        while t.len() >= 2 && t.ends_with("00") {
            t = &t[..t.len() - 2];
        }
        t
    }

    proptest! {
        #[test]
        fn under_is_normalised_prefix(a in "[0-9]{8}", b in "(00|[0-9]{2}){1,4}") {
            let (na, nb) = (normalise(&a), normalise(&b));
            prop_assume!(!na.is_empty() && !nb.is_empty());
            let (ca, cb) = (cc(&a), cc(&b));
            prop_assert_eq!(ca.as_str(), na);
            prop_assert_eq!(ca.is_under(&cb), na.starts_with(nb));
        }

        #[test]
        fn parent_chain_stays_under(a in "[0-9]{8}") {
            let mut code = CivilCode::from_digits(a.as_bytes());
            let start = code;
            while let Some(up) = code.parent() {
                prop_assert!(start.is_under(&up));
                prop_assert!(code.is_strictly_under(&up));
                code = up;
            }
            prop_assert!(code.is_empty());
        }

        #[test]
        fn id_civil_code_is_padded_prefix(s in "[0-9]{20}") {
            let id = crate::GbId::parse(&s).unwrap();
            let code = id.civil_code();
            prop_assert!(s.starts_with(code.as_str()));
            prop_assert!(s[code.len()..8].bytes().all(|b| b == b'0'));
            prop_assert_eq!(code.len() % 2, 0);
            prop_assert!(!code.as_str().ends_with("00"));
        }
    }
}
