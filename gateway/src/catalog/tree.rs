//! The catalog as a tree for people: civil-code regions (the ID's first 2,
//! 4, 6 and 8 digits), then the devices, platforms and groups of a region,
//! then what hangs under each by `ParentID`; and search by name or ID.
//!
//! Nothing here is kept: each call reads one range of the ID-ordered map
//! (a region's entries share their ID's prefix), so a branch of 10,000
//! channels costs a walk of 10,000 entries, and only the top of a
//! 420,000-channel city walks them all. `visible` is the caller's filter
//! (the sharing policy for a department; everything for an admin).

use std::collections::BTreeMap;

use topology::GbId;

use super::{is_camera, packed, Catalog, Stored};

/// What a branch of the tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BranchKind {
    /// A civil-code region (its key is the 2–8 digit code).
    Region,
    /// A platform (type 200), a gbgate node or a third-party one.
    Platform,
    /// A device: DVR, NVR, encoder, alarm host… (types 111–130).
    Device,
    /// A camera (131, or an IPC 132 without channels of its own).
    Camera,
    /// A business group (215).
    BusinessGroup,
    /// A virtual organisation (216).
    VirtualOrganisation,
    /// Anything else (an alarm input, a display…).
    Other,
}

impl BranchKind {
    fn of(id: GbId) -> BranchKind {
        match id.type_code() {
            200 => BranchKind::Platform,
            111..=130 => BranchKind::Device,
            131 | 132 => BranchKind::Camera,
            215 => BranchKind::BusinessGroup,
            216 => BranchKind::VirtualOrganisation,
            _ => BranchKind::Other,
        }
    }
}

/// One branch or leaf, with what is under it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Branch {
    /// The region code, or the entry's 20-digit ID.
    pub key: String,
    /// What it is.
    pub kind: BranchKind,
    /// The entry's name (regions have none here).
    pub name: Option<String>,
    /// The entry's status, `ON` or `OFF` (regions have none).
    pub status: Option<String>,
    /// Cameras under it the caller may see (1 or 0 for a camera itself).
    pub cameras: u32,
    /// Of those, the ones ON.
    pub online: u32,
}

/// What a tree request asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeQuery {
    /// The level under a civil-code region (`""` for the top).
    Region(String),
    /// What hangs under an entry.
    Children(GbId),
    /// Cameras by name or ID prefix.
    Search {
        /// The text.
        text: String,
        /// At most this many.
        limit: usize,
    },
}

impl std::fmt::Display for TreeQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TreeQuery::Region(p) if p.is_empty() => write!(f, "top regions"),
            TreeQuery::Region(p) => write!(f, "region {p}"),
            TreeQuery::Children(id) => write!(f, "under {id}"),
            TreeQuery::Search { text, .. } => write!(f, "search {text:?}"),
        }
    }
}

/// The first ID with `prefix` and the last.
fn prefix_range(prefix: &str) -> Option<(GbId, GbId)> {
    let pad = |d: char| format!("{prefix}{}", d.to_string().repeat(20 - prefix.len()));
    Some((GbId::parse(&pad('0')).ok()?, GbId::parse(&pad('9')).ok()?))
}

impl Catalog {
    /// True for the entries counted as cameras: 131s, and 132s (IPCs)
    /// that list no channel under themselves (whether present or not).
    pub fn is_channel(&self, id: GbId) -> bool {
        is_camera(id) && !self.index.camera_parents.contains_key(&id)
    }

    /// The entries whose ID starts with `prefix` (none when it is not
    /// digits).
    fn in_prefix(&self, prefix: &str) -> impl Iterator<Item = (&GbId, &Stored)> + '_ {
        prefix_range(prefix)
            .into_iter()
            .flat_map(move |(lo, hi)| self.entries.range(lo..=hi))
    }

    /// What to show `id` as: an IPC listing its own channel is a device.
    fn kind(&self, id: GbId) -> BranchKind {
        match BranchKind::of(id) {
            BranchKind::Camera if !self.is_channel(id) => BranchKind::Device,
            k => k,
        }
    }

    /// The branches under region `prefix` (`""`, or 2, 4 or 6 digits: the
    /// next level's regions; 8 digits: the region's devices, platforms,
    /// groups and cameras that hang under nothing in it), each with the
    /// cameras under it that `visible` lets through. Regions with none
    /// are left out; so are branches with cameras of which the caller may
    /// see none.
    pub fn region_children(
        &self,
        prefix: &str,
        mut visible: impl FnMut(GbId) -> bool,
    ) -> Vec<Branch> {
        if prefix.len() < 8 {
            let next = prefix.len() + 2;
            let mut regions: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
            for (id, e) in self.in_prefix(prefix) {
                if self.is_channel(*id) && visible(*id) {
                    let c = regions.entry(&id.as_str()[..next]).or_default();
                    c.0 += 1;
                    c.1 += u32::from(e.on);
                }
            }
            return regions
                .into_iter()
                .map(|(key, (cameras, online))| Branch {
                    key: key.to_owned(),
                    kind: BranchKind::Region,
                    name: None,
                    status: None,
                    cameras,
                    online,
                })
                .collect();
        }
        // Entries of the region whose parent is not in it: its roots.
        let roots: Vec<GbId> = self
            .in_prefix(prefix)
            .filter(|(_, e)| {
                e.parent_str()
                    .is_none_or(|p| !p.starts_with(prefix) || GbId::parse(p).is_err())
            })
            .map(|(id, _)| *id)
            .collect();
        self.branches(roots, prefix, &mut visible)
    }

    /// What hangs directly under `parent` (by `ParentID`), with counts.
    /// Only `parent`'s region is read: a device's is its 8-digit civil
    /// code, a platform's that code without its trailing `00` pairs (a
    /// county's platform administers the county). Groups span regions, so
    /// for them the whole map is read.
    pub fn children_of(&self, parent: GbId, mut visible: impl FnMut(GbId) -> bool) -> Vec<Branch> {
        let code = &parent.as_str()[..8];
        let region = match BranchKind::of(parent) {
            BranchKind::Device | BranchKind::Camera => code,
            BranchKind::Platform => {
                let mut r = code;
                while r.len() > 2 && r.ends_with("00") {
                    r = &r[..r.len() - 2];
                }
                r
            }
            _ => "",
        };
        let kids: Vec<GbId> = self
            .in_prefix(region)
            .filter(|(_, e)| e.parent_str() == Some(parent.as_str()))
            .map(|(id, _)| *id)
            .collect();
        self.branches(kids, region, &mut visible)
    }

    /// Branches for `ids`, counting for each non-camera the visible
    /// cameras below it (at any depth) within `region`. A branch with
    /// cameras below it of which the caller may see none is left out.
    fn branches(
        &self,
        ids: Vec<GbId>,
        region: &str,
        visible: &mut impl FnMut(GbId) -> bool,
    ) -> Vec<Branch> {
        // (visible cameras, of them ON, all cameras) per listed non-camera.
        let mut counts: BTreeMap<GbId, (u32, u32, u32)> = ids
            .iter()
            .filter(|id| !self.is_channel(**id))
            .map(|id| (*id, (0, 0, 0)))
            .collect();
        if !counts.is_empty() {
            for (id, e) in self.in_prefix(region) {
                if !self.is_channel(*id) {
                    continue;
                }
                let Some(top) = self.listed_ancestor(e, &counts) else {
                    continue;
                };
                let shown = visible(*id);
                if let Some(c) = counts.get_mut(&top) {
                    c.2 += 1;
                    if shown {
                        c.0 += 1;
                        c.1 += u32::from(e.on);
                    }
                }
            }
        }
        ids.into_iter()
            .filter_map(|id| {
                let e = self.entries.get(&id)?;
                let (cameras, online) = match counts.get(&id) {
                    Some((_, _, all)) if *all > 0 && counts[&id].0 == 0 => return None,
                    Some((seen, on, _)) => (*seen, *on),
                    None if visible(id) => (1, u32::from(e.on)),
                    None => return None,
                };
                Some(Branch {
                    key: id.to_string(),
                    kind: self.kind(id),
                    name: packed::name(self.arena.get(e.fields)).map(str::to_owned),
                    status: Some(e.status_word().to_owned()),
                    cameras,
                    online,
                })
            })
            .collect()
    }

    /// The nearest ancestor of `e` that is a key of `listed`, following
    /// `ParentID`s (at most 16 hops: a tree is never deeper, and a cycle
    /// in what peers sent must not loop).
    fn listed_ancestor<V>(&self, e: &Stored, listed: &BTreeMap<GbId, V>) -> Option<GbId> {
        let mut parent = GbId::parse(e.parent_str()?).ok()?;
        for _ in 0..16 {
            if listed.contains_key(&parent) {
                return Some(parent);
            }
            parent = GbId::parse(self.entries.get(&parent)?.parent_str()?).ok()?;
        }
        None
    }

    /// Cameras whose name contains `text` (case ignored) or whose ID starts
    /// with it, that `visible` lets through; at most `limit`, by ID.
    pub fn search(
        &self,
        text: &str,
        limit: usize,
        mut visible: impl FnMut(GbId) -> bool,
    ) -> Vec<Branch> {
        let needle = text.trim().to_lowercase();
        if needle.is_empty() {
            return Vec::new();
        }
        let by_id = needle.bytes().all(|b| b.is_ascii_digit()) && needle.len() <= 20;
        let mut out = Vec::new();
        let candidates: Box<dyn Iterator<Item = (&GbId, &Stored)>> = if by_id {
            Box::new(self.in_prefix(&needle))
        } else {
            Box::new(self.entries.iter())
        };
        for (id, e) in candidates {
            if out.len() == limit {
                break;
            }
            if !self.is_channel(*id) {
                continue;
            }
            let name = packed::name(self.arena.get(e.fields));
            let has = |text: Option<&str>| text.is_some_and(|t| t.to_lowercase().contains(&needle));
            let hit = by_id || has(name) || has(packed::address(self.arena.get(e.fields)));
            if hit && visible(*id) {
                out.push(Branch {
                    key: id.to_string(),
                    kind: BranchKind::Camera,
                    name: name.map(str::to_owned),
                    status: Some(e.status_word().to_owned()),
                    cameras: 1,
                    online: u32::from(e.on),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gb::manscdp::CatalogItem;

    fn item(id: &str, name: &str, parent: &str, on: bool) -> CatalogItem {
        CatalogItem {
            device_id: id.into(),
            name: Some(name.into()),
            parent_id: (!parent.is_empty()).then(|| parent.into()),
            status: Some(if on { "ON" } else { "OFF" }.into()),
            ..CatalogItem::default()
        }
    }

    /// Two towns of one county: an NVR with three channels (one OFF) in
    /// the first, an IPC with its own channel in the second.
    fn city() -> Catalog {
        let node = GbId::parse("35010000002000000001").unwrap();
        let mut c = Catalog::new(node);
        let child = GbId::parse("35010200002000000001").unwrap();
        c.replace_from(
            child,
            vec![
                item("35010201001180000001", "NVR East", "", true),
                item(
                    "35010201001310000001",
                    "Gate East",
                    "35010201001180000001",
                    true,
                ),
                item(
                    "35010201001310000002",
                    "Gate West",
                    "35010201001180000001",
                    true,
                ),
                item(
                    "35010201001310000003",
                    "Yard",
                    "35010201001180000001",
                    false,
                ),
                item("35010202001320000001", "Dome North", "", true),
                item(
                    "35010202001310000001",
                    "Dome North 1",
                    "35010202001320000001",
                    true,
                ),
            ],
            true,
        );
        c
    }

    #[test]
    fn regions_count_the_cameras_the_caller_may_see() {
        let c = city();
        let all = |_| true;
        let top = c.region_children("", all);
        assert_eq!(top.len(), 1);
        assert_eq!(
            (top[0].key.as_str(), top[0].cameras, top[0].online),
            ("35", 4, 3)
        );
        let towns = c.region_children("350102", all);
        let got: Vec<(&str, u32, u32)> = towns
            .iter()
            .map(|b| (b.key.as_str(), b.cameras, b.online))
            .collect();
        assert_eq!(got, vec![("35010201", 3, 2), ("35010202", 1, 1)]);
        // A department that may see only Gate West sees one town, one camera.
        let west = GbId::parse("35010201001310000002").unwrap();
        let towns = c.region_children("350102", |id| id == west);
        assert_eq!(towns.len(), 1);
        assert_eq!(towns[0].cameras, 1);
        let in_town = c.region_children("35010201", |id| id == west);
        assert_eq!(in_town.len(), 1);
        assert_eq!(in_town[0].kind, BranchKind::Device);
        assert_eq!(in_town[0].name.as_deref(), Some("NVR East"));
        let nvr = GbId::parse(&in_town[0].key).unwrap();
        let kids = c.children_of(nvr, |id| id == west);
        assert_eq!(kids.len(), 1);
        assert_eq!(kids[0].key, west.to_string());
        assert_eq!(c.children_of(nvr, all).len(), 3);
    }

    #[test]
    fn an_ipc_with_its_own_channel_is_a_device_not_a_second_camera() {
        let c = city();
        let town = c.region_children("35010202", |_| true);
        assert_eq!(town.len(), 1);
        assert_eq!(town[0].kind, BranchKind::Device);
        assert_eq!((town[0].cameras, town[0].online), (1, 1));
    }

    #[test]
    fn branches_count_cameras_at_any_depth() {
        // A town platform over a village platform over an NVR: the town's
        // region lists the town, counting the NVR's channels under it.
        let node = GbId::parse("35010000002000000001").unwrap();
        let mut c = Catalog::new(node);
        c.replace_from(
            GbId::parse("35010200002000000001").unwrap(),
            vec![
                item("35010201002000000001", "Town", "", true),
                item(
                    "35010201002000000011",
                    "Village",
                    "35010201002000000001",
                    true,
                ),
                item("35010201001180000001", "NVR", "35010201002000000011", true),
                item("35010201001310000001", "Gate", "35010201001180000001", true),
                item(
                    "35010201001310000002",
                    "Yard",
                    "35010201001180000001",
                    false,
                ),
            ],
            true,
        );
        let town = c.region_children("35010201", |_| true);
        assert_eq!(town.len(), 1);
        assert_eq!(
            (town[0].kind, town[0].cameras, town[0].online),
            (BranchKind::Platform, 2, 1)
        );
        let gate = GbId::parse("35010201001310000001").unwrap();
        let village = c.children_of(GbId::parse(&town[0].key).unwrap(), |id| id == gate);
        assert_eq!((village[0].cameras, village[0].online), (1, 1));
        // A department that may see none of them sees no branch at all.
        assert!(c.region_children("35010201", |_| false).is_empty());
    }

    #[test]
    fn search_by_name_or_id_prefix() {
        let c = city();
        let hits: Vec<String> = c
            .search("gate", 10, |_| true)
            .into_iter()
            .map(|b| b.key)
            .collect();
        assert_eq!(hits, vec!["35010201001310000001", "35010201001310000002"]);
        assert_eq!(c.search("3501020200131", 10, |_| true).len(), 1);
        assert_eq!(c.search("gate", 1, |_| true).len(), 1);
        assert!(c.search("  ", 10, |_| true).is_empty());
        assert!(c.search("gate", 10, |_| false).is_empty());
    }

    #[test]
    fn search_finds_a_camera_by_its_address() {
        let mut c = city();
        let child = GbId::parse("35010200002000000001").unwrap();
        let mut yard = item(
            "35010201001310000003",
            "Yard",
            "35010201001180000001",
            false,
        );
        yard.manufacturer = Some("Hik".into());
        yard.address = Some("鼓楼区 五四路 88号".into());
        c.apply_events(
            child,
            vec![CatalogItem {
                event: Some("UPDATE".into()),
                ..yard
            }],
        );
        let hits: Vec<String> = c
            .search("五四路", 10, |_| true)
            .into_iter()
            .map(|b| b.key)
            .collect();
        assert_eq!(hits, vec!["35010201001310000003"]);
        assert!(c.search("六一路", 10, |_| true).is_empty());
    }
}
