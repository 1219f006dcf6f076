//! Where the catalog's packed entries live: large chunks of bytes the
//! catalog alone allocates, not one heap allocation per entry.
//!
//! Why: a city's 420,000 entries arrive over UDP in ~140,000 MESSAGEs per
//! hop, and every message allocates short-lived buffers of the same sizes
//! as a packed entry (150–250 bytes). One allocation per entry put each
//! long-lived entry on the allocator's pages between short-lived ones, so
//! no page emptied once the storm was over: the city kept ~200 bytes an
//! entry more over UDP links than over TCP. In chunks the entries share
//! pages only with each other, and the per-allocation overhead is gone.
//!
//! A freed span is garbage until its chunk holds nothing live (the chunk
//! is then dropped) or until garbage outweighs live bytes, when the
//! catalog copies its entries into fresh chunks ([`Arena::wants_compaction`]).

/// Bytes per chunk. Entries larger than a quarter of it get a chunk of
/// their own.
const CHUNK: usize = 1 << 20;

/// Garbage below this is never worth a compaction.
const MIN_GARBAGE: usize = 8 * CHUNK;

/// Where one entry's bytes are: 12 bytes, where a `Box<[u8]>` is 16 plus
/// the allocator's own header and rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    chunk: u32,
    start: u32,
    len: u32,
}

#[derive(Default)]
struct Chunk {
    bytes: Vec<u8>,
    /// Live spans in it.
    live: u32,
}

/// The chunks.
#[derive(Default)]
pub(super) struct Arena {
    /// `None`: a dropped chunk whose number may be reused.
    chunks: Vec<Option<Chunk>>,
    /// The chunk new spans go to.
    open: Option<u32>,
    free_numbers: Vec<u32>,
    live_bytes: usize,
    garbage: usize,
}

impl std::fmt::Debug for Arena {
    /// A summary: the bytes themselves would be a city's whole catalog.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("chunks", &self.chunks.iter().flatten().count())
            .field("live_bytes", &self.live_bytes)
            .field("garbage", &self.garbage)
            .finish()
    }
}

impl Arena {
    /// The bytes of `span`.
    pub(super) fn get(&self, span: Span) -> &[u8] {
        let start = span.start as usize;
        self.chunks
            .get(span.chunk as usize)
            .and_then(Option::as_ref)
            .and_then(|c| c.bytes.get(start..start + span.len as usize))
            .unwrap_or_default()
    }

    /// Stores `bytes`.
    pub(super) fn put(&mut self, bytes: &[u8]) -> Span {
        self.live_bytes += bytes.len();
        if bytes.len() > CHUNK / 4 {
            let n = self.new_chunk(bytes.len());
            return self.append(n, bytes);
        }
        let n = match self.open {
            Some(n)
                if self.chunks[n as usize]
                    .as_ref()
                    .is_some_and(|c| c.bytes.len() + bytes.len() <= c.bytes.capacity()) =>
            {
                n
            }
            _ => {
                if let Some(old) = self.open.take() {
                    self.drop_if_empty(old);
                }
                let n = self.new_chunk(CHUNK);
                self.open = Some(n);
                n
            }
        };
        self.append(n, bytes)
    }

    /// `span`'s bytes are no longer used.
    pub(super) fn free(&mut self, span: Span) {
        let len = span.len as usize;
        self.live_bytes -= len;
        let Some(chunk) = self.chunks.get_mut(span.chunk as usize) else {
            return;
        };
        let Some(c) = chunk.as_mut() else {
            return;
        };
        c.live -= 1;
        if c.live == 0 && self.open != Some(span.chunk) {
            // Nothing in it is used: give it back now.
            self.garbage -= c.bytes.len() - len;
            *chunk = None;
            self.free_numbers.push(span.chunk);
        } else {
            self.garbage += len;
        }
    }

    /// Garbage outweighs what is used: time for the catalog to copy its
    /// entries into a new arena.
    pub(super) fn wants_compaction(&self) -> bool {
        self.garbage > MIN_GARBAGE && self.garbage > self.live_bytes
    }

    /// Bytes in use.
    #[cfg(test)]
    pub(super) fn live_bytes(&self) -> usize {
        self.live_bytes
    }

    /// Chunks held.
    #[cfg(test)]
    pub(super) fn chunks(&self) -> usize {
        self.chunks.iter().flatten().count()
    }

    /// Gives chunk `n` back if nothing in it is used.
    fn drop_if_empty(&mut self, n: u32) {
        let Some(chunk) = self.chunks.get_mut(n as usize) else {
            return;
        };
        if chunk.as_ref().is_some_and(|c| c.live == 0) {
            if let Some(c) = chunk.take() {
                self.garbage -= c.bytes.len();
            }
            self.free_numbers.push(n);
        }
    }

    fn new_chunk(&mut self, capacity: usize) -> u32 {
        let chunk = Chunk {
            bytes: Vec::with_capacity(capacity),
            live: 0,
        };
        match self.free_numbers.pop() {
            Some(n) => {
                self.chunks[n as usize] = Some(chunk);
                n
            }
            None => {
                self.chunks.push(Some(chunk));
                u32::try_from(self.chunks.len() - 1).unwrap_or(u32::MAX)
            }
        }
    }

    fn append(&mut self, n: u32, bytes: &[u8]) -> Span {
        let Some(c) = self.chunks.get_mut(n as usize).and_then(Option::as_mut) else {
            return Span {
                chunk: n,
                start: 0,
                len: 0,
            };
        };
        let start = c.bytes.len();
        c.bytes.extend_from_slice(bytes);
        c.live += 1;
        Span {
            chunk: n,
            start: u32::try_from(start).unwrap_or(u32::MAX),
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_back_and_empty_chunks_are_dropped() {
        let mut a = Arena::default();
        let spans: Vec<(Span, Vec<u8>)> = (0..20_000u32)
            .map(|i| {
                let bytes = vec![(i % 251) as u8; 100 + (i % 150) as usize];
                (a.put(&bytes), bytes)
            })
            .collect();
        for (s, b) in &spans {
            assert_eq!(a.get(*s), &b[..]);
        }
        let held = a.chunks();
        assert!(held >= 3, "{held} chunks");
        // Free everything but the last few: the full chunks go back.
        for (s, _) in &spans[..19_990] {
            a.free(*s);
        }
        assert!(a.chunks() <= 2, "{} chunks left", a.chunks());
        for (s, b) in &spans[19_990..] {
            assert_eq!(a.get(*s), &b[..]);
        }
        assert_eq!(
            a.live_bytes(),
            spans[19_990..].iter().map(|(_, b)| b.len()).sum::<usize>()
        );
    }

    #[test]
    fn a_large_entry_gets_its_own_chunk_and_garbage_asks_for_compaction() {
        let mut a = Arena::default();
        let big = vec![7u8; CHUNK / 2];
        let s = a.put(&big);
        assert_eq!(a.get(s), &big[..]);
        a.free(s);
        assert_eq!(a.chunks(), 0);
        // One live span in each of many chunks keeps them; the rest is
        // garbage, and past the minimum it asks for a compaction.
        let mut keep = Vec::new();
        let mut drop = Vec::new();
        for i in 0..(10 * CHUNK / 200) {
            let span = a.put(&[1u8; 200]);
            if i % 1000 == 0 {
                keep.push(span);
            } else {
                drop.push(span);
            }
        }
        assert!(!a.wants_compaction());
        for s in drop {
            a.free(s);
        }
        assert!(a.wants_compaction());
        for s in keep {
            assert_eq!(a.get(s), &[1u8; 200][..]);
        }
    }
}
