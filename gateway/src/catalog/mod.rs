//! The federated channel tree of one node: its own devices and their
//! channels, plus everything its child nodes report, each entry tagged with
//! the registrant that reported it. Every change yields catalog events
//! (ADD, DEL, ON, OFF, UPDATE) for the parent. Sans-IO and synchronous.
//!
//! Scale: the city holds ~420,000 entries. Entries live in one B-tree map
//! keyed by ID, so pages of the API and catalog answers come out sorted
//! without sorting; each entry is stored packed ([`packed`]), a few hundred
//! bytes instead of a kilobyte; per-source operations (a child going
//! offline) scan the map, which costs milliseconds at that size and happens
//! rarely, so no second index is kept.

pub mod packed;

use std::collections::BTreeMap;

use topology::GbId;

use crate::gb::manscdp::CatalogItem;

/// Catalog event names as they travel in `<Event>`.
pub mod event {
    /// A new entry (full item).
    pub const ADD: &str = "ADD";
    /// An entry removed (ID only).
    pub const DEL: &str = "DEL";
    /// An entry came online (ID only).
    pub const ON: &str = "ON";
    /// An entry went offline (ID only).
    pub const OFF: &str = "OFF";
    /// An entry's fields changed (full item).
    pub const UPDATE: &str = "UPDATE";
}

/// One catalog entry, unpacked for a reader.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The GB/T 28181 item as we pass it on (Status normalised to ON/OFF).
    pub item: CatalogItem,
    /// The registrant (device or child node) it came through.
    pub source: GbId,
}

impl Entry {
    /// True when the item's status is ON.
    pub fn is_on(&self) -> bool {
        self.item.status.as_deref() == Some("ON")
    }
}

/// An entry as stored: parent and status apart (filters read them), the
/// other fields packed.
#[derive(Debug)]
struct Stored {
    source: GbId,
    on: bool,
    parent: Option<Box<str>>,
    fields: Box<[u8]>,
}

impl Stored {
    fn new(source: GbId, item: &CatalogItem) -> Stored {
        let mut fields = item.clone();
        let parent = fields.parent_id.take().map(String::into_boxed_str);
        Stored {
            source,
            on: normalise_status(item.status.as_deref()) == "ON",
            parent,
            fields: packed::pack(&fields),
        }
    }

    fn item(&self, id: &str) -> CatalogItem {
        let mut item = packed::unpack(id, &self.fields, self.on);
        item.parent_id = self.parent.as_deref().map(str::to_owned);
        item
    }

    fn entry(&self, id: &str) -> Entry {
        Entry {
            item: self.item(id),
            source: self.source,
        }
    }
}

/// Filter for [`Catalog::query`].
#[derive(Debug, Default, Clone)]
pub struct Query<'a> {
    /// Only direct children of this ID.
    pub parent: Option<&'a str>,
    /// Only entries with this status (`ON` / `OFF`).
    pub status: Option<&'a str>,
    /// Only entries reported through this registrant.
    pub source: Option<&'a str>,
    /// Skip this many matches (entries are ordered by ID).
    pub offset: usize,
    /// Return at most this many.
    pub limit: usize,
}

/// The federated catalog.
#[derive(Debug)]
pub struct Catalog {
    node: GbId,
    entries: BTreeMap<Box<str>, Stored>,
}

/// Map the many status spellings devices use onto ON / OFF.
pub fn normalise_status(status: Option<&str>) -> &'static str {
    match status.map(|s| s.trim().to_ascii_uppercase()) {
        Some(s) if s == "OFF" || s == "OFFLINE" || s == "0" => "OFF",
        // Missing status: the device listed it, so count it as present.
        _ => "ON",
    }
}

fn id_only(id: &str, ev: &str) -> CatalogItem {
    CatalogItem {
        device_id: id.to_owned(),
        event: Some(ev.to_owned()),
        ..CatalogItem::default()
    }
}

fn with_event(item: &CatalogItem, ev: &str) -> CatalogItem {
    let mut i = item.clone();
    i.event = Some(ev.to_owned());
    i
}

fn status_event(on: bool) -> &'static str {
    if on {
        event::ON
    } else {
        event::OFF
    }
}

impl Catalog {
    /// An empty catalog for `node`.
    pub fn new(node: GbId) -> Self {
        Catalog {
            node,
            entries: BTreeMap::new(),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries whose type code is a channel (131/132) and that have no
    /// channels below them: an IPC that registers as itself (132) with its
    /// channel listed under it is a device, not a second channel. Two scans,
    /// milliseconds at 420,000 entries.
    pub fn channel_count(&self) -> usize {
        let is_cam = |k: &str| k.len() == 20 && matches!(k.get(10..13), Some("131" | "132"));
        let parents: std::collections::HashSet<&str> = self
            .entries
            .iter()
            .filter(|(k, _)| is_cam(k))
            .filter_map(|(_, e)| e.parent.as_deref())
            .collect();
        self.entries
            .keys()
            .filter(|k| is_cam(k) && !parents.contains(&k.as_ref()))
            .count()
    }

    /// Entries with status ON.
    pub fn online_count(&self) -> usize {
        self.entries.values().filter(|e| e.on).count()
    }

    /// One entry.
    pub fn get(&self, id: &str) -> Option<Entry> {
        self.entries.get(id).map(|e| e.entry(id))
    }

    /// Entry IDs in order, after `after` (keyset paging).
    pub fn ids_after<'a>(&'a self, after: Option<&'a str>) -> impl Iterator<Item = &'a str> + 'a {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.entries
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(k, _)| k.as_ref())
    }

    /// `id`'s parent in the tree, as its entry names it.
    pub fn parent_of(&self, id: &str) -> Option<&str> {
        self.entries.get(id).and_then(|e| e.parent.as_deref())
    }

    /// The registrant through which `id` is reached.
    pub fn source_of(&self, id: &str) -> Option<GbId> {
        self.entries.get(id).map(|e| e.source)
    }

    /// Insert or refresh a registrant's own item (a device or child node
    /// that just registered). Its parent is this node; what it told us
    /// before (DeviceInfo fields) is kept where the new item says nothing.
    pub fn upsert_registrant(&mut self, id: GbId, mut item: CatalogItem) -> Vec<CatalogItem> {
        item.device_id = id.to_string();
        item.parent_id = Some(self.node.to_string());
        item.status = Some("ON".into());
        item.event = None;
        if let Some(old) = self.entries.get(id.as_str()) {
            let o = old.item(id.as_str());
            item.name = item.name.or(o.name);
            item.manufacturer = item.manufacturer.or(o.manufacturer);
            item.model = item.model.or(o.model);
            item.address = item.address.or(o.address);
        }
        // An authenticated registration owns its own item, whoever listed it before.
        self.upsert_from(id, item, true)
    }

    /// Fill a registrant's own item from its DeviceInfo answer.
    pub fn describe_registrant(
        &mut self,
        id: GbId,
        name: Option<String>,
        manufacturer: Option<String>,
        model: Option<String>,
    ) -> Vec<CatalogItem> {
        let Some(e) = self.entries.get(id.as_str()) else {
            return Vec::new();
        };
        let mut item = e.item(id.as_str());
        item.name = name.or(item.name);
        item.manufacturer = manufacturer.or(item.manufacturer);
        item.model = model.or(item.model);
        self.upsert(id, item)
    }

    fn upsert(&mut self, source: GbId, item: CatalogItem) -> Vec<CatalogItem> {
        self.upsert_from(source, item, false)
    }

    /// Insert or update from `source`. An entry owned by another source is
    /// taken over only when `force`, or when it is OFF (a device that moved
    /// while its old path is down); a live entry is never stolen, and a
    /// registrant's own item never moves to someone else's report.
    fn upsert_from(
        &mut self,
        source: GbId,
        mut item: CatalogItem,
        force: bool,
    ) -> Vec<CatalogItem> {
        item.status = Some(normalise_status(item.status.as_deref()).to_owned());
        item.event = None;
        if item
            .parent_id
            .as_deref()
            .is_none_or(|p| p.trim().is_empty())
            && item.device_id != source.as_str()
        {
            // Many cameras and NVRs leave ParentID out (it is optional in
            // 2016): the item belongs under the device that reported it,
            // never at the root as an orphan.
            item.parent_id = Some(source.to_string());
        }
        let new = Stored::new(source, &item);
        match self.entries.get_mut(item.device_id.as_str()) {
            None => {
                let ev = with_event(&item, event::ADD);
                self.entries.insert(item.device_id.into_boxed_str(), new);
                vec![ev]
            }
            Some(e) => {
                let key = item.device_id.as_str();
                if e.source != source {
                    let own_item = e.source.as_str() == key;
                    if !force && (own_item || e.on) {
                        tracing::debug!(id = %key, owner = %e.source, from = %source, "ignoring a report of an entry another source owns");
                        return Vec::new();
                    }
                    // A moved device or a loop in the tree: say so.
                    tracing::warn!(id = %key, old = %e.source, new = %source, "catalog entry changed source");
                }
                let mut out = Vec::new();
                if e.fields != new.fields || e.parent != new.parent {
                    out.push(with_event(&item, event::UPDATE));
                } else if e.on != new.on {
                    out.push(id_only(key, status_event(new.on)));
                }
                *e = new;
                out
            }
        }
    }

    /// Replace everything `source` reported (except its own registrant item)
    /// with `items`, a whole catalog answer. When `complete` is false (parts
    /// were lost) entries missing from `items` are kept rather than deleted.
    pub fn replace_from(
        &mut self,
        source: GbId,
        items: Vec<CatalogItem>,
        complete: bool,
    ) -> Vec<CatalogItem> {
        let own = source.to_string();
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        let mut out = Vec::new();
        for item in items {
            if item.device_id.is_empty() || item.device_id == self.node.as_str() {
                continue;
            }
            if item.device_id == own {
                // The registrant's own item as it describes itself: keep our
                // parent link and its status, take its descriptive fields.
                if let Some(e) = self.entries.get(own.as_str()) {
                    let mut merged = item.clone();
                    merged.parent_id = e.parent.as_deref().map(str::to_owned);
                    merged.status = Some(if e.on { "ON" } else { "OFF" }.to_owned());
                    seen.insert(own.clone());
                    out.extend(self.upsert(source, merged));
                }
                continue;
            }
            seen.insert(item.device_id.clone());
            out.extend(self.upsert(source, item));
        }
        if complete {
            let gone: Vec<Box<str>> = self
                .entries
                .iter()
                .filter(|(k, e)| e.source == source && ***k != *own && !seen.contains(&***k))
                .map(|(k, _)| k.clone())
                .collect();
            for k in gone {
                self.entries.remove(&k);
                out.push(id_only(&k, event::DEL));
            }
        }
        out
    }

    /// Apply a catalog NOTIFY (events) from `source`. Events for entries that
    /// belong to another source are ignored (no cross-talk between branches).
    pub fn apply_events(&mut self, source: GbId, items: Vec<CatalogItem>) -> Vec<CatalogItem> {
        let mut out = Vec::new();
        for item in items {
            if item.device_id.is_empty() || item.device_id == self.node.as_str() {
                continue;
            }
            let ev = item
                .event
                .as_deref()
                .map(|e| e.trim().to_ascii_uppercase())
                .unwrap_or_else(|| event::ADD.to_owned());
            let existing = self.entries.get(item.device_id.as_str());
            if existing.is_some_and(|e| e.source != source) {
                continue;
            }
            match ev.as_str() {
                event::ADD | event::UPDATE => {
                    let mut item = item;
                    if item.status.is_none() {
                        item.status = existing.map(|e| if e.on { "ON" } else { "OFF" }.to_owned());
                    }
                    out.extend(self.upsert(source, item));
                }
                event::DEL => {
                    if self.entries.remove(item.device_id.as_str()).is_some() {
                        out.push(id_only(&item.device_id, event::DEL));
                    }
                }
                event::ON | event::OFF | "VLOST" | "DEFECT" => {
                    let on = ev == event::ON;
                    if let Some(e) = self.entries.get_mut(item.device_id.as_str()) {
                        if e.on != on {
                            e.on = on;
                            out.push(id_only(&item.device_id, status_event(on)));
                        }
                    }
                }
                other => {
                    tracing::debug!(event = other, id = %item.device_id, "ignoring unknown catalog event");
                }
            }
        }
        out
    }

    /// Set every entry from `source` (its own item included) OFF, or only its
    /// own item ON (its channels' real state comes with the next catalog).
    pub fn set_source_online(&mut self, source: GbId, online: bool) -> Vec<CatalogItem> {
        let own = source.as_str();
        let mut out = Vec::new();
        if online {
            if let Some(e) = self.entries.get_mut(own) {
                if !e.on {
                    e.on = true;
                    out.push(id_only(own, event::ON));
                }
            }
            return out;
        }
        for (k, e) in self.entries.iter_mut() {
            if e.source == source && e.on {
                e.on = false;
                out.push(id_only(k, event::OFF));
            }
        }
        out
    }

    /// Every item, for answering the parent's Catalog query, sorted by ID.
    pub fn export(&self) -> Vec<CatalogItem> {
        self.entries.iter().map(|(k, e)| e.item(k)).collect()
    }

    /// Entries matching `q`, sorted by ID, and the total number of matches.
    pub fn query(&self, q: &Query<'_>) -> (usize, Vec<Entry>) {
        let source = q.source.and_then(|s| GbId::parse(s).ok());
        let want_on = q.status.map(|s| s.eq_ignore_ascii_case("ON"));
        let mut total = 0;
        let mut page = Vec::new();
        for (k, e) in self.entries.iter().filter(|(_, e)| {
            q.parent.is_none_or(|p| e.parent.as_deref() == Some(p))
                && want_on.is_none_or(|on| e.on == on)
                && (q.source.is_none() || source == Some(e.source))
        }) {
            if total >= q.offset && page.len() < q.limit {
                page.push(e.entry(k));
            }
            total += 1;
        }
        (total, page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gid(s: &str) -> GbId {
        GbId::parse(s).unwrap()
    }

    const NODE: &str = "35010201002000000001";
    const DEV: &str = "35010201001180000001";
    const CHILD: &str = "35010201002000000002";

    fn ch(n: u32, parent: &str, status: &str) -> CatalogItem {
        CatalogItem {
            device_id: format!("3501020100131{n:07}"),
            name: Some(format!("cam {n}")),
            parent_id: Some(parent.into()),
            status: Some(status.into()),
            ..CatalogItem::default()
        }
    }

    fn events(v: &[CatalogItem]) -> Vec<(String, String)> {
        let mut e: Vec<_> = v
            .iter()
            .map(|i| (i.device_id.clone(), i.event.clone().unwrap_or_default()))
            .collect();
        e.sort();
        e
    }

    #[test]
    fn replace_diffs_into_add_update_on_off_del() {
        let mut c = Catalog::new(gid(NODE));
        let ev = c.upsert_registrant(gid(DEV), CatalogItem::default());
        assert_eq!(ev[0].event.as_deref(), Some("ADD"));
        let ev = c.replace_from(gid(DEV), vec![ch(1, DEV, "ON"), ch(2, DEV, "ON")], true);
        assert_eq!(ev.len(), 2);
        assert_eq!(c.len(), 3);
        let mut renamed = ch(1, DEV, "ON");
        renamed.name = Some("renamed".into());
        let ev = c.replace_from(gid(DEV), vec![renamed, ch(3, DEV, "OFF")], true);
        assert_eq!(
            events(&ev),
            vec![
                ("35010201001310000001".into(), "UPDATE".into()),
                ("35010201001310000002".into(), "DEL".into()),
                ("35010201001310000003".into(), "ADD".into()),
            ]
        );
        let ev = c.replace_from(gid(DEV), vec![ch(3, DEV, "ONLINE")], false);
        assert_eq!(
            events(&ev),
            vec![("35010201001310000003".into(), "ON".into())]
        );
        assert!(
            c.get("35010201001310000001").is_some(),
            "partial answer deletes nothing"
        );
    }

    #[test]
    fn source_offline_turns_everything_off_and_back() {
        let mut c = Catalog::new(gid(NODE));
        c.upsert_registrant(gid(CHILD), CatalogItem::default());
        c.replace_from(
            gid(CHILD),
            (0..20).map(|n| ch(n, CHILD, "ON")).collect(),
            true,
        );
        let off = c.set_source_online(gid(CHILD), false);
        assert_eq!(off.len(), 21);
        assert!(off.iter().all(|i| i.event.as_deref() == Some("OFF")));
        assert!(c.set_source_online(gid(CHILD), false).is_empty());
        let on = c.set_source_online(gid(CHILD), true);
        assert_eq!(on.len(), 1);
        let on = c.replace_from(
            gid(CHILD),
            (0..20).map(|n| ch(n, CHILD, "ON")).collect(),
            true,
        );
        assert_eq!(on.len(), 20);
        assert_eq!(
            c.query(&Query {
                status: Some("ON"),
                limit: 100,
                ..Query::default()
            })
            .0,
            21
        );
    }

    #[test]
    fn events_from_another_branch_are_ignored() {
        let mut c = Catalog::new(gid(NODE));
        c.replace_from(gid(CHILD), vec![ch(1, CHILD, "ON")], true);
        let mut off = ch(1, CHILD, "ON");
        off.event = Some("OFF".into());
        assert!(c.apply_events(gid(DEV), vec![off.clone()]).is_empty());
        assert_eq!(c.apply_events(gid(CHILD), vec![off]).len(), 1);
        let mut del = ch(1, CHILD, "ON");
        del.event = Some("DEL".into());
        assert_eq!(c.apply_events(gid(CHILD), vec![del]).len(), 1);
        assert!(c.is_empty());
    }

    #[test]
    fn live_entries_are_not_stolen_but_dead_ones_move() {
        let mut c = Catalog::new(gid(NODE));
        c.upsert_registrant(gid(DEV), CatalogItem::default());
        c.replace_from(gid(DEV), vec![ch(1, DEV, "ON")], true);
        // Another source lists the same channel and the device itself: ignored.
        let mut dev_item = ch(1, DEV, "ON");
        dev_item.device_id = DEV.into();
        assert!(c
            .replace_from(gid(CHILD), vec![ch(1, CHILD, "ON"), dev_item], true)
            .is_empty());
        assert_eq!(c.source_of("35010201001310000001"), Some(gid(DEV)));
        assert_eq!(c.source_of(DEV), Some(gid(DEV)));
        // Once the owner is offline, the channel may move.
        c.set_source_online(gid(DEV), false);
        assert_eq!(
            c.replace_from(gid(CHILD), vec![ch(1, CHILD, "ON")], true)
                .len(),
            1
        );
        assert_eq!(c.source_of("35010201001310000001"), Some(gid(CHILD)));
    }

    #[test]
    fn re_registration_keeps_what_device_info_said() {
        let mut c = Catalog::new(gid(NODE));
        c.upsert_registrant(gid(DEV), CatalogItem::default());
        c.describe_registrant(gid(DEV), Some("NVR east".into()), Some("ACME".into()), None);
        c.upsert_registrant(gid(DEV), CatalogItem::default());
        assert_eq!(c.get(DEV).unwrap().item.name.as_deref(), Some("NVR east"));
    }

    #[test]
    fn query_filters_and_pages() {
        let mut c = Catalog::new(gid(NODE));
        c.replace_from(
            gid(DEV),
            (0..10)
                .map(|n| ch(n, DEV, if n % 2 == 0 { "ON" } else { "OFF" }))
                .collect(),
            true,
        );
        let (total, page) = c.query(&Query {
            parent: Some(DEV),
            status: Some("OFF"),
            offset: 1,
            limit: 2,
            ..Query::default()
        });
        assert_eq!(total, 5);
        assert_eq!(page.len(), 2);
        assert_eq!(page[0].item.device_id, "35010201001310000003");
    }

    #[test]
    fn status_spellings() {
        assert_eq!(normalise_status(Some("ONLINE")), "ON");
        assert_eq!(normalise_status(Some("OK")), "ON");
        assert_eq!(normalise_status(Some(" off ")), "OFF");
        assert_eq!(normalise_status(Some("OFFLINE")), "OFF");
        assert_eq!(normalise_status(None), "ON");
    }
}
