//! [`PeerLimit`]: at most so many connections open at once from one IP address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::addr::Addr;

/// Counts the open connections of each IP address, refusing one past the limit.
///
/// Off by default (`max: None`): then nothing is counted and a [`Ticket`] is free. Addresses are
/// compared as IP addresses, IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a dual-stack listener reports
/// for IPv4 clients) as the IPv4 address. Unix-socket peers have no IP address and are not limited.
#[derive(Debug, Default)]
pub(crate) struct PeerLimit {
    max: Option<usize>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PeerLimit {
    pub(crate) fn new(max: Option<usize>) -> Self {
        PeerLimit {
            max: max.map(|m| m.max(1)),
            open: Mutex::default(),
        }
    }

    pub(crate) fn max(&self) -> Option<usize> {
        self.max
    }

    /// Counts one more connection from `peer`, or refuses it (`None`) when that would pass the limit.
    pub(crate) fn enter(self: &Arc<Self>, peer: &Addr) -> Option<Ticket> {
        let (Some(max), Some(ip)) = (self.max, peer.as_inet().map(|a| canonical(a.ip()))) else {
            return Some(Ticket(None));
        };
        let mut open = self.open.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Ticket(Some((self.clone(), ip))))
    }

    fn leave(&self, ip: IpAddr) {
        let mut open = self.open.lock();
        if let Some(n) = open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }
}

/// One admitted connection's place in its peer's count, given back when dropped (when the request
/// ends, or, under `Forking`, when its child is reaped).
#[derive(Debug)]
pub(crate) struct Ticket(Option<(Arc<PeerLimit>, IpAddr)>);

impl Ticket {
    /// A ticket for a connection no limit applies to (the test driver's).
    pub(crate) fn unlimited() -> Self {
        Ticket(None)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some((limit, ip)) = self.0.take() {
            limit.leave(ip);
        }
    }
}

/// IPv4-mapped IPv6 addresses as the IPv4 address, so one client counts once however it is reported.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Addr {
        Addr::Inet(s.parse().unwrap())
    }

    #[test]
    fn limits_each_address_and_gives_back_on_drop() {
        let limit = Arc::new(PeerLimit::new(Some(2)));
        let a1 = limit.enter(&addr("10.0.0.1:1")).unwrap();
        let _a2 = limit.enter(&addr("10.0.0.1:2")).unwrap();
        assert!(
            limit.enter(&addr("10.0.0.1:3")).is_none(),
            "a third from one address"
        );
        assert!(
            limit.enter(&addr("[::ffff:10.0.0.1]:4")).is_none(),
            "the mapped form is the same peer"
        );
        let _b = limit.enter(&addr("10.0.0.2:1")).unwrap(); // another address is not affected
        drop(a1);
        assert!(
            limit.enter(&addr("10.0.0.1:5")).is_some(),
            "room again once one closed"
        );
    }

    #[test]
    fn off_by_default_counts_nothing() {
        let limit = Arc::new(PeerLimit::new(None));
        let tickets: Vec<_> = (0..100)
            .map(|i| limit.enter(&addr(&format!("10.0.0.1:{i}"))))
            .collect();
        assert!(tickets.iter().all(Option::is_some));
        assert!(limit.open.lock().is_empty());
    }
}
