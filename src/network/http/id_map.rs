//! [`IdMap`]: a hash map keyed by the client's own request and connection ids.
//!
//! Those ids are counters the client hands out itself, never peer input, so they need no
//! flood-resistant hash: a multiplication spreads them over the table. The std default
//! (SipHash) cost ~150 instructions per lookup, and a keep-alive request does about 25 lookups.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map from an id the client generated to its state.
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Hashes one `u64` by Fibonacci multiplication (the high bits, which hashbrown uses for its
/// control bytes, depend on every bit of the id).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

/// 2^64 divided by the golden ratio, odd: multiplication by it is a bijection on `u64`.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = (self.0 ^ id).wrapping_mul(FIBONACCI);
    }

    /// Not used for `u64` keys; folds arbitrary bytes so the hasher stays correct for any key.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_and_look_up() {
        let mut map: IdMap<u64> = IdMap::default();
        for id in 0..10_000u64 {
            map.insert(id, id * 2);
        }
        assert_eq!(map.len(), 10_000);
        assert!((0..10_000u64).all(|id| map.get(&id) == Some(&(id * 2))));
        assert_eq!(map.remove(&5), Some(10));
        assert_eq!(map.get(&5), None);
        // The top 7 bits (hashbrown's control byte) differ between neighbouring ids.
        let top = |id: u64| {
            let mut hasher = IdHasher::default();
            hasher.write_u64(id);
            hasher.finish() >> 57
        };
        let distinct: std::collections::HashSet<u64> = (0..128).map(top).collect();
        assert!(
            distinct.len() > 64,
            "{} distinct control bytes",
            distinct.len()
        );
    }
}
