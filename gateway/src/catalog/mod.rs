//! The federated channel tree of one node: its own devices and their
//! channels, plus everything its child nodes report, each entry tagged with
//! the registrant that reported it. Every change yields catalog events
//! (ADD, DEL, ON, OFF, UPDATE) for the parent. Sans-IO and synchronous.
//!
//! Scale: the city holds ~420,000 entries and runs on the node loop, so no
//! operation that happens per message or per poll may scan them all.
//! Entries live in one B-tree map keyed by ID, so pages of the API and
//! catalog answers come out sorted and resume from a key; each entry is
//! stored packed ([`packed`]). A per-source index answers "what did this
//! registrant report" (a finished catalog answer, a child going offline)
//! and running counters answer the topology API's counts.

mod arena;
pub mod packed;
pub mod tree;

use std::collections::{BTreeMap, HashMap, HashSet};

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
    /// An entry is online but its video is lost (ID only): what a camera
    /// reports, and what this node says when its probe finds no picture.
    pub const VLOST: &str = "VLOST";
    /// An entry is online but faulty (ID only): kept as [`VLOST`].
    pub const DEFECT: &str = "DEFECT";
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

/// An entry's parent as stored: nearly always an ID, held inline (no
/// allocation per entry); anything else (a region code) as text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Parent {
    Id(GbId),
    Text(Box<str>),
}

impl Parent {
    fn new(p: String) -> Parent {
        match GbId::parse(&p) {
            Ok(id) => Parent::Id(id),
            Err(_) => Parent::Text(p.into_boxed_str()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Parent::Id(id) => id.as_str(),
            Parent::Text(t) => t,
        }
    }
}

/// An entry as stored: parent and status apart (filters read them), the
/// other fields packed.
#[derive(Debug)]
struct Stored {
    /// The registrant, by its number in [`Index`]: 4 bytes, not 20.
    source: u32,
    on: bool,
    /// Online, but its video is lost (VLOST/DEFECT heard, or the intact
    /// probe found no picture): it counts online, not intact. Set only by
    /// those events and the probe, cleared by ON and OFF; a full catalog
    /// (whose Status knows only ON and OFF) leaves it as it is.
    video_lost: bool,
    parent: Option<Parent>,
    /// The other fields, packed, in the catalog's arena.
    fields: arena::Span,
}

impl Stored {
    fn new(source: u32, item: &CatalogItem, fields: arena::Span) -> Stored {
        Stored {
            source,
            on: normalise_status(item.status.as_deref()) == "ON",
            video_lost: false,
            parent: item.parent_id.clone().map(Parent::new),
            fields,
        }
    }

    /// ON, OFF, or VLOST (online, video lost): what people are shown.
    /// (A catalog item's `Status` says only ON or OFF.)
    fn status_word(&self) -> &'static str {
        match (self.on, self.video_lost) {
            (false, _) => event::OFF,
            (true, false) => event::ON,
            (true, true) => event::VLOST,
        }
    }

    fn item(&self, id: GbId, arena: &arena::Arena) -> CatalogItem {
        let mut item = packed::unpack(id.as_str(), arena.get(self.fields), self.on);
        item.parent_id = self.parent_str().map(str::to_owned);
        item
    }

    fn entry(&self, id: GbId, source: GbId, arena: &arena::Arena) -> Entry {
        Entry {
            item: self.item(id, arena),
            source,
        }
    }

    /// The parent, when it is a camera: an IPC registered as itself (132)
    /// with its channel listed under it.
    fn camera_parent(&self) -> Option<GbId> {
        match self.parent {
            Some(Parent::Id(p)) if is_camera(p) => Some(p),
            _ => None,
        }
    }

    fn parent_str(&self) -> Option<&str> {
        self.parent.as_ref().map(Parent::as_str)
    }
}

/// A camera entry (type 131 or 132).
fn is_camera(id: GbId) -> bool {
    matches!(id.type_code(), 131 | 132)
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
    /// Only entries whose ID sorts after this one (keyset paging).
    pub after: Option<&'a str>,
    /// Return at most this many.
    pub limit: usize,
}

/// How many entries one registrant may report: a device lists its own
/// channels (an NVR has a few hundred), a platform its whole subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLimits {
    /// For a device (any type but a platform's 200).
    pub device: usize,
    /// For a platform: a child node or a third-party platform below.
    pub platform: usize,
}

impl Default for SourceLimits {
    fn default() -> Self {
        SourceLimits {
            device: 10_000,
            platform: 2_000_000,
        }
    }
}

impl SourceLimits {
    fn of(&self, source: GbId) -> usize {
        if source.is_platform() {
            self.platform
        } else {
            self.device
        }
    }
}

/// Entries a source reported beyond its limit, refused since last asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The registrant.
    pub source: GbId,
    /// Entries refused.
    pub entries: usize,
    /// Its limit.
    pub limit: usize,
}

/// The per-source index and the running counters, kept in step with the
/// entries: every change removes an entry's old contribution and adds its
/// new one, so they cannot drift.
#[derive(Debug, Default)]
struct Index {
    /// Registrants that reported entries, numbered in order of arrival.
    sources: Vec<GbId>,
    numbers: HashMap<GbId, u32>,
    by_source: HashMap<GbId, HashSet<GbId>>,
    online: usize,
    cameras: usize,
    /// Camera entries that have cameras listed under them, by parent ID,
    /// with how many: they are devices, not channels.
    camera_parents: HashMap<GbId, u32>,
}

impl Index {
    /// `source`'s number, given one now if it has none.
    fn number(&mut self, source: GbId) -> u32 {
        if let Some(n) = self.numbers.get(&source) {
            return *n;
        }
        let n = u32::try_from(self.sources.len()).unwrap_or(u32::MAX);
        self.sources.push(source);
        self.numbers.insert(source, n);
        n
    }

    fn lookup(&self, source: GbId) -> Option<u32> {
        self.numbers.get(&source).copied()
    }

    /// The registrant numbered `n`.
    fn source(&self, n: u32) -> GbId {
        self.sources[n as usize]
    }

    fn add(&mut self, id: GbId, e: &Stored) {
        let source = self.source(e.source);
        self.by_source.entry(source).or_default().insert(id);
        self.online += usize::from(e.on);
        if is_camera(id) {
            self.cameras += 1;
            if let Some(p) = e.camera_parent() {
                *self.camera_parents.entry(p).or_default() += 1;
            }
        }
    }

    fn remove(&mut self, id: GbId, e: &Stored) {
        let source = self.source(e.source);
        if let Some(set) = self.by_source.get_mut(&source) {
            set.remove(&id);
            if set.is_empty() {
                self.by_source.remove(&source);
            }
        }
        self.online -= usize::from(e.on);
        if is_camera(id) {
            self.cameras -= 1;
            if let Some(p) = e.camera_parent() {
                if let Some(n) = self.camera_parents.get_mut(&p) {
                    *n -= 1;
                    if *n == 0 {
                        self.camera_parents.remove(&p);
                    }
                }
            }
        }
    }

    fn set_on(&mut self, e: &mut Stored, on: bool) {
        if !on {
            // Offline says nothing of the video when it comes back.
            e.video_lost = false;
        }
        if e.on != on {
            e.on = on;
            if on {
                self.online += 1;
            } else {
                self.online -= 1;
            }
        }
    }

    fn count_of(&self, source: GbId) -> usize {
        self.by_source.get(&source).map_or(0, HashSet::len)
    }
}

/// The federated catalog.
#[derive(Debug)]
pub struct Catalog {
    node: GbId,
    entries: BTreeMap<GbId, Stored>,
    /// The entries' packed fields.
    arena: arena::Arena,
    /// The buffer an incoming item is packed into before the arena copies it.
    scratch: Vec<u8>,
    index: Index,
    limits: SourceLimits,
    refused: HashMap<GbId, usize>,
}

/// Map the many status spellings devices use onto ON / OFF.
pub fn normalise_status(status: Option<&str>) -> &'static str {
    match status.map(|s| s.trim().to_ascii_uppercase()) {
        Some(s) if s == "OFF" || s == "OFFLINE" || s == "0" => "OFF",
        // Missing status: the device listed it, so count it as present.
        _ => "ON",
    }
}

fn id_only(id: GbId, ev: &str) -> CatalogItem {
    CatalogItem {
        device_id: id.to_string(),
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
    /// An empty catalog for `node`, with the default per-source limits.
    pub fn new(node: GbId) -> Self {
        Catalog::with_limits(node, SourceLimits::default())
    }

    /// An empty catalog for `node`.
    pub fn with_limits(node: GbId, limits: SourceLimits) -> Self {
        Catalog {
            node,
            entries: BTreeMap::new(),
            arena: arena::Arena::default(),
            scratch: Vec::new(),
            index: Index::default(),
            limits,
            refused: HashMap::new(),
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
    /// channel listed under it is a device, not a second channel.
    pub fn channel_count(&self) -> usize {
        let devices = self
            .index
            .camera_parents
            .keys()
            .filter(|p| self.entries.contains_key(p))
            .count();
        self.index.cameras - devices
    }

    /// Entries with status ON.
    pub fn online_count(&self) -> usize {
        self.index.online
    }

    /// Entries reported through `source`.
    pub fn source_len(&self, source: GbId) -> usize {
        self.index.count_of(source)
    }

    /// Entries refused since the last call because their source was at its
    /// limit, per source (for a warning and a counter).
    pub fn take_refused(&mut self) -> Vec<Refused> {
        self.refused
            .drain()
            .map(|(source, entries)| Refused {
                source,
                entries,
                limit: self.limits.of(source),
            })
            .collect()
    }

    /// True when `id` is in the catalog.
    pub fn contains(&self, id: GbId) -> bool {
        self.entries.contains_key(&id)
    }

    /// `id`'s item, unpacked.
    pub fn item(&self, id: GbId) -> Option<CatalogItem> {
        self.entries.get(&id).map(|e| e.item(id, &self.arena))
    }

    /// One entry.
    pub fn get(&self, id: &str) -> Option<Entry> {
        let id = GbId::parse(id).ok()?;
        self.entries
            .get(&id)
            .map(|e| e.entry(id, self.index.source(e.source), &self.arena))
    }

    /// Entry IDs in order, after `after` (keyset paging).
    pub fn ids_after<'a>(&'a self, after: Option<&'a str>) -> impl Iterator<Item = GbId> + 'a {
        self.range_after(after).map(|(k, _)| *k)
    }

    fn range_after<'a>(
        &'a self,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a GbId, &'a Stored)> + 'a {
        use std::ops::Bound;
        // IDs are digits, so their order is the order of the strings; a
        // key that is not an ID starts where it would sort.
        let parsed = after.map(GbId::parse);
        let start = match parsed {
            Some(Ok(id)) => Bound::Excluded(id),
            _ => Bound::Unbounded,
        };
        let odd = match parsed {
            Some(Err(_)) => after,
            _ => None,
        };
        self.entries
            .range((start, Bound::Unbounded))
            .skip_while(move |(k, _)| odd.is_some_and(|a| k.as_str() <= a))
    }

    /// `id`'s parent in the tree, as its entry names it.
    pub fn parent_of(&self, id: &str) -> Option<&str> {
        let id = GbId::parse(id).ok()?;
        self.entries.get(&id).and_then(Stored::parent_str)
    }

    /// The registrant through which `id` is reached.
    pub fn source_of(&self, id: &str) -> Option<GbId> {
        let id = GbId::parse(id).ok()?;
        self.entries.get(&id).map(|e| self.index.source(e.source))
    }

    /// Insert or refresh a registrant's own item (a device or child node
    /// that just registered). Its parent is this node; what it told us
    /// before (DeviceInfo fields) is kept where the new item says nothing.
    pub fn upsert_registrant(&mut self, id: GbId, mut item: CatalogItem) -> Vec<CatalogItem> {
        item.device_id = id.to_string();
        item.parent_id = Some(self.node.to_string());
        item.status = Some("ON".into());
        item.event = None;
        if let Some(old) = self.entries.get(&id) {
            let o = old.item(id, &self.arena);
            item.name = item.name.or(o.name);
            item.manufacturer = item.manufacturer.or(o.manufacturer);
            item.model = item.model.or(o.model);
            item.address = item.address.or(o.address);
        }
        // An authenticated registration owns its own item, whoever listed it before.
        self.upsert_from(id, id, item, true)
    }

    /// Fill a registrant's own item from its DeviceInfo answer.
    pub fn describe_registrant(
        &mut self,
        id: GbId,
        name: Option<String>,
        manufacturer: Option<String>,
        model: Option<String>,
    ) -> Vec<CatalogItem> {
        let Some(e) = self.entries.get(&id) else {
            return Vec::new();
        };
        let mut item = e.item(id, &self.arena);
        item.name = name.or(item.name);
        item.manufacturer = manufacturer.or(item.manufacturer);
        item.model = model.or(item.model);
        self.upsert_from(id, id, item, false)
    }

    /// Insert or update `id` from `source`. An entry owned by another
    /// source is taken over only when `force`, or when it is OFF (a device
    /// that moved while its old path is down); a live entry is never
    /// stolen, and a registrant's own item never moves to someone else's
    /// report. A new entry beyond the source's limit is refused.
    fn upsert_from(
        &mut self,
        source: GbId,
        id: GbId,
        mut item: CatalogItem,
        force: bool,
    ) -> Vec<CatalogItem> {
        item.status = Some(normalise_status(item.status.as_deref()).to_owned());
        item.event = None;
        if item
            .parent_id
            .as_deref()
            .is_none_or(|p| p.trim().is_empty())
            && id != source
        {
            // Many cameras and NVRs leave ParentID out (it is optional in
            // 2016): the item belongs under the device that reported it,
            // never at the root as an orphan.
            item.parent_id = Some(source.to_string());
        }
        let number = self.index.number(source);
        // New to this source (a new entry, or one taken over from another).
        let gains = self.entries.get(&id).is_none_or(|e| e.source != number);
        if gains && id != source && self.index.count_of(source) >= self.limits.of(source) {
            *self.refused.entry(source).or_default() += 1;
            return Vec::new();
        }
        // Packed into one buffer kept for it: the arena takes a copy.
        let mut fields = std::mem::take(&mut self.scratch);
        packed::pack_except_parent_into(&item, &mut fields);
        let out = self.store_packed(source, id, number, &item, &fields, force);
        self.scratch = fields;
        out
    }

    /// [`Self::upsert_from`] once `item` is packed into `fields` and its
    /// source numbered `number`.
    fn store_packed(
        &mut self,
        source: GbId,
        id: GbId,
        number: u32,
        item: &CatalogItem,
        fields: &[u8],
        force: bool,
    ) -> Vec<CatalogItem> {
        let Some(e) = self.entries.get_mut(&id) else {
            let ev = with_event(item, event::ADD);
            let new = Stored::new(number, item, self.arena.put(fields));
            self.index.add(id, &new);
            self.entries.insert(id, new);
            return vec![ev];
        };
        if e.source != number {
            let owner = self.index.source(e.source);
            if !force && (owner == id || e.on) {
                tracing::debug!(%id, %owner, from = %source, "ignoring a report of an entry another source owns");
                return Vec::new();
            }
            // A moved device or a loop in the tree: say so.
            tracing::warn!(%id, old = %owner, new = %source, "catalog entry changed source");
        }
        let mut out = Vec::new();
        // Unchanged fields keep their bytes: a catalog sent again churns
        // nothing.
        let same_fields = self.arena.get(e.fields) == fields;
        let mut new = Stored::new(number, item, e.fields);
        if !same_fields || e.parent != new.parent {
            out.push(with_event(item, event::UPDATE));
        } else if e.on != new.on {
            out.push(id_only(id, status_event(new.on)));
        }
        new.video_lost = e.video_lost && new.on;
        if same_fields && e.source == number && e.parent == new.parent && e.on == new.on {
            // Nothing changed (a device that registers again): the index
            // stays as it is.
            return out;
        }
        self.index.remove(id, e);
        self.index.add(id, &new);
        let old = std::mem::replace(e, new).fields;
        if !same_fields {
            let span = self.arena.put(fields);
            if let Some(e) = self.entries.get_mut(&id) {
                e.fields = span;
            }
            self.release(old);
        }
        out
    }

    /// `span` is no longer any entry's: free it, and copy the entries into
    /// a fresh arena once garbage outweighs them.
    fn release(&mut self, span: arena::Span) {
        self.arena.free(span);
        if self.arena.wants_compaction() {
            let mut fresh = arena::Arena::default();
            for e in self.entries.values_mut() {
                e.fields = fresh.put(self.arena.get(e.fields));
            }
            self.arena = fresh;
        }
    }

    /// The online channels (see [`Self::is_channel`]) of the registrants
    /// `from` accepts, sorted.
    pub fn online_channels_from(&self, mut from: impl FnMut(GbId) -> bool) -> Vec<GbId> {
        let mut out: Vec<GbId> = self
            .index
            .by_source
            .iter()
            .filter(|(source, _)| from(**source))
            .flat_map(|(_, ids)| ids.iter().copied())
            .filter(|id| self.entries.get(id).is_some_and(|e| e.on) && self.is_channel(*id))
            .collect();
        out.sort_unstable();
        out
    }

    /// Whether `id` is online with its video lost.
    pub fn video_lost(&self, id: GbId) -> bool {
        self.entries.get(&id).is_some_and(|e| e.on && e.video_lost)
    }

    /// Note what the intact probe found for an online entry: its video
    /// decodes (`true`) or not. The change event (VLOST, or ON when the
    /// video is back), if the state changed.
    pub fn set_video_intact(&mut self, id: GbId, intact: bool) -> Option<CatalogItem> {
        let e = self.entries.get_mut(&id)?;
        if !e.on || e.video_lost != intact {
            return None;
        }
        e.video_lost = !intact;
        Some(id_only(id, if intact { event::ON } else { event::VLOST }))
    }

    fn remove(&mut self, id: GbId) -> bool {
        match self.entries.remove(&id) {
            Some(e) => {
                self.index.remove(id, &e);
                self.release(e.fields);
                true
            }
            None => false,
        }
    }

    /// An item's ID, or `None` (logged) for one that is not a GB/T 28181
    /// ID: nothing could address it (INVITE, queries and policy all take
    /// IDs), so it is not kept.
    fn item_id(&self, source: GbId, item: &CatalogItem) -> Option<GbId> {
        match GbId::parse(item.device_id.trim()) {
            Ok(id) if id != self.node => Some(id),
            Ok(_) => None,
            Err(e) => {
                if !item.device_id.is_empty() {
                    tracing::debug!(%source, id = %item.device_id, error = %e, "catalog item without a valid ID ignored");
                }
                None
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
        let mut seen = HashSet::with_capacity(items.len());
        let mut out = Vec::new();
        for item in items {
            let Some(id) = self.item_id(source, &item) else {
                continue;
            };
            if id == source {
                // The registrant's own item as it describes itself: keep our
                // parent link and its status, take its descriptive fields.
                if let Some(e) = self.entries.get(&id) {
                    let mut merged = item;
                    merged.parent_id = e.parent_str().map(str::to_owned);
                    merged.status = Some(if e.on { "ON" } else { "OFF" }.to_owned());
                    seen.insert(id);
                    out.extend(self.upsert_from(source, id, merged, false));
                }
                continue;
            }
            seen.insert(id);
            out.extend(self.upsert_from(source, id, item, false));
        }
        if complete {
            let gone: Vec<GbId> = self
                .index
                .by_source
                .get(&source)
                .into_iter()
                .flatten()
                .filter(|k| **k != source && !seen.contains(*k))
                .copied()
                .collect();
            for k in gone {
                self.remove(k);
                out.push(id_only(k, event::DEL));
            }
        }
        out
    }

    /// Apply a catalog NOTIFY (events) from `source`. Events for entries that
    /// belong to another source are ignored (no cross-talk between branches).
    pub fn apply_events(&mut self, source: GbId, items: Vec<CatalogItem>) -> Vec<CatalogItem> {
        let mut out = Vec::new();
        for item in items {
            let Some(id) = self.item_id(source, &item) else {
                continue;
            };
            let ev = item
                .event
                .as_deref()
                .map(|e| e.trim().to_ascii_uppercase())
                .unwrap_or_else(|| event::ADD.to_owned());
            let existing = self.entries.get(&id);
            let number = self.index.lookup(source);
            if existing.is_some_and(|e| Some(e.source) != number) {
                continue;
            }
            match ev.as_str() {
                event::ADD | event::UPDATE => {
                    let mut item = item;
                    if item.status.is_none() {
                        item.status = existing.map(|e| if e.on { "ON" } else { "OFF" }.to_owned());
                    }
                    out.extend(self.upsert_from(source, id, item, false));
                }
                event::DEL => {
                    if self.remove(id) {
                        out.push(id_only(id, event::DEL));
                    }
                }
                event::ON | event::OFF | event::VLOST | event::DEFECT => {
                    // A camera that reports its video lost is online.
                    let on = ev != event::OFF;
                    let lost = ev == event::VLOST || ev == event::DEFECT;
                    if let Some(e) = self.entries.get_mut(&id) {
                        if e.on != on || e.video_lost != lost {
                            self.index.set_on(e, on);
                            e.video_lost = lost;
                            let said = if lost { event::VLOST } else { status_event(on) };
                            out.push(id_only(id, said));
                        }
                    }
                }
                other => {
                    tracing::debug!(event = other, %id, "ignoring unknown catalog event");
                }
            }
        }
        out
    }

    /// Set every entry from `source` (its own item included) OFF, or only its
    /// own item ON (its channels' real state comes with the next catalog).
    pub fn set_source_online(&mut self, source: GbId, online: bool) -> Vec<CatalogItem> {
        let mut out = Vec::new();
        if online {
            if let Some(e) = self.entries.get_mut(&source) {
                if !e.on {
                    self.index.set_on(e, true);
                    out.push(id_only(source, event::ON));
                }
            }
            return out;
        }
        let Some(ids) = self.index.by_source.get(&source) else {
            return out;
        };
        let mut ids: Vec<GbId> = ids.iter().copied().collect();
        // Sorted, as the events of a whole-catalog scan were.
        ids.sort_unstable();
        for id in ids {
            if let Some(e) = self.entries.get_mut(&id) {
                if e.on {
                    self.index.set_on(e, false);
                    out.push(id_only(id, event::OFF));
                }
            }
        }
        out
    }

    /// Entries matching `q` after `q.after`, sorted by ID, at most
    /// `q.limit`, and whether more match. A query for a small source reads
    /// only that source's entries.
    pub fn query(&self, q: &Query<'_>) -> (Vec<Entry>, bool) {
        let want_on = q.status.map(|s| s.eq_ignore_ascii_case("ON"));
        let source = match q.source.map(GbId::parse) {
            Some(Ok(s)) => Some(s),
            Some(Err(_)) => return (Vec::new(), false),
            None => None,
        };
        let number = match source {
            Some(s) => match self.index.lookup(s) {
                Some(n) => Some(n),
                None => return (Vec::new(), false),
            },
            None => None,
        };
        let keep = |e: &Stored| {
            q.parent.is_none_or(|p| e.parent_str() == Some(p))
                && want_on.is_none_or(|on| e.on == on)
                && number.is_none_or(|n| e.source == n)
        };
        let mut page = Vec::new();
        let mut more = false;
        let mut take = |id: GbId, e: &Stored| {
            if page.len() == q.limit {
                more = true;
                return false;
            }
            page.push(e.entry(id, self.index.source(e.source), &self.arena));
            true
        };
        let small = source
            .map(|s| self.index.count_of(s))
            .filter(|n| n.saturating_mul(8) < self.entries.len());
        if let (Some(source), Some(_)) = (source, small) {
            // A device's few hundred entries: sorting them beats walking
            // the whole map for them.
            let after = q.after.map(GbId::parse);
            let mut ids: Vec<GbId> = self.index.by_source[&source]
                .iter()
                .filter(|id| match &after {
                    Some(Ok(a)) => **id > *a,
                    Some(Err(_)) => q.after.is_none_or(|a| id.as_str() > a),
                    None => true,
                })
                .copied()
                .collect();
            ids.sort_unstable();
            for id in ids {
                if let Some(e) = self.entries.get(&id).filter(|e| keep(e)) {
                    if !take(id, e) {
                        break;
                    }
                }
            }
        } else {
            for (k, e) in self.range_after(q.after).filter(|(_, e)| keep(e)) {
                if !take(*k, e) {
                    break;
                }
            }
        }
        (page, more)
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
            .0
            .len(),
            21
        );
        assert_eq!(c.online_count(), 21);
    }

    #[test]
    fn entries_read_back_through_updates_and_arena_compactions() {
        let mut c = Catalog::new(gid(NODE));
        let named = |n: u32, round: u32| CatalogItem {
            name: Some(format!("camera {n} round {round} {}", "x".repeat(150))),
            ..ch(n, CHILD, "ON")
        };
        // 2,000 entries renamed 40 times: ~16 MB of freed spans, past the
        // point where the arena copies what lives into fresh chunks.
        for round in 0..40 {
            c.replace_from(
                gid(CHILD),
                (0..2000).map(|n| named(n, round)).collect(),
                true,
            );
        }
        assert!(c.arena.chunks() <= 2, "{} chunks", c.arena.chunks());
        for n in [0, 999, 1999] {
            let item = c.item(gid(&format!("3501020100131{n:07}"))).unwrap();
            assert_eq!(item.name, named(n, 39).name);
        }
        // Sending the same catalog again stores nothing new.
        let live = c.arena.live_bytes();
        let chunks = c.arena.chunks();
        assert!(c
            .replace_from(gid(CHILD), (0..2000).map(|n| named(n, 39)).collect(), true)
            .is_empty());
        assert_eq!((c.arena.live_bytes(), c.arena.chunks()), (live, chunks));
    }

    #[test]
    fn lost_video_counts_online_and_is_cleared_by_on_and_off() {
        let mut c = Catalog::new(gid(NODE));
        c.replace_from(gid(CHILD), vec![ch(1, CHILD, "ON")], true);
        let id = gid("35010201001310000001");
        let said = |c: &mut Catalog, ev: &str| {
            let mut i = ch(1, CHILD, "ON");
            i.event = Some(ev.into());
            events(&c.apply_events(gid(CHILD), vec![i]))
        };
        let vlost = vec![(id.to_string(), "VLOST".to_owned())];
        assert_eq!(said(&mut c, "VLOST"), vlost);
        assert!(c.video_lost(id));
        assert_eq!(c.online_count(), 1, "a lost video is still online");
        assert!(said(&mut c, "DEFECT").is_empty(), "already lost");
        // A full catalog's Status ON says nothing of the video.
        assert!(c
            .replace_from(gid(CHILD), vec![ch(1, CHILD, "ON")], true)
            .is_empty());
        assert!(c.video_lost(id));
        assert_eq!(said(&mut c, "ON"), vec![(id.to_string(), "ON".to_owned())]);
        assert!(!c.video_lost(id));
        // The probe's verdicts.
        assert_eq!(
            c.set_video_intact(id, false).and_then(|i| i.event),
            Some("VLOST".into())
        );
        assert!(c.set_video_intact(id, false).is_none());
        assert_eq!(
            said(&mut c, "OFF"),
            vec![(id.to_string(), "OFF".to_owned())]
        );
        assert!(!c.video_lost(id));
        assert!(
            c.set_video_intact(id, true).is_none(),
            "offline: no verdict"
        );
        // Back online after OFF: intact until told otherwise.
        assert_eq!(said(&mut c, "ON").len(), 1);
        assert!(!c.video_lost(id));
        assert_eq!(said(&mut c, "VLOST"), vlost);
        assert_eq!(
            c.set_video_intact(id, true).and_then(|i| i.event),
            Some("ON".into())
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
        // Another source's entries: the device's are few enough to be read
        // from the index, so both ways of answering run.
        c.replace_from(
            gid(CHILD),
            (100..200).map(|n| ch(n, CHILD, "OFF")).collect(),
            true,
        );
        let off = |after: Option<&'static str>, source: Option<&'static str>| Query {
            parent: Some(DEV),
            status: Some("OFF"),
            source,
            after,
            limit: 2,
        };
        for source in [None, Some(DEV)] {
            let (page, more) = c.query(&off(None, source));
            assert!(more);
            assert_eq!(page[1].item.device_id, "35010201001310000003");
            let (page, more) = c.query(&off(Some("35010201001310000003"), source));
            assert!(more);
            assert_eq!(page[0].item.device_id, "35010201001310000005");
            let (page, more) = c.query(&off(Some("35010201001310000007"), source));
            assert!(!more);
            assert_eq!(page.len(), 1);
        }
        // A key that is no ID resumes where it would sort.
        let (page, _) = c.query(&Query {
            after: Some("35010201001310000004x"),
            limit: 1,
            ..Query::default()
        });
        assert_eq!(page[0].item.device_id, "35010201001310000005");
    }

    #[test]
    fn a_source_is_held_to_its_limit() {
        let limits = SourceLimits {
            device: 5,
            platform: 8,
        };
        let mut c = Catalog::with_limits(gid(NODE), limits);
        c.upsert_registrant(gid(DEV), CatalogItem::default());
        let ev = c.replace_from(gid(DEV), (0..9).map(|n| ch(n, DEV, "ON")).collect(), true);
        assert_eq!(ev.len(), 4, "its own item and 4 channels");
        assert_eq!(c.source_len(gid(DEV)), 5);
        assert_eq!(
            c.take_refused(),
            vec![Refused {
                source: gid(DEV),
                entries: 5,
                limit: 5
            }]
        );
        assert!(c.take_refused().is_empty());
        // Changes to what it has are still taken; a platform has more room.
        let ev = c.replace_from(gid(DEV), (0..4).map(|n| ch(n, DEV, "OFF")).collect(), true);
        assert_eq!(ev.len(), 4);
        let ev = c.replace_from(
            gid(CHILD),
            (10..30).map(|n| ch(n, CHILD, "ON")).collect(),
            true,
        );
        assert_eq!(ev.len(), 8);
    }

    #[test]
    fn items_without_a_valid_id_are_not_kept() {
        let mut c = Catalog::new(gid(NODE));
        let mut odd = ch(1, DEV, "ON");
        odd.device_id = "cam-1".into();
        let mut short = ch(2, DEV, "ON");
        short.device_id = "3501020100131".into();
        assert_eq!(
            c.replace_from(gid(DEV), vec![odd, short, ch(3, DEV, "ON")], true)
                .len(),
            1
        );
        assert_eq!(c.len(), 1);
    }

    /// Counters and the per-source index recomputed from the entries.
    fn recount(c: &Catalog) -> (usize, usize, Vec<(GbId, usize)>) {
        let parents: HashSet<GbId> = c
            .entries
            .iter()
            .filter(|(k, _)| is_camera(**k))
            .filter_map(|(_, e)| e.camera_parent())
            .collect();
        let channels = c
            .entries
            .keys()
            .filter(|k| is_camera(**k) && !parents.contains(k))
            .count();
        let online = c.entries.values().filter(|e| e.on).count();
        let mut by: HashMap<GbId, usize> = HashMap::new();
        for e in c.entries.values() {
            *by.entry(c.index.source(e.source)).or_default() += 1;
        }
        let mut by: Vec<_> = by.into_iter().collect();
        by.sort();
        (channels, online, by)
    }

    fn indexed(c: &Catalog) -> (usize, usize, Vec<(GbId, usize)>) {
        let mut by: Vec<_> = c
            .index
            .by_source
            .iter()
            .map(|(s, ids)| (*s, ids.len()))
            .collect();
        by.sort();
        (c.channel_count(), c.online_count(), by)
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        const SOURCES: [&str; 3] = [DEV, CHILD, "35010201001320000007"];

        /// One catalog operation on a small ID space, so entries collide,
        /// move between sources and nest (an IPC, 132, over a channel).
        fn op() -> impl Strategy<Value = (u8, usize, Vec<(u8, u8, u8)>, bool)> {
            (
                0u8..6,
                0usize..3,
                proptest::collection::vec((0u8..12, 0u8..4, 0u8..7), 0..8),
                any::<bool>(),
            )
        }

        fn item(n: u8, parent: u8, ev: u8, source: &str) -> CatalogItem {
            // Even numbers are channels (131), odd ones IPCs (132).
            let code = if n % 2 == 0 { 131 } else { 132 };
            let parent = match parent {
                0 => None,
                1 => Some(source.to_owned()),
                k => Some(format!("3501020100132{:07}", ((n + k) % 12) | 1)),
            };
            CatalogItem {
                device_id: format!("3501020100{code}{n:07}"),
                parent_id: parent,
                status: Some(if ev % 2 == 0 { "ON" } else { "OFF" }.into()),
                event: Some(
                    ["ADD", "DEL", "ON", "OFF", "UPDATE", "ADD", "VLOST"][ev as usize].into(),
                ),
                ..CatalogItem::default()
            }
        }

        proptest! {
            #[test]
            fn counters_and_index_match_the_entries(ops in proptest::collection::vec(op(), 1..40)) {
                let mut c = Catalog::with_limits(gid(NODE), SourceLimits { device: 6, platform: 9 });
                for (kind, s, items, flag) in ops {
                    let source = gid(SOURCES[s]);
                    let items: Vec<CatalogItem> = items
                        .into_iter()
                        .map(|(n, p, e)| item(n, p, e, SOURCES[s]))
                        .collect();
                    match kind {
                        0 => { c.upsert_registrant(source, CatalogItem::default()); }
                        1 | 2 => { c.replace_from(source, items, flag); }
                        3 => { c.apply_events(source, items); }
                        4 => { c.set_source_online(source, flag); }
                        _ => { c.describe_registrant(source, Some("x".into()), None, None); }
                    }
                    prop_assert_eq!(indexed(&c), recount(&c));
                    // Every freed span was freed once, and only those.
                    let live: usize = c.entries.values().map(|e| c.arena.get(e.fields).len()).sum();
                    prop_assert_eq!(c.arena.live_bytes(), live);
                    for (s, n) in recount(&c).2 {
                        prop_assert!(n <= c.limits.of(s) + 1, "{} holds {}", s, n);
                    }
                }
            }
        }
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
