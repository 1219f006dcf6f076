//! The 20-digit GB/T 28181 ID (coding rule A) and its fields.
//!
//! | digits | field |
//! |---|---|
//! | 1–8 | civil code: province, city, county, grassroots unit (2 each, `00` = none) |
//! | 9–10 | industry |
//! | 11–13 | type code (see [`TypeClass`]) |
//! | 14 | network flag |
//! | 15–20 | serial |
//!
//! Digits 1–10 together are the SIP domain ID, used as the digest realm.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::civil::CivilCode;
use crate::type_code::{self, TypeClass};

/// A validated GB/T 28181 ID: exactly 20 ASCII digits.
///
/// Ordering is numeric (the digits compare byte by byte), so IDs sharing a
/// prefix sort together.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GbId([u8; GbId::LEN]);

/// Why a string is not a GB/T 28181 ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string is not 20 characters long (all of them digits).
    #[error("ID must be 20 digits, got {len}")]
    Length {
        /// Number of characters found.
        len: usize,
    },
    /// A character is not an ASCII digit.
    #[error("ID has {found:?} at position {position}; an ID is 20 digits 0-9")]
    NotDigit {
        /// 1-based character position of the first bad character.
        position: usize,
        /// The character found there.
        found: char,
    },
    /// The domain given to [`GbId::from_parts`] is not 10 digits.
    #[error("domain must be 10 digits (civil code and industry), got {len} characters")]
    DomainLength {
        /// Number of characters found.
        len: usize,
    },
    /// A numeric field given to [`GbId::from_parts`] or a `with_*` method is too large.
    #[error("{field} {value} does not fit; it must be at most {max}")]
    FieldRange {
        /// Which field: "type code", "network digit" or "serial".
        field: &'static str,
        /// The value given.
        value: u32,
        /// The largest value the field holds.
        max: u32,
    },
}

impl GbId {
    /// Number of digits in an ID.
    pub const LEN: usize = 20;

    /// Parses a 20-digit ID.
    ///
    /// The first non-digit is reported before a wrong length, so a stray space
    /// or letter is named by position even when it also makes the string too long.
    pub fn parse(s: &str) -> Result<GbId, IdError> {
        let mut digits = [b'0'; GbId::LEN];
        let mut len = 0usize;
        for (i, c) in s.chars().enumerate() {
            if !c.is_ascii_digit() {
                return Err(IdError::NotDigit {
                    position: i + 1,
                    found: c,
                });
            }
            if let Some(slot) = digits.get_mut(i) {
                // `c` is an ASCII digit, so it fits in one byte.
                *slot = c as u8;
            }
            len += 1;
        }
        if len != GbId::LEN {
            return Err(IdError::Length { len });
        }
        Ok(GbId(digits))
    }

    /// Builds an ID from a 10-digit domain (civil code + industry), a type code
    /// (0–999), a network digit (0–9) and a serial (0–999 999).
    pub fn from_parts(
        domain: &str,
        type_code: u16,
        network_digit: u8,
        serial: u32,
    ) -> Result<GbId, IdError> {
        let len = domain.chars().count();
        if len != 10 {
            // A domain with a bad character is reported by position below.
            if let Some((i, c)) = domain
                .chars()
                .enumerate()
                .find(|(_, c)| !c.is_ascii_digit())
            {
                return Err(IdError::NotDigit {
                    position: i + 1,
                    found: c,
                });
            }
            return Err(IdError::DomainLength { len });
        }
        check_range("type code", u32::from(type_code), 999)?;
        check_range("network digit", u32::from(network_digit), 9)?;
        check_range("serial", serial, 999_999)?;
        GbId::parse(&format!("{domain}{type_code:03}{network_digit}{serial:06}"))
    }

    /// The same ID with digits 15–20 replaced by `serial` (at most 999 999).
    pub fn with_serial(self, serial: u32) -> Result<GbId, IdError> {
        GbId::from_parts(
            self.domain(),
            self.type_code(),
            self.network_digit(),
            serial,
        )
    }

    /// The same ID with digits 11–13 replaced by `type_code` (at most 999).
    pub fn with_type_code(self, type_code: u16) -> Result<GbId, IdError> {
        GbId::from_parts(
            self.domain(),
            type_code,
            self.network_digit(),
            self.serial(),
        )
    }

    /// The ID as its 20 digits.
    pub fn as_str(&self) -> &str {
        // Only `parse` builds a GbId and it stores ASCII digits only, so this
        // never fails; the fallback keeps the function panic-free.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The 20 digits as bytes.
    pub fn as_bytes(&self) -> &[u8; GbId::LEN] {
        &self.0
    }

    /// Digits 1–8 as a civil code, trailing `00` pairs dropped
    /// (`35010200…` → `350102`, `35000000…` → `35`).
    ///
    /// An ID whose first 8 digits are all zero yields the unspecified
    /// (empty) code, which every code lies under.
    pub fn civil_code(&self) -> CivilCode {
        CivilCode::from_id_prefix(&self.0)
    }

    /// Digits 1–2, the province, unless `00`.
    pub fn province(&self) -> Option<&str> {
        self.piece(0)
    }

    /// Digits 3–4, the city, unless `00`.
    pub fn city(&self) -> Option<&str> {
        self.piece(2)
    }

    /// Digits 5–6, the county or district, unless `00`.
    pub fn county(&self) -> Option<&str> {
        self.piece(4)
    }

    /// Digits 7–8, the grassroots unit, unless `00`.
    pub fn grassroots(&self) -> Option<&str> {
        self.piece(6)
    }

    /// Digits 1–10: the SIP domain ID, conventionally the digest realm.
    pub fn domain(&self) -> &str {
        self.digits(0, 10)
    }

    /// Digits 9–10: the industry code (00–03 public security, 04–07 traffic, …).
    pub fn industry_code(&self) -> u8 {
        // Two digits are at most 99.
        u8::try_from(self.number(8, 10)).unwrap_or(u8::MAX)
    }

    /// Digits 11–13: the type code (132 IPC, 200 platform, …).
    pub fn type_code(&self) -> u16 {
        // Three digits are at most 999.
        u16::try_from(self.number(10, 13)).unwrap_or(u16::MAX)
    }

    /// The class of [`GbId::type_code`].
    pub fn type_class(&self) -> TypeClass {
        TypeClass::of(self.type_code())
    }

    /// A short English name of the type code, for messages and logs.
    pub fn type_name(&self) -> &'static str {
        type_code::describe(self.type_code())
    }

    /// Digit 14: the network flag (2016: 0–4 private surveillance net, 7 Internet, …).
    pub fn network_digit(&self) -> u8 {
        u8::try_from(self.number(13, 14)).unwrap_or(u8::MAX)
    }

    /// Digits 15–20: the serial number.
    pub fn serial(&self) -> u32 {
        self.number(14, 20)
    }

    /// Type 200: a central SIP server, i.e. a platform. Every gbgate node is one.
    pub fn is_platform(&self) -> bool {
        self.type_code() == type_code::PLATFORM
    }

    /// A device that registers as itself: a front-end main device (111–130,
    /// DVR, NVR, encoder…) or an IPC (132).
    pub fn is_device(&self) -> bool {
        let code = self.type_code();
        (111..=130).contains(&code) || code == type_code::IPC
    }

    /// A video channel: camera (131) or IPC (132).
    pub fn is_channel(&self) -> bool {
        type_code::is_channel(self.type_code())
    }

    /// Slice `[from, to)` of the digits.
    fn digits(&self, from: usize, to: usize) -> &str {
        self.as_str().get(from..to).unwrap_or_default()
    }

    /// Two digits starting at `from`, unless they are `00`.
    fn piece(&self, from: usize) -> Option<&str> {
        let s = self.digits(from, from + 2);
        (s != "00").then_some(s)
    }

    /// Digits `[from, to)` as a number.
    fn number(&self, from: usize, to: usize) -> u32 {
        self.0
            .get(from..to)
            .unwrap_or_default()
            .iter()
            .fold(0u32, |acc, b| acc * 10 + u32::from(b.saturating_sub(b'0')))
    }
}

fn check_range(field: &'static str, value: u32, max: u32) -> Result<(), IdError> {
    if value > max {
        return Err(IdError::FieldRange { field, value, max });
    }
    Ok(())
}

impl fmt::Display for GbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for GbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GbId({})", self.as_str())
    }
}

impl FromStr for GbId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GbId::parse(s)
    }
}

impl TryFrom<&str> for GbId {
    type Error = IdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        GbId::parse(s)
    }
}

impl AsRef<str> for GbId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Serialize for GbId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for GbId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = GbId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 20-digit GB/T 28181 ID as a string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GbId, E> {
                GbId::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::civil::RegionLevel;
    use proptest::prelude::*;

    fn id(s: &str) -> GbId {
        GbId::parse(s).unwrap()
    }

    #[test]
    fn ipc_fields() {
        let ipc = id("34020000001320000001");
        assert_eq!(ipc.domain(), "3402000000");
        assert_eq!(ipc.civil_code().as_str(), "3402");
        assert_eq!(ipc.civil_code().level(), RegionLevel::City);
        assert_eq!(ipc.province(), Some("34"));
        assert_eq!(ipc.city(), Some("02"));
        assert_eq!(ipc.county(), None);
        assert_eq!(ipc.grassroots(), None);
        assert_eq!(ipc.industry_code(), 0);
        assert_eq!(ipc.type_code(), 132);
        assert_eq!(ipc.type_class(), TypeClass::Peripheral);
        assert_eq!(ipc.type_name(), "IP camera");
        assert_eq!(ipc.network_digit(), 0);
        assert_eq!(ipc.serial(), 1);
        assert!(ipc.is_channel());
        assert!(ipc.is_device());
        assert!(!ipc.is_platform());
    }

    #[test]
    fn platform_and_nvr_fields() {
        let p = id("35010200002000000003");
        assert_eq!(p.civil_code().as_str(), "350102");
        assert_eq!(p.county(), Some("02"));
        assert!(p.is_platform());
        assert!(!p.is_device());
        assert!(!p.is_channel());
        assert_eq!(p.type_class(), TypeClass::Platform);
        assert_eq!(p.serial(), 3);

        let nvr = id("35010201041187123456");
        assert_eq!(nvr.civil_code().as_str(), "35010201");
        assert_eq!(nvr.grassroots(), Some("01"));
        assert_eq!(nvr.industry_code(), 4);
        assert_eq!(nvr.type_code(), 118);
        assert_eq!(nvr.type_class(), TypeClass::FrontEndDevice);
        assert_eq!(nvr.network_digit(), 7);
        assert_eq!(nvr.serial(), 123_456);
        assert!(nvr.is_device());
        assert!(!nvr.is_channel());
    }

    #[test]
    fn civil_code_of_zero_prefix_is_unspecified() {
        let z = id("00000000002000000001");
        assert!(z.civil_code().is_empty());
        assert_eq!(z.civil_code().level(), RegionLevel::Unspecified);
        assert_eq!(z.province(), None);
        let province = id("35000000002000000001");
        assert_eq!(province.civil_code().as_str(), "35");
    }

    #[test]
    fn errors_name_length_and_position() {
        assert_eq!(
            GbId::parse("3402000000132000000").unwrap_err().to_string(),
            "ID must be 20 digits, got 19"
        );
        assert_eq!(
            GbId::parse("3402x000001320000001").unwrap_err(),
            IdError::NotDigit {
                position: 5,
                found: 'x'
            }
        );
        assert_eq!(
            GbId::parse("34020000001320000001 ").unwrap_err(),
            IdError::NotDigit {
                position: 21,
                found: ' '
            }
        );
        assert_eq!(GbId::parse("").unwrap_err(), IdError::Length { len: 0 });
        // Multi-byte characters count as one position.
        assert_eq!(
            GbId::parse("3é").unwrap_err(),
            IdError::NotDigit {
                position: 2,
                found: 'é'
            }
        );
        // Full-width digits are not ASCII digits.
        assert!(matches!(
            GbId::parse("３４020000001320000001"),
            Err(IdError::NotDigit { position: 1, .. })
        ));
    }

    #[test]
    fn from_parts_and_with() {
        let a = GbId::from_parts("3501020000", 132, 0, 42).unwrap();
        assert_eq!(a.as_str(), "35010200001320000042");
        assert_eq!(a.with_serial(7).unwrap().as_str(), "35010200001320000007");
        assert_eq!(
            a.with_type_code(200).unwrap().as_str(),
            "35010200002000000042"
        );
        assert!(matches!(
            a.with_serial(1_000_000),
            Err(IdError::FieldRange {
                field: "serial",
                ..
            })
        ));
        assert!(matches!(
            GbId::from_parts("35010200", 200, 0, 1),
            Err(IdError::DomainLength { len: 8 })
        ));
        assert!(matches!(
            GbId::from_parts("350102000x", 200, 0, 1),
            Err(IdError::NotDigit { position: 10, .. })
        ));
        assert!(GbId::from_parts("3501020000", 1000, 0, 1).is_err());
        assert!(GbId::from_parts("3501020000", 200, 10, 1).is_err());
    }

    #[test]
    fn traits() {
        let a = id("34020000001320000001");
        assert_eq!(format!("{a:?}"), "GbId(34020000001320000001)");
        assert_eq!(a.to_string(), "34020000001320000001");
        assert_eq!("34020000001320000001".parse::<GbId>().unwrap(), a);
        assert_eq!(GbId::try_from("34020000001320000001").unwrap(), a);
        assert!(id("34020000001320000001") < id("34020000001320000002"));
        let json_like = toml::Value::try_from(a).unwrap();
        assert_eq!(json_like.as_str(), Some("34020000001320000001"));
        let back: GbId = json_like.try_into().unwrap();
        assert_eq!(back, a);
    }

    proptest! {
        #[test]
        fn any_20_digits_round_trip(s in "[0-9]{20}") {
            let parsed = GbId::parse(&s).unwrap();
            prop_assert_eq!(parsed.to_string(), s.clone());
            prop_assert_eq!(parsed.as_str(), s.as_str());
            prop_assert!(parsed.domain().len() == 10);
            prop_assert_eq!(
                format!("{}{:03}{}{:06}", parsed.domain(), parsed.type_code(), parsed.network_digit(), parsed.serial()),
                s
            );
        }

        #[test]
        fn first_non_digit_is_reported(prefix in "[0-9]{0,25}", bad in "[^0-9]", rest in "\\PC{0,25}") {
            let s = format!("{prefix}{bad}{rest}");
            let k = prefix.chars().count() + 1;
            let found = bad.chars().next().unwrap();
            prop_assert_eq!(GbId::parse(&s), Err(IdError::NotDigit { position: k, found }));
        }

        #[test]
        fn wrong_length_digits_report_length(s in "[0-9]{0,40}") {
            prop_assume!(s.len() != 20);
            prop_assert_eq!(GbId::parse(&s), Err(IdError::Length { len: s.len() }));
        }

        #[test]
        fn never_panics(s in "\\PC{0,30}") {
            let _ = GbId::parse(&s);
        }
    }
}
