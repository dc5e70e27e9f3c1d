//! Admission of connections that have not logged in: who they are, in the
//! order they arrived, and how many each peer address holds.
//!
//! A connection enters when the [server core](super::server_core) counts it (once
//! it has been read and has not logged in within the admission grace) and
//! leaves when it logs in or closes. Two limits apply: one on all such connections and one per peer
//! IP address. A newcomer that would pass a limit displaces the **oldest**
//! connection that counts against it (of its own peer, for the per-peer
//! limit), never the newcomer itself: a flood of idle connections then
//! costs only other idle connections their place, and a real client that
//! connects and logs in at once always gets in.
//!
//! ```text
//!  arrival order:  head ─▶ [3 a] ⇄ [7 b] ⇄ [1 a] ⇄ [4 c] ◀─ tail      (key, peer)
//!  peer a:         head ─▶ [3] ⇄ [1] ◀─ tail, count 2
//! ```
//!
//! Both orders are intrusive doubly linked lists threaded through one node
//! per key (keys are the server's dense slot indices), so every operation
//! is O(1); the only allocations are the node table, which grows to the
//! highest key ever used and is reused, and one map entry per peer address
//! with connections in the set.
#![forbid(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::IpAddr;

/// Which limit displaced a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    /// The limit on all connections that have not logged in.
    Overall,
    /// The limit per peer address.
    PerPeer,
}

/// A connection that had to leave to make room for a newcomer: the caller
/// closes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Evicted {
    /// Its key.
    pub(crate) key: usize,
    /// The limit the newcomer would have passed.
    pub(crate) limit: Limit,
}

/// Links of one key in both lists.
#[derive(Clone, Copy, Debug)]
struct Node {
    peer: IpAddr,
    prev: Option<usize>,
    next: Option<usize>,
    peer_prev: Option<usize>,
    peer_next: Option<usize>,
}

/// One peer's list.
#[derive(Clone, Copy, Debug)]
struct PeerList {
    head: usize,
    tail: usize,
    count: usize,
}

/// The connections that have not logged in (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct Admission {
    max_total: usize,
    max_per_peer: usize,
    nodes: Vec<Option<Node>>,
    head: Option<usize>,
    tail: Option<usize>,
    len: usize,
    peers: BTreeMap<IpAddr, PeerList>,
}

impl Admission {
    /// Limits of at least 1 (0 is taken as 1: a server must be able to
    /// accept someone).
    pub(crate) fn new(max_total: usize, max_per_peer: usize) -> Admission {
        Admission {
            max_total: max_total.max(1),
            max_per_peer: max_per_peer.max(1),
            nodes: Vec::new(),
            head: None,
            tail: None,
            len: 0,
            peers: BTreeMap::new(),
        }
    }

    /// Connections in the set.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Connections in the set from `peer`.
    #[cfg(test)]
    fn peer_count(&self, peer: IpAddr) -> usize {
        self.peers.get(&peer.to_canonical()).map_or(0, |p| p.count)
    }

    /// Whether `key` is in the set.
    #[cfg(test)]
    fn contains(&self, key: usize) -> bool {
        matches!(self.nodes.get(key), Some(Some(_)))
    }

    /// The oldest key in the set.
    #[cfg(test)]
    fn oldest(&self) -> Option<usize> {
        self.head
    }

    /// Adds `key` (not in the set) from `peer` as the newest. If a limit
    /// would be passed, the oldest connection counting against it leaves
    /// the set first and is returned for the caller to close. The limits
    /// hold before and after every call, so one eviction always makes room.
    pub(crate) fn admit(&mut self, key: usize, peer: IpAddr) -> Option<Evicted> {
        let peer = peer.to_canonical();
        self.remove(key);
        let evicted = match self.peers.get(&peer) {
            Some(list) if list.count >= self.max_per_peer => Some(Evicted {
                key: list.head,
                limit: Limit::PerPeer,
            }),
            _ if self.len >= self.max_total => self.head.map(|key| Evicted {
                key,
                limit: Limit::Overall,
            }),
            _ => None,
        };
        if let Some(evicted) = evicted {
            self.remove(evicted.key);
        }
        self.push_back(key, peer);
        evicted
    }

    fn push_back(&mut self, key: usize, peer: IpAddr) {
        let peer_tail = self.peers.get(&peer).map(|p| p.tail);
        if self.nodes.len() <= key {
            self.nodes.resize(key + 1, None);
        }
        if let Some(place) = self.nodes.get_mut(key) {
            *place = Some(Node {
                peer,
                prev: self.tail,
                next: None,
                peer_prev: peer_tail,
                peer_next: None,
            });
        }
        match self.tail.and_then(|t| self.node_mut(t)) {
            Some(tail) => tail.next = Some(key),
            None => self.head = Some(key),
        }
        self.tail = Some(key);
        if let Some(tail) = peer_tail.and_then(|t| self.node_mut(t)) {
            tail.peer_next = Some(key);
        }
        let list = self.peers.entry(peer).or_insert(PeerList {
            head: key,
            tail: key,
            count: 0,
        });
        list.tail = key;
        list.count += 1;
        self.len += 1;
    }

    /// Takes `key` out of the set (it logged in or closed); `false` if it
    /// was not in it.
    pub(crate) fn remove(&mut self, key: usize) -> bool {
        let Some(node) = self.nodes.get_mut(key).and_then(Option::take) else {
            return false;
        };
        match node.prev.and_then(|k| self.node_mut(k)) {
            Some(prev) => prev.next = node.next,
            None => self.head = node.next,
        }
        match node.next.and_then(|k| self.node_mut(k)) {
            Some(next) => next.prev = node.prev,
            None => self.tail = node.prev,
        }
        if let Some(prev) = node.peer_prev.and_then(|k| self.node_mut(k)) {
            prev.peer_next = node.peer_next;
        }
        if let Some(next) = node.peer_next.and_then(|k| self.node_mut(k)) {
            next.peer_prev = node.peer_prev;
        }
        if let Some(list) = self.peers.get_mut(&node.peer) {
            list.count = list.count.saturating_sub(1);
            if list.count == 0 {
                self.peers.remove(&node.peer);
            } else {
                if list.head == key {
                    if let Some(next) = node.peer_next {
                        list.head = next;
                    }
                }
                if list.tail == key {
                    if let Some(prev) = node.peer_prev {
                        list.tail = prev;
                    }
                }
            }
        }
        self.len = self.len.saturating_sub(1);
        true
    }

    fn node_mut(&mut self, key: usize) -> Option<&mut Node> {
        self.nodes.get_mut(key).and_then(Option::as_mut)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]
mod tests {
    use super::*;
    use alloc::collections::VecDeque;
    use core::net::{Ipv4Addr, Ipv6Addr};

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    /// The set's keys in arrival order, walked through the links both ways.
    fn order(a: &Admission) -> Vec<usize> {
        let mut forward = Vec::new();
        let mut at = a.head;
        while let Some(key) = at {
            forward.push(key);
            at = a.nodes[key].unwrap().next;
        }
        let mut backward = Vec::new();
        let mut at = a.tail;
        while let Some(key) = at {
            backward.push(key);
            at = a.nodes[key].unwrap().prev;
        }
        backward.reverse();
        assert_eq!(forward, backward, "links agree both ways");
        assert_eq!(forward.len(), a.len);
        forward
    }

    /// One peer's keys in arrival order, both ways.
    fn peer_order(a: &Admission, peer: IpAddr) -> Vec<usize> {
        let Some(list) = a.peers.get(&peer) else {
            return Vec::new();
        };
        let mut forward = Vec::new();
        let mut at = Some(list.head);
        while let Some(key) = at {
            forward.push(key);
            at = a.nodes[key].unwrap().peer_next;
        }
        let mut backward = Vec::new();
        let mut at = Some(list.tail);
        while let Some(key) = at {
            backward.push(key);
            at = a.nodes[key].unwrap().peer_prev;
        }
        backward.reverse();
        assert_eq!(forward, backward);
        assert_eq!(forward.len(), list.count);
        forward
    }

    #[test]
    fn the_oldest_leaves_first_under_the_overall_limit() {
        let mut a = Admission::new(3, 100);
        for key in 0..3 {
            assert_eq!(a.admit(key, ip(key as u8 + 1)), None);
        }
        assert_eq!(order(&a), [0, 1, 2]);
        let evicted = a.admit(3, ip(9));
        assert_eq!(
            evicted,
            Some(Evicted {
                key: 0,
                limit: Limit::Overall
            })
        );
        assert_eq!(order(&a), [1, 2, 3]);
        assert!(!a.contains(0));
        assert_eq!(a.peer_count(ip(1)), 0);
        assert!(!a.peers.contains_key(&ip(1)), "empty peers leave the map");
    }

    #[test]
    fn the_peers_oldest_leaves_first_under_the_per_peer_limit() {
        let mut a = Admission::new(100, 2);
        assert_eq!(a.admit(0, ip(1)), None);
        assert_eq!(a.admit(1, ip(2)), None);
        assert_eq!(a.admit(2, ip(1)), None);
        // A third from 127.0.0.1 displaces its oldest (0), not 1 (older
        // than 2 but another peer's).
        assert_eq!(
            a.admit(3, ip(1)),
            Some(Evicted {
                key: 0,
                limit: Limit::PerPeer
            })
        );
        assert_eq!(order(&a), [1, 2, 3]);
        assert_eq!(peer_order(&a, ip(1)), [2, 3]);
        assert_eq!(peer_order(&a, ip(2)), [1]);
        assert_eq!(a.peer_count(ip(1)), 2);
    }

    #[test]
    fn removal_from_the_middle_keeps_both_orders() {
        let mut a = Admission::new(100, 100);
        for key in 0..6 {
            a.admit(key, ip(1 + (key % 2) as u8));
        }
        assert!(a.remove(2)); // middle of both lists
        assert!(a.remove(0)); // head of both
        assert!(a.remove(5)); // tail of both
        assert!(!a.remove(5), "removing twice is a no-op");
        assert!(!a.remove(77), "an unknown key too");
        assert_eq!(order(&a), [1, 3, 4]);
        assert_eq!(peer_order(&a, ip(1)), [4]);
        assert_eq!(peer_order(&a, ip(2)), [1, 3]);
        // Keys are reused after they leave.
        a.admit(0, ip(2));
        assert_eq!(order(&a), [1, 3, 4, 0]);
        assert_eq!(peer_order(&a, ip(2)), [1, 3, 0]);
    }

    #[test]
    fn ipv4_mapped_ipv6_peers_count_as_their_ipv4_address() {
        let mut a = Admission::new(100, 1);
        a.admit(0, ip(1));
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(a.peer_count(mapped), 1);
        assert_eq!(
            a.admit(1, mapped),
            Some(Evicted {
                key: 0,
                limit: Limit::PerPeer
            })
        );
        assert_eq!(a.admit(2, IpAddr::V6(Ipv6Addr::LOCALHOST)), None);
    }

    #[test]
    fn zero_limits_still_admit_one() {
        let mut a = Admission::new(0, 0);
        assert_eq!(a.admit(0, ip(1)), None);
        assert_eq!(a.admit(1, ip(2)).map(|e| e.key), Some(0));
        assert_eq!(order(&a), [1]);
    }

    /// Against a plain model (a queue scanned in full): any sequence of
    /// admissions and removals, from a few peers, under small limits.
    #[test]
    fn matches_a_simple_model_under_random_operations() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for (max_total, max_per_peer) in [(5, 2), (8, 8), (3, 10), (1, 1)] {
            let mut a = Admission::new(max_total, max_per_peer);
            let mut model: VecDeque<(usize, IpAddr)> = VecDeque::new();
            for _ in 0..5_000 {
                let key = (next() % 16) as usize;
                if next() % 3 == 0 {
                    let present = model.iter().position(|&(k, _)| k == key);
                    if let Some(i) = present {
                        model.remove(i);
                    }
                    assert_eq!(a.remove(key), present.is_some());
                } else {
                    let peer = ip(1 + (next() % 3) as u8);
                    if let Some(i) = model.iter().position(|&(k, _)| k == key) {
                        model.remove(i);
                    }
                    let of_peer = model.iter().filter(|&&(_, p)| p == peer).count();
                    let want = if of_peer >= max_per_peer {
                        let i = model.iter().position(|&(_, p)| p == peer).unwrap();
                        Some(Evicted {
                            key: model.remove(i).unwrap().0,
                            limit: Limit::PerPeer,
                        })
                    } else if model.len() >= max_total {
                        Some(Evicted {
                            key: model.pop_front().unwrap().0,
                            limit: Limit::Overall,
                        })
                    } else {
                        None
                    };
                    model.push_back((key, peer));
                    assert_eq!(a.admit(key, peer), want);
                }
                let keys: Vec<usize> = model.iter().map(|&(k, _)| k).collect();
                assert_eq!(order(&a), keys);
                assert_eq!(a.oldest(), keys.first().copied());
                for last in 1..=3 {
                    let peer_keys: Vec<usize> = model
                        .iter()
                        .filter(|&&(_, p)| p == ip(last))
                        .map(|&(k, _)| k)
                        .collect();
                    assert_eq!(peer_order(&a, ip(last)), peer_keys);
                    assert_eq!(a.peer_count(ip(last)), peer_keys.len());
                }
                assert!(a.len() <= max_total.max(1));
            }
        }
    }
}
