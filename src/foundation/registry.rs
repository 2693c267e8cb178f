//! Registrations of I/O sources with the loop, keyed by generational mio tokens.
//!
//! A token packs a slab index with a generation. When a source is deregistered its slot may be
//! reused, but the generation changes, so readiness that was already collected for the old source
//! (same descriptor number, same batch) is recognised as stale and dropped (KDFoundation keyed epoll
//! by raw fd and delivered such events to the wrong notifier, defect D3).

use std::rc::{Rc, Weak};

use mio::Token;
use slab::Slab;

/// Readiness of one source, copied out of mio's event so no borrow of the event buffer is held
/// while handlers run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Readiness {
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    pub(crate) error: bool,
    pub(crate) read_closed: bool,
    pub(crate) write_closed: bool,
    pub(crate) priority: bool,
}

impl Readiness {
    /// Adds what `other` reports (a later poll's report of the same source).
    pub(crate) fn merge(&mut self, other: Readiness) {
        self.readable |= other.readable;
        self.writable |= other.writable;
        self.error |= other.error;
        self.read_closed |= other.read_closed;
        self.write_closed |= other.write_closed;
        self.priority |= other.priority;
    }

    pub(crate) fn from_event(event: &mio::event::Event) -> Self {
        Readiness {
            readable: event.is_readable(),
            writable: event.is_writable(),
            error: event.is_error(),
            read_closed: event.is_read_closed(),
            write_closed: event.is_write_closed(),
            priority: event.is_priority(),
        }
    }
}

/// Receives readiness for a registered source.
pub(crate) trait ReadyHandler {
    fn on_ready(&self, readiness: Readiness);
}

/// Identifies one registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SourceKey {
    index: u32,
    generation: u32,
}

impl SourceKey {
    pub(crate) fn token(self) -> Token {
        Token(((self.generation as usize) << 32) | self.index as usize)
    }

    fn from_token(token: Token) -> Self {
        SourceKey {
            index: (token.0 & 0xFFFF_FFFF) as u32,
            generation: (token.0 >> 32) as u32,
        }
    }
}

/// The loop's own waker uses a token no registration can produce (index `u32::MAX`).
pub(crate) const WAKER_TOKEN: Token = Token(usize::MAX);

struct SourceEntry {
    generation: u32,
    handler: Weak<dyn ReadyHandler>,
}

pub(crate) struct SourceRegistry {
    entries: Slab<SourceEntry>,
    next_generation: u32,
}

impl SourceRegistry {
    pub(crate) fn new() -> Self {
        const _: () = assert!(usize::BITS >= 64, "kdnet packs tokens into 64-bit usize");
        SourceRegistry {
            entries: Slab::new(),
            next_generation: 1,
        }
    }

    pub(crate) fn insert(&mut self, handler: Weak<dyn ReadyHandler>) -> SourceKey {
        let generation = self.next_generation;
        // Generation 0 is never used so a zeroed token is never valid.
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let index = self.entries.insert(SourceEntry {
            generation,
            handler,
        });
        SourceKey {
            index: index as u32,
            generation,
        }
    }

    pub(crate) fn remove(&mut self, key: SourceKey) -> bool {
        let index = key.index as usize;
        if self
            .entries
            .get(index)
            .is_some_and(|e| e.generation == key.generation)
        {
            self.entries.remove(index);
            true
        } else {
            false
        }
    }

    /// The live handler for `token`, or `None` for a stale or unknown token.
    pub(crate) fn handler(&self, token: Token) -> Option<Rc<dyn ReadyHandler>> {
        let key = SourceKey::from_token(token);
        self.entries
            .get(key.index as usize)
            .filter(|e| e.generation == key.generation)
            .and_then(|e| e.handler.upgrade())
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nop;
    impl ReadyHandler for Nop {
        fn on_ready(&self, _: Readiness) {}
    }

    #[test]
    fn reused_slot_rejects_old_token() {
        let nop: Rc<dyn ReadyHandler> = Rc::new(Nop);
        let mut reg = SourceRegistry::new();
        let old = reg.insert(Rc::downgrade(&nop));
        assert!(reg.remove(old));
        let new = reg.insert(Rc::downgrade(&nop));
        assert_eq!(old.index, new.index, "slot is reused");
        assert!(reg.handler(old.token()).is_none());
        assert!(reg.handler(new.token()).is_some());
        assert!(reg.handler(WAKER_TOKEN).is_none());
    }
}
