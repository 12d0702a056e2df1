//! A packet cache for UDP, as PowerDNS's authoritative server keeps one: a response is a
//! function of the query's bytes after its ID, of the querier's locality and of the zone
//! view, so the same question from the same place is answered by copying the bytes sent
//! last time and writing the new ID in. Entries die with the view they were answered from.
//!
//! Parsing and encoding cost more than the socket calls around them; on a repeated question
//! the cache skips both.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use super::ZoneView;

/// Entries kept at most; when full, the cache starts over. A bound on memory (responses are
/// at most 1232 bytes), and a stream of ever new names only makes it useless, never large.
const MAX_ENTRIES: usize = 16 * 1024;

/// A response ready to send again.
pub(super) struct Cached {
    /// The response as sent, its ID included (overwritten on each hit).
    response: Vec<u8>,
    /// The `hansa_dns_queries` counter of its question type and response code.
    pub(super) counter: Counter,
    pub(super) truncated: bool,
}

/// One UDP loop's cache: not shared, so no lock.
#[derive(Default)]
pub(super) struct AnswerCache {
    /// The view every entry was answered from.
    view: Option<Arc<ZoneView>>,
    entries: HashMap<Box<[u8]>, Cached>,
    /// The key being looked up, kept to reuse its allocation.
    key: Vec<u8>,
}

impl AnswerCache {
    /// Prepares the key of `query` from a querier in `querier` (the view's locality of its
    /// source address) and drops every entry if `view` is not the one they came from.
    pub(super) fn prepare(&mut self, view: &Arc<ZoneView>, query: &[u8], querier: Option<u16>) {
        if !self.view.as_ref().is_some_and(|v| Arc::ptr_eq(v, view)) {
            self.entries.clear();
            self.view = Some(view.clone());
        }
        self.key.clear();
        self.key
            .extend_from_slice(query.get(2..).unwrap_or_default());
        match querier {
            Some(cluster) => {
                self.key.push(1);
                self.key.extend_from_slice(&cluster.to_be_bytes());
            }
            None => self.key.push(0),
        }
    }

    /// The response to the prepared query, with `id` written in.
    pub(super) fn hit(&mut self, id: [u8; 2]) -> Option<&Cached> {
        let cached = self.entries.get_mut(self.key.as_slice())?;
        cached.response.get_mut(..2)?.copy_from_slice(&id);
        Some(cached)
    }

    /// Keeps the response to the prepared query.
    pub(super) fn insert(&mut self, response: &[u8], counter: Counter, truncated: bool) {
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(
            self.key.as_slice().into(),
            Cached {
                response: response.to_vec(),
                counter,
                truncated,
            },
        );
    }
}

impl Cached {
    pub(super) fn response(&self) -> &[u8] {
        &self.response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{ZoneSettings, ZoneView};

    fn view() -> Arc<ZoneView> {
        let settings = ZoneSettings {
            zone: "hansa.internal.".parse().expect("zone"),
            ttl: 5,
            negative_ttl: 2,
            ns_addresses: Vec::new(),
            own_cluster: None,
        };
        Arc::new(ZoneView::build(
            &settings,
            &Default::default(),
            &HashMap::new(),
            1,
        ))
    }

    #[test]
    fn a_hit_carries_the_new_id_and_entries_die_with_their_view() {
        let first = view();
        let mut cache = AnswerCache::default();
        let query = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        cache.prepare(&first, &query, Some(1));
        assert!(cache.hit([0x12, 0x34]).is_none());
        cache.insert(&[0x12, 0x34, 0x81, 0x80], Counter::default(), false);

        cache.prepare(&first, &[0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0], Some(1));
        let hit = cache.hit([0xab, 0xcd]).map(|c| c.response().to_vec());
        assert_eq!(hit, Some(vec![0xab, 0xcd, 0x81, 0x80]));

        // Another locality is another answer.
        cache.prepare(&first, &query, Some(2));
        assert!(cache.hit([0x12, 0x34]).is_none());
        cache.prepare(&first, &query, None);
        assert!(cache.hit([0x12, 0x34]).is_none());

        // A new view: nothing answered from the old one is served.
        cache.prepare(&view(), &query, Some(1));
        assert!(cache.hit([0x12, 0x34]).is_none());
    }
}
