//! Which digest nonces have served a REGISTER, for replay detection, in
//! memory that does not depend on how many devices there are.
//!
//! Nonces carry a serial that counts up in minting order
//! ([`crate::sip::auth::NonceMinter::mint_serial`]), so the ledger is a
//! ring indexed by serial over the nonces minted within the nonce lifetime:
//! 8 bytes per nonce, no hashing, no rehash pause, and expiry is moving the
//! ring's start. (The hash map it replaces pruned in O(n) when full and
//! then stopped tracking replays.) A nonce the ring no longer holds, because
//! it expired or because a flood of challenges pushed the ring to its cap,
//! is *unknown*: its user is challenged again, never let through.
//!
//! A registrar answering REGISTER statelessly (RFC 3261 §8.2.7) sees a
//! retransmitted request again. It is told from a replay by its
//! fingerprint (Call-ID, CSeq and source address hashed): the same nonce
//! count from the same request is a retransmission and gets the same
//! answer; anything else that reuses a count is a replay.

use std::collections::VecDeque;

/// Slots per chunk of the ring: 32 KiB.
const CHUNK: usize = 4096;

/// The ring's slots in fixed chunks. A `VecDeque<Slot>` doubled as a storm
/// of challenges filled it, and each doubling copied every slot on the
/// node's thread (millions of them at the 4,000,000 cap); chunks only ever
/// add or drop 32 KiB.
#[derive(Debug, Default)]
struct Slots {
    chunks: VecDeque<Box<[Slot]>>,
    /// Position of the first slot in the first chunk.
    head: usize,
    len: usize,
    /// A drained chunk kept for the next push, so a steady stream of
    /// nonces does not allocate.
    spare: Option<Box<[Slot]>>,
}

impl Slots {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn get_mut(&mut self, index: usize) -> Option<&mut Slot> {
        if index >= self.len {
            return None;
        }
        let at = self.head + index;
        self.chunks.get_mut(at / CHUNK)?.get_mut(at % CHUNK)
    }

    fn push_back(&mut self, slot: Slot) {
        let at = self.head + self.len;
        if at / CHUNK >= self.chunks.len() {
            let chunk = self
                .spare
                .take()
                .unwrap_or_else(|| vec![Slot::default(); CHUNK].into_boxed_slice());
            self.chunks.push_back(chunk);
        }
        if let Some(s) = self
            .chunks
            .get_mut(at / CHUNK)
            .and_then(|c| c.get_mut(at % CHUNK))
        {
            *s = slot;
            self.len += 1;
        }
    }

    fn pop_front(&mut self) {
        if self.len == 0 {
            return;
        }
        self.len -= 1;
        self.head += 1;
        if self.head == CHUNK || self.len == 0 {
            // The first chunk is spent (or nothing is left): recycle it.
            if let Some(chunk) = self.chunks.pop_front() {
                self.spare = Some(chunk);
            }
            self.head = 0;
            if self.len == 0 {
                self.chunks.clear();
            }
        }
    }

    fn clear(&mut self) {
        if let Some(chunk) = self.chunks.pop_front() {
            self.spare = Some(chunk);
        }
        self.chunks.clear();
        self.head = 0;
        self.len = 0;
    }
}

/// How a use of a nonce counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceUse {
    /// First use, or a higher nonce count (qop): accept.
    Fresh,
    /// The same request again (a lost answer): answer as before.
    Retransmission,
    /// A reused count from another request: refuse.
    Replay,
    /// Not in the ledger (expired or evicted): challenge again.
    Unknown,
}

/// Slot of one minted nonce: `fingerprint` 0 means unused.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    nc: u32,
    fingerprint: u32,
}

/// The ledger (see the module documentation).
#[derive(Debug)]
pub struct ReplayLedger {
    /// Serial of `ring[0]`.
    base: u32,
    ring: Slots,
    /// (issue second, first serial minted in it), oldest first: where the
    /// ring's start moves to as seconds expire.
    seconds: VecDeque<(u64, u32)>,
    lifetime_secs: u64,
    cap: usize,
}

impl ReplayLedger {
    /// A ledger for nonces valid `lifetime_secs`, holding at most `cap`.
    pub fn new(lifetime_secs: u64, cap: usize) -> Self {
        ReplayLedger {
            base: 0,
            ring: Slots::default(),
            seconds: VecDeque::new(),
            lifetime_secs,
            cap: cap.max(1),
        }
    }

    /// Nonces held now.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Nonce `serial` was minted at `issued` (Unix seconds).
    pub fn minted(&mut self, serial: u32, issued: u64) {
        if self.ring.is_empty() {
            self.base = serial;
        }
        // Serials come in order; a gap (another minter's) is padded so the
        // index stays `serial - base`.
        let idx = serial.wrapping_sub(self.base) as usize;
        if idx < self.ring.len() {
            return; // not newer than what we have: ignore
        }
        if idx - self.ring.len() > self.cap {
            self.ring.clear();
            self.seconds.clear();
            self.base = serial;
        }
        while self.ring.len() < serial.wrapping_sub(self.base) as usize {
            self.ring.push_back(Slot::default());
        }
        self.ring.push_back(Slot::default());
        if self.seconds.back().is_none_or(|(s, _)| *s != issued) {
            self.seconds.push_back((issued, serial));
        }
        while self.ring.len() > self.cap {
            self.pop_front();
        }
        self.expire(issued);
    }

    /// Drop nonces issued more than the lifetime before `now_unix`.
    pub fn expire(&mut self, now_unix: u64) {
        while let Some(&(second, _)) = self.seconds.front() {
            if second.saturating_add(self.lifetime_secs) >= now_unix {
                break;
            }
            self.seconds.pop_front();
            let until = self
                .seconds
                .front()
                .map_or(self.base.wrapping_add(self.ring.len() as u32), |(_, s)| *s);
            while self.base != until && !self.ring.is_empty() {
                self.pop_front();
            }
        }
    }

    fn pop_front(&mut self) {
        self.ring.pop_front();
        self.base = self.base.wrapping_add(1);
        while self
            .seconds
            .get(1)
            .is_some_and(|(_, s)| s.wrapping_sub(self.base) as i32 <= 0)
        {
            self.seconds.pop_front();
        }
    }

    /// Record a use of nonce `serial` with nonce count `nc` (0 without
    /// qop; then a nonce serves once) by the request `fingerprint`.
    pub fn use_nonce(&mut self, serial: u32, nc: u32, qop: bool, fingerprint: u64) -> NonceUse {
        // Folded to 32 bits, never 0 (0 marks an unused slot).
        let fp = ((fingerprint >> 32) as u32 ^ fingerprint as u32) | 1;
        let idx = serial.wrapping_sub(self.base) as usize;
        let Some(slot) = self.ring.get_mut(idx) else {
            return NonceUse::Unknown;
        };
        if slot.fingerprint == 0 || (qop && nc > slot.nc) {
            *slot = Slot {
                nc,
                fingerprint: fp,
            };
            return NonceUse::Fresh;
        }
        if nc == slot.nc && fp == slot.fingerprint {
            NonceUse::Retransmission
        } else {
            NonceUse::Replay
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// The chunked slots behave as a plain deque of slots.
            #[test]
            fn slots_are_a_deque(ops in proptest::collection::vec((0u8..4, 0usize..3 * CHUNK), 0..200)) {
                let mut slots = Slots::default();
                let mut plain: VecDeque<Slot> = VecDeque::new();
                for (n, (op, k)) in ops.into_iter().enumerate() {
                    match op {
                        0 => for i in 0..k {
                            let s = Slot { nc: (n * 7 + i) as u32, fingerprint: 1 };
                            slots.push_back(s);
                            plain.push_back(s);
                        },
                        1 => for _ in 0..k {
                            slots.pop_front();
                            plain.pop_front();
                        },
                        2 => {
                            slots.clear();
                            plain.clear();
                        }
                        _ => {
                            let got = slots.get_mut(k).map(|s| (s.nc, s.fingerprint));
                            prop_assert_eq!(got, plain.get(k).map(|s| (s.nc, s.fingerprint)));
                        }
                    }
                    prop_assert_eq!(slots.len(), plain.len());
                }
                for (i, s) in plain.iter().enumerate() {
                    prop_assert_eq!(slots.get_mut(i).map(|s| s.nc), Some(s.nc));
                }
            }
        }
    }

    const T0: u64 = 1_700_000_000;

    #[test]
    fn a_nonce_serves_once_without_qop_and_by_rising_counts_with_it() {
        let mut l = ReplayLedger::new(300, 1000);
        l.minted(0, T0);
        l.minted(1, T0);
        assert_eq!(l.use_nonce(0, 0, false, 11), NonceUse::Fresh);
        assert_eq!(l.use_nonce(0, 0, false, 11), NonceUse::Retransmission);
        assert_eq!(l.use_nonce(0, 0, false, 12), NonceUse::Replay);
        assert_eq!(l.use_nonce(1, 1, true, 21), NonceUse::Fresh);
        assert_eq!(l.use_nonce(1, 1, true, 21), NonceUse::Retransmission);
        assert_eq!(l.use_nonce(1, 1, true, 22), NonceUse::Replay);
        assert_eq!(l.use_nonce(1, 2, true, 22), NonceUse::Fresh);
        assert_eq!(
            l.use_nonce(1, 1, true, 21),
            NonceUse::Replay,
            "an old count again"
        );
        assert_eq!(
            l.use_nonce(2, 1, true, 1),
            NonceUse::Unknown,
            "never minted"
        );
    }

    #[test]
    fn nonces_expire_by_issue_second_and_are_then_unknown() {
        let mut l = ReplayLedger::new(300, 1000);
        for s in 0..10u32 {
            l.minted(s, T0 + u64::from(s / 5)); // five a second
        }
        l.expire(T0 + 300);
        assert_eq!(l.len(), 10, "still within the lifetime");
        l.expire(T0 + 301);
        assert_eq!(l.len(), 5);
        assert_eq!(l.use_nonce(4, 0, false, 1), NonceUse::Unknown);
        assert_eq!(l.use_nonce(5, 0, false, 1), NonceUse::Fresh);
        l.expire(T0 + 302);
        assert!(l.is_empty());
        // Minting goes on after it emptied.
        l.minted(10, T0 + 400);
        assert_eq!(l.use_nonce(10, 0, false, 1), NonceUse::Fresh);
    }

    #[test]
    fn a_flood_of_challenges_evicts_the_oldest_which_are_then_challenged_again() {
        let mut l = ReplayLedger::new(300, 100);
        for s in 0..1000u32 {
            l.minted(s, T0);
        }
        assert_eq!(l.len(), 100);
        assert_eq!(l.use_nonce(899, 0, false, 1), NonceUse::Unknown);
        assert_eq!(l.use_nonce(900, 0, false, 1), NonceUse::Fresh);
        assert_eq!(l.use_nonce(999, 0, false, 1), NonceUse::Fresh);
    }

    #[test]
    fn serials_wrap_around() {
        let mut l = ReplayLedger::new(300, 100);
        l.minted(u32::MAX - 1, T0);
        l.minted(u32::MAX, T0);
        l.minted(0, T0);
        assert_eq!(l.use_nonce(u32::MAX, 0, false, 1), NonceUse::Fresh);
        assert_eq!(l.use_nonce(0, 0, false, 1), NonceUse::Fresh);
        assert_eq!(l.len(), 3);
    }
}
