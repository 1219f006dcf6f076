//! A catalog item packed into one byte string for storage.
//!
//! The city holds ~420,000 entries. As a `CatalogItem` (a dozen
//! `Option<String>`s, each its own allocation) an entry costs about 1 KB;
//! packed, with only the fields present, it is a single allocation of
//! about 150–250 bytes. Packing is deterministic, so two packed items are
//! equal exactly when their fields are, which is how changes are detected.
//! `device_id`, `status` and `event` are not packed: the key, a flag and a
//! transient carry them.

use crate::gb::manscdp::CatalogItem;

#[derive(Clone, Copy)]
enum Tag {
    Name = 1,
    Manufacturer,
    Model,
    Owner,
    CivilCode,
    Block,
    Address,
    Parental,
    ParentId,
    SafetyWay,
    RegisterWay,
    Secrecy,
    IpAddress,
    Port,
    Longitude,
    Latitude,
    BusinessGroupId,
}

fn put_str(out: &mut Vec<u8>, tag: Tag, v: &Option<String>) {
    if let Some(s) = v {
        // Longer text is cut at a character boundary: GB/T 28181 fields are
        // short, and a peer must not make one entry arbitrarily large.
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        out.push(tag as u8);
        out.extend_from_slice(&(end as u16).to_le_bytes());
        out.extend_from_slice(&s.as_bytes()[..end]);
    }
}

fn put_bytes<const N: usize>(out: &mut Vec<u8>, tag: Tag, v: Option<[u8; N]>) {
    if let Some(b) = v {
        out.push(tag as u8);
        out.extend_from_slice(&b);
    }
}

/// Pack the stored fields of `item`.
pub fn pack(item: &CatalogItem) -> Box<[u8]> {
    let mut out = Vec::with_capacity(256);
    pack_fields(item, true, &mut out);
    // A copy of exactly the bytes: `into_boxed_slice` may keep the grown
    // buffer's allocation (mimalloc shrinks in place).
    Box::from(out.as_slice())
}

/// Pack the stored fields of `item` but its `ParentID` (the catalog keeps
/// that apart) into `out` (cleared first), without copying the item: the
/// catalog reuses one buffer and stores the bytes in its arena.
pub fn pack_except_parent_into(item: &CatalogItem, out: &mut Vec<u8>) {
    out.clear();
    pack_fields(item, false, out);
}

fn pack_fields(item: &CatalogItem, with_parent: bool, out: &mut Vec<u8>) {
    put_str(out, Tag::Name, &item.name);
    put_str(out, Tag::Manufacturer, &item.manufacturer);
    put_str(out, Tag::Model, &item.model);
    put_str(out, Tag::Owner, &item.owner);
    put_str(out, Tag::CivilCode, &item.civil_code);
    put_str(out, Tag::Block, &item.block);
    put_str(out, Tag::Address, &item.address);
    put_bytes(out, Tag::Parental, item.parental.map(|v| [v]));
    if with_parent {
        put_str(out, Tag::ParentId, &item.parent_id);
    }
    put_bytes(out, Tag::SafetyWay, item.safety_way.map(|v| [v]));
    put_bytes(out, Tag::RegisterWay, item.register_way.map(|v| [v]));
    put_bytes(out, Tag::Secrecy, item.secrecy.map(|v| [v]));
    put_str(out, Tag::IpAddress, &item.ip_address);
    put_bytes(out, Tag::Port, item.port.map(u16::to_le_bytes));
    put_bytes(out, Tag::Longitude, item.longitude.map(f64::to_le_bytes));
    put_bytes(out, Tag::Latitude, item.latitude.map(f64::to_le_bytes));
    put_str(out, Tag::BusinessGroupId, &item.business_group_id);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn str(&mut self) -> Option<String> {
        let len = self.take(2)?;
        let len = u16::from_le_bytes([*len.first()?, *len.get(1)?]) as usize;
        let bytes = self.take(len)?;
        Some(String::from_utf8_lossy(bytes).into_owned())
    }

    fn arr<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

/// The name alone, without unpacking the rest: `pack` writes it first.
/// Search reads it for every entry.
pub fn name(packed: &[u8]) -> Option<&str> {
    let (&tag, rest) = packed.split_first()?;
    if tag != Tag::Name as u8 {
        return None;
    }
    let len = u16::from_le_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    std::str::from_utf8(rest.get(2..2 + len)?).ok()
}

/// The address alone, without unpacking the rest: `pack` writes only
/// text fields before it. Search reads it for every entry.
pub fn address(packed: &[u8]) -> Option<&str> {
    let mut rest = packed;
    loop {
        let (&tag, after) = rest.split_first()?;
        if tag > Tag::Address as u8 {
            return None;
        }
        let len = u16::from_le_bytes([*after.first()?, *after.get(1)?]) as usize;
        let text = after.get(2..2 + len)?;
        if tag == Tag::Address as u8 {
            return std::str::from_utf8(text).ok();
        }
        rest = after.get(2 + len..)?;
    }
}

/// Unpack into an item with `device_id` and the given status.
pub fn unpack(device_id: &str, packed: &[u8], on: bool) -> CatalogItem {
    let mut item = CatalogItem {
        device_id: device_id.to_owned(),
        status: Some(if on { "ON" } else { "OFF" }.to_owned()),
        ..CatalogItem::default()
    };
    let mut r = Reader(packed);
    // Packed by `pack` in this process, so a short read cannot happen; if
    // it did, the fields read so far are kept.
    while let Some(tag) = r.take(1).and_then(|t| t.first().copied()) {
        let ok = match tag {
            t if t == Tag::Name as u8 => r.str().map(|v| item.name = Some(v)),
            t if t == Tag::Manufacturer as u8 => r.str().map(|v| item.manufacturer = Some(v)),
            t if t == Tag::Model as u8 => r.str().map(|v| item.model = Some(v)),
            t if t == Tag::Owner as u8 => r.str().map(|v| item.owner = Some(v)),
            t if t == Tag::CivilCode as u8 => r.str().map(|v| item.civil_code = Some(v)),
            t if t == Tag::Block as u8 => r.str().map(|v| item.block = Some(v)),
            t if t == Tag::Address as u8 => r.str().map(|v| item.address = Some(v)),
            t if t == Tag::Parental as u8 => r.arr::<1>().map(|v| item.parental = Some(v[0])),
            t if t == Tag::ParentId as u8 => r.str().map(|v| item.parent_id = Some(v)),
            t if t == Tag::SafetyWay as u8 => r.arr::<1>().map(|v| item.safety_way = Some(v[0])),
            t if t == Tag::RegisterWay as u8 => {
                r.arr::<1>().map(|v| item.register_way = Some(v[0]))
            }
            t if t == Tag::Secrecy as u8 => r.arr::<1>().map(|v| item.secrecy = Some(v[0])),
            t if t == Tag::IpAddress as u8 => r.str().map(|v| item.ip_address = Some(v)),
            t if t == Tag::Port as u8 => r
                .arr::<2>()
                .map(|v| item.port = Some(u16::from_le_bytes(v))),
            t if t == Tag::Longitude as u8 => r
                .arr::<8>()
                .map(|v| item.longitude = Some(f64::from_le_bytes(v))),
            t if t == Tag::Latitude as u8 => r
                .arr::<8>()
                .map(|v| item.latitude = Some(f64::from_le_bytes(v))),
            t if t == Tag::BusinessGroupId as u8 => {
                r.str().map(|v| item.business_group_id = Some(v))
            }
            _ => None,
        };
        if ok.is_none() {
            break;
        }
    }
    item
}

/// The packed item's parent ID, without unpacking the rest.
pub fn parent_id(packed: &[u8]) -> Option<String> {
    unpack("", packed, true).parent_id
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_address_is_read_without_unpacking() {
        let mut item = CatalogItem {
            name: Some("cam".into()),
            model: Some("X".into()),
            parental: Some(0),
            ..CatalogItem::default()
        };
        assert_eq!(address(&pack(&item)), None);
        item.address = Some("五四路".into());
        assert_eq!(address(&pack(&item)), Some("五四路"));
        assert_eq!(address(&[]), None);
        assert_eq!(address(&[7, 9]), None, "cut short");
    }

    fn opt_s() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("\\PC{0,40}")
    }

    prop_compose! {
        fn item()(name in opt_s(), manufacturer in opt_s(), model in opt_s(), owner in opt_s(),
                  civil_code in opt_s(), block in opt_s(), address in opt_s(), parental in any::<Option<u8>>(),
                  parent_id in opt_s(), safety_way in any::<Option<u8>>(), register_way in any::<Option<u8>>(),
                  secrecy in any::<Option<u8>>(), ip_address in opt_s(), port in any::<Option<u16>>(),
                  longitude in proptest::option::of(-180.0f64..180.0), latitude in proptest::option::of(-90.0f64..90.0),
                  business_group_id in opt_s(), on in any::<bool>())
                 -> CatalogItem {
            CatalogItem {
                device_id: "35010201001310000001".into(),
                name, manufacturer, model, owner, civil_code, block, address, parental, parent_id,
                safety_way, register_way, secrecy, ip_address, port,
                status: Some(if on { "ON" } else { "OFF" }.into()),
                longitude, latitude, business_group_id, event: None,
            }
        }
    }

    proptest! {
        #[test]
        fn pack_unpack_round_trips(i in item()) {
            let on = i.status.as_deref() == Some("ON");
            let p = pack(&i);
            prop_assert_eq!(unpack(&i.device_id, &p, on), i.clone());
            prop_assert_eq!(parent_id(&p), i.parent_id.clone());
            // Deterministic: equal items pack to equal bytes.
            prop_assert_eq!(pack(&i.clone()), p);
        }
    }

    #[test]
    fn a_typical_channel_packs_small() {
        let i = CatalogItem {
            device_id: "35010201001310100009".into(),
            name: Some("模拟录像机 NVR0 通道1".into()),
            manufacturer: Some("gbsim".into()),
            model: Some("SIM-CAM".into()),
            owner: Some("0".into()),
            civil_code: Some("35010201".into()),
            address: Some("东门 1号".into()),
            parental: Some(0),
            parent_id: Some("35010201001180100008".into()),
            register_way: Some(1),
            secrecy: Some(0),
            ..CatalogItem::default()
        };
        assert!(pack(&i).len() < 130, "{}", pack(&i).len());
    }
}
