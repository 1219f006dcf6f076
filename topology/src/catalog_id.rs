//! IDs found in catalog trees: 20-digit IDs or 2/4/6/8-digit region nodes.
//!
//! A catalog `DeviceID` is usually a 20-digit ID, but administrative-region
//! nodes of the tree are bare civil codes (`35`, `3501`, `350102`, `35010201`).
//! They are tree structure, not devices: nothing registers or streams as them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::civil::{CivilCode, CivilCodeError};
use crate::id::{GbId, IdError};

/// One node ID of a catalog tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CatalogId {
    /// An administrative region (2/4/6/8 digits, normalised; see [`CivilCode`]).
    Region(CivilCode),
    /// A device, channel, platform, business group or virtual organisation.
    Id(GbId),
}

/// Why a string is not a catalog node ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogIdError {
    /// A 20-character string that is not an ID.
    #[error(transparent)]
    Id(#[from] IdError),
    /// A 2/4/6/8-character string that is not a civil code.
    #[error(transparent)]
    Region(#[from] CivilCodeError),
    /// Neither 20 nor 2, 4, 6 or 8 characters.
    #[error("catalog node ID must be 20 digits (device, channel or platform) or 2, 4, 6 or 8 digits (region), got {len}")]
    Length {
        /// Number of characters found.
        len: usize,
    },
}

/// True if `s` has the shape of a region node ID: 2, 4, 6 or 8 ASCII digits.
pub fn is_region_id(s: &str) -> bool {
    matches!(s.len(), 2 | 4 | 6 | 8) && s.bytes().all(|b| b.is_ascii_digit())
}

impl CatalogId {
    /// Parses a catalog node ID.
    pub fn parse(s: &str) -> Result<CatalogId, CatalogIdError> {
        match s.chars().count() {
            GbId::LEN => Ok(CatalogId::Id(GbId::parse(s)?)),
            2 | 4 | 6 | 8 => Ok(CatalogId::Region(CivilCode::parse(s)?)),
            len => {
                // Name a bad character first, as GbId::parse does.
                if let Some((i, c)) = s.chars().enumerate().find(|(_, c)| !c.is_ascii_digit()) {
                    return Err(IdError::NotDigit {
                        position: i + 1,
                        found: c,
                    }
                    .into());
                }
                Err(CatalogIdError::Length { len })
            }
        }
    }

    /// True for a region node.
    pub fn is_region(&self) -> bool {
        matches!(self, CatalogId::Region(_))
    }

    /// The 20-digit ID, unless this is a region.
    pub fn gb_id(&self) -> Option<GbId> {
        match self {
            CatalogId::Id(id) => Some(*id),
            CatalogId::Region(_) => None,
        }
    }

    /// The region this node names or lies in.
    pub fn civil_code(&self) -> CivilCode {
        match self {
            CatalogId::Id(id) => id.civil_code(),
            CatalogId::Region(code) => *code,
        }
    }

    /// The ID as written (regions in normalised form).
    pub fn as_str(&self) -> &str {
        match self {
            CatalogId::Id(id) => id.as_str(),
            CatalogId::Region(code) => code.as_str(),
        }
    }
}

impl From<GbId> for CatalogId {
    fn from(id: GbId) -> Self {
        CatalogId::Id(id)
    }
}

impl From<CivilCode> for CatalogId {
    fn from(code: CivilCode) -> Self {
        CatalogId::Region(code)
    }
}

impl fmt::Display for CatalogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CatalogId {
    type Err = CatalogIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CatalogId::parse(s)
    }
}

impl Serialize for CatalogId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CatalogId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = CatalogId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 20-digit ID or a 2, 4, 6 or 8-digit region code, as a string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CatalogId, E> {
                CatalogId::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_regions_and_ids() {
        assert!(is_region_id("35"));
        assert!(is_region_id("35010201"));
        assert!(!is_region_id("350"));
        assert!(!is_region_id("3501020100"));
        assert!(!is_region_id("35a1"));
        assert!(!is_region_id("35010200001320000101"));

        let region = CatalogId::parse("350102").unwrap();
        assert!(region.is_region());
        assert_eq!(region.civil_code().as_str(), "350102");
        assert_eq!(region.gb_id(), None);

        let cam = CatalogId::parse("35010200001320000101").unwrap();
        assert!(!cam.is_region());
        assert_eq!(cam.civil_code().as_str(), "350102");
        assert_eq!(cam.to_string(), "35010200001320000101");
    }

    #[test]
    fn errors() {
        assert_eq!(
            CatalogId::parse("123").unwrap_err(),
            CatalogIdError::Length { len: 3 }
        );
        assert!(matches!(
            CatalogId::parse("1x3"),
            Err(CatalogIdError::Id(IdError::NotDigit { position: 2, .. }))
        ));
        assert!(matches!(
            CatalogId::parse("00"),
            Err(CatalogIdError::Region(CivilCodeError::Zero { .. }))
        ));
        assert!(matches!(
            CatalogId::parse("3501020000132000010x"),
            Err(CatalogIdError::Id(IdError::NotDigit { position: 20, .. }))
        ));
    }
}
