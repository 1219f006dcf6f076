//! Fuzzes the ID parsers: `GbId`, `CivilCode` and `CatalogId` never panic,
//! and whatever parses prints back as it was read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use topology::{CatalogId, CivilCode, GbId};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = GbId::parse(text) {
        assert_eq!(id.as_str(), text);
        assert_eq!(id.to_string().parse::<GbId>().ok(), Some(id));
        assert!(text.starts_with(id.civil_code().as_str()));
        assert!(text.starts_with(id.domain()));
        let _ = (id.type_class(), id.serial(), id.network_digit(), id.industry_code());
        let _ = (id.province(), id.city(), id.county(), id.grassroots());
    }
    if let Ok(code) = CivilCode::parse(text) {
        assert!(text.starts_with(code.as_str()));
        assert_eq!(code.as_str().parse::<CivilCode>().ok(), Some(code));
        let _ = (code.level(), code.parent());
    }
    if let Ok(node) = CatalogId::parse(text) {
        assert_eq!(node.to_string().parse::<CatalogId>().ok(), Some(node));
    }
});
