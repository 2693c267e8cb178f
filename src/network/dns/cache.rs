//! The resolver's positive cache: host name → addresses, with a time to live and a size bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub(super) struct AddressCache {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<String, CacheEntry>,
}

struct CacheEntry {
    addresses: Vec<IpAddr>,
    /// When the answer came: it is reused while younger than the TTL of the moment, so a TTL
    /// lowered later applies to it as well.
    answered: Instant,
}

impl AddressCache {
    pub(super) fn new(ttl: Duration, capacity: usize) -> Self {
        AddressCache {
            ttl,
            capacity,
            entries: HashMap::new(),
        }
    }

    /// A zero TTL disables the cache and forgets what it held. A new TTL applies to the answers
    /// already held as well.
    pub(super) fn set_ttl(&mut self, ttl: Duration) {
        self.ttl = ttl;
        if ttl.is_zero() {
            self.entries.clear();
        }
    }

    pub(super) fn is_enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The unexpired addresses for `key` (an expired entry is dropped on the way).
    pub(super) fn get(&mut self, key: &str, now: Instant) -> Option<Vec<IpAddr>> {
        let entry = self.entries.get(key)?;
        if self.fresh(entry, now) {
            return Some(entry.addresses.clone());
        }
        self.entries.remove(key);
        None
    }

    /// Remembers `addresses` for `key`. When full, expired entries go first, then the entry
    /// closest to expiry.
    pub(super) fn insert(&mut self, key: String, addresses: Vec<IpAddr>, now: Instant) {
        if !self.is_enabled() || addresses.is_empty() || self.capacity == 0 {
            return;
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.make_room(now);
        }
        let answered = now;
        self.entries.insert(
            key,
            CacheEntry {
                addresses,
                answered,
            },
        );
    }

    /// Whether `entry` is younger than the TTL (never overflows, whatever the TTL).
    fn fresh(&self, entry: &CacheEntry, now: Instant) -> bool {
        now.saturating_duration_since(entry.answered) < self.ttl
    }

    fn make_room(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.answered) < ttl);
        if self.entries.len() < self.capacity {
            return;
        }
        // All share one TTL: the oldest answer is the one closest to expiry.
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.answered)
            .map(|(k, _)| k.clone());
        if let Some(oldest) = oldest {
            self.entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> Vec<IpAddr> {
        vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))]
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let now = Instant::now();
        let mut cache = AddressCache::new(Duration::from_secs(60), 8);
        cache.insert("a".into(), ip(1), now);
        assert_eq!(cache.get("a", now + Duration::from_secs(59)), Some(ip(1)));
        assert_eq!(cache.get("a", now + Duration::from_secs(60)), None);
        assert_eq!(cache.len(), 0, "expired entry dropped on lookup");
    }

    #[test]
    fn over_capacity_evicts_the_oldest_entry() {
        let now = Instant::now();
        let mut cache = AddressCache::new(Duration::from_secs(60), 3);
        for i in 0..3u8 {
            cache.insert(
                format!("h{i}"),
                ip(i),
                now + Duration::from_secs(u64::from(i)),
            );
        }
        cache.insert("h3".into(), ip(3), now + Duration::from_secs(3));
        assert_eq!(cache.len(), 3);
        let later = now + Duration::from_secs(4);
        assert_eq!(cache.get("h0", later), None, "oldest evicted");
        assert_eq!(cache.get("h3", later), Some(ip(3)));
        assert_eq!(cache.get("h1", later), Some(ip(1)));
    }

    #[test]
    fn over_capacity_drops_every_expired_entry_first() {
        let now = Instant::now();
        let mut cache = AddressCache::new(Duration::from_secs(10), 2);
        cache.insert("a".into(), ip(1), now);
        cache.insert("b".into(), ip(2), now + Duration::from_secs(1));
        cache.insert("c".into(), ip(3), now + Duration::from_secs(20));
        assert_eq!(
            cache.len(),
            1,
            "both expired entries went, not just the oldest"
        );
        assert_eq!(cache.get("c", now + Duration::from_secs(20)), Some(ip(3)));
    }

    #[test]
    fn the_resolver_cache_is_bounded() {
        let now = Instant::now();
        let mut cache = AddressCache::new(Duration::from_secs(60), super::super::MAX_CACHED_NAMES);
        for i in 0..=super::super::MAX_CACHED_NAMES {
            cache.insert(format!("host{i}"), ip(1), now);
        }
        assert_eq!(cache.len(), super::super::MAX_CACHED_NAMES);
    }

    #[test]
    fn zero_ttl_disables_and_clears() {
        let now = Instant::now();
        let mut cache = AddressCache::new(Duration::from_secs(60), 8);
        cache.insert("a".into(), ip(1), now);
        cache.set_ttl(Duration::ZERO);
        assert_eq!(cache.len(), 0);
        cache.insert("b".into(), ip(2), now);
        assert_eq!(cache.get("b", now), None);
    }

    #[test]
    fn empty_answers_and_a_zero_capacity_cache_store_nothing() {
        let now = Instant::now();
        let mut cache = AddressCache::new(Duration::from_secs(60), 8);
        cache.insert("a".into(), Vec::new(), now);
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.get("a", now), None);
        let mut none = AddressCache::new(Duration::from_secs(60), 0);
        none.insert("a".into(), ip(1), now);
        assert_eq!(none.len(), 0);
    }

    #[test]
    fn refreshing_a_cached_name_in_a_full_cache_evicts_nothing() {
        let now = Instant::now();
        let mut cache = AddressCache::new(Duration::from_secs(60), 2);
        cache.insert("a".into(), ip(1), now);
        cache.insert("b".into(), ip(2), now + Duration::from_secs(1));
        // b is refreshed; a, the entry closest to expiry, must stay.
        cache.insert("b".into(), ip(3), now + Duration::from_secs(2));
        let later = now + Duration::from_secs(3);
        assert_eq!(cache.get("b", later), Some(ip(3)));
        assert_eq!(cache.get("a", later), Some(ip(1)), "a was evicted");
    }

    /// `set_cache_ttl` lowered (say after a DNS change) applies to the answers cached already,
    /// not only to later ones: an answer older than the new TTL is not reused (as curl's
    /// `CURLOPT_DNS_CACHE_TIMEOUT`).
    #[test]
    fn a_lowered_ttl_applies_to_answers_cached_before() {
        let now = Instant::now();
        let mut cache = AddressCache::new(Duration::from_secs(60), 8);
        cache.insert("a".into(), ip(1), now);
        cache.set_ttl(Duration::from_secs(5));
        assert_eq!(cache.get("a", now + Duration::from_secs(4)), Some(ip(1)));
        assert_eq!(cache.get("a", now + Duration::from_secs(6)), None);
    }

    #[test]
    fn huge_ttl_does_not_overflow() {
        let now = Instant::now();
        let mut cache = AddressCache::new(Duration::MAX, 8);
        cache.insert("a".into(), ip(1), now);
        assert_eq!(cache.get("a", now + Duration::from_secs(3600)), Some(ip(1)));
    }
}
