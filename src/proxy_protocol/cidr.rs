//! [`Cidr`]: an IPv4 or IPv6 network, to say which peers are trusted proxies.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network in CIDR notation (`10.0.0.0/8`, `fd00::/8`), or one host (`127.0.0.1`, `::1`).
///
/// Why a type of its own: trusting a PROXY header is an access decision, so the list of trusted
/// proxies is parsed once, strictly, when the server is configured — a typo fails loudly then, rather
/// than silently trusting the wrong peers later. Parsing rejects a prefix longer than the address and
/// a network with host bits set (`10.0.0.1/8` is almost always a mistake for `10.0.0.0/8` or
/// `10.0.0.1/32`).
///
/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack `[::]` listener reports for IPv4
/// peers) are the IPv4 addresses they map, on both sides: a peer in that form is matched as IPv4,
/// and a network written in that form (`::ffff:127.0.0.1`, `::ffff:10.0.0.0/104`) *is* the IPv4
/// network it maps (`127.0.0.1/32`, `10.0.0.0/8`), and displays as such. Otherwise a proxy
/// configured as `::ffff:127.0.0.1` would match no peer at all — a silent "trust no one". An IPv6
/// network shorter than `/96` that merely overlaps the mapped range stays IPv6: families never mix.
///
/// # Examples
///
/// ```
/// use socketserver::proxy_protocol::Cidr;
///
/// let lan: Cidr = "10.0.0.0/8".parse()?;
/// assert!(lan.contains("10.1.2.3".parse()?));
/// assert!(lan.contains("::ffff:10.1.2.3".parse()?)); // IPv4 seen through a dual-stack socket
/// assert!(!lan.contains("11.0.0.1".parse()?));
/// assert_eq!("::ffff:10.0.0.0/104".parse::<Cidr>()?, lan); // the same network, IPv4-mapped
///
/// let host: Cidr = "::1".parse()?;
/// assert_eq!(host.to_string(), "::1/128");
/// assert!("10.0.0.1/8".parse::<Cidr>().is_err()); // host bits set
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a string is not a [`Cidr`]; its message quotes the string.
///
/// # Examples
///
/// ```
/// use socketserver::proxy_protocol::Cidr;
///
/// let err = "10.0.0.0/33".parse::<Cidr>().unwrap_err();
/// assert_eq!(err.to_string(), "invalid network \"10.0.0.0/33\": prefix longer than 32 bits");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError {
    input: String,
    why: &'static str,
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid network {:?}: {}", self.input, self.why)
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    /// The network `addr/prefix`; an IPv4-mapped `addr` with a prefix of 96 or more is the IPv4
    /// network it maps.
    ///
    /// # Errors
    /// A prefix longer than the address (32 bits for IPv4, 128 for IPv6), or host bits set in `addr`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::Ipv4Addr;
    /// use socketserver::proxy_protocol::Cidr;
    ///
    /// let net = Cidr::new(Ipv4Addr::new(192, 168, 0, 0).into(), 16)?;
    /// assert!(net.contains(Ipv4Addr::new(192, 168, 7, 1).into()));
    /// # Ok::<(), socketserver::proxy_protocol::CidrError>(())
    /// ```
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        let fail = |why| CidrError {
            input: format!("{addr}/{prefix}"),
            why,
        };
        let bits = bits_of(addr);
        if prefix > bits {
            return Err(fail(if bits == 32 {
                "prefix longer than 32 bits"
            } else {
                "prefix longer than 128 bits"
            }));
        }
        if to_bits(addr) & !mask(prefix, bits) != 0 {
            return Err(fail("host bits set after the prefix"));
        }
        Ok(match addr {
            // The prefix covers the whole `::ffff:0:0/96` marker, so every address in the network
            // is an IPv4-mapped one: it is that IPv4 network.
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Cidr {
                    network: IpAddr::V4(v4),
                    prefix: prefix - 96,
                },
                None => Cidr {
                    network: addr,
                    prefix,
                },
            },
            _ => Cidr {
                network: addr,
                prefix,
            },
        })
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address matches as its IPv4 address.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::proxy_protocol::Cidr;
    /// let all_v6: Cidr = "::/0".parse()?;
    /// assert!(all_v6.contains("2001:db8::1".parse()?));
    /// assert!(!all_v6.contains("192.0.2.1".parse()?)); // families never mix
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if ip.is_ipv4() != self.network.is_ipv4() {
            return false;
        }
        let bits = bits_of(ip);
        to_bits(ip) & mask(self.prefix, bits) == to_bits(self.network)
    }
}

impl From<IpAddr> for Cidr {
    /// The single host `ip` (`/32` or `/128`); an IPv4-mapped address is its IPv4 host.
    fn from(ip: IpAddr) -> Cidr {
        let ip = ip.to_canonical();
        Cidr {
            network: ip,
            prefix: bits_of(ip),
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `addr/prefix`, or a bare address as a single host.
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let fail = |why| CidrError {
            input: s.to_owned(),
            why,
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| fail("not an IP address"))?;
        let Some(prefix) = prefix else {
            return Ok(Cidr::from(addr));
        };
        // u8::from_str accepts a leading '+'; a prefix is plain digits.
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail("the prefix length is not a number"));
        }
        let prefix: u8 = match prefix.parse::<u32>() {
            Ok(p) if p <= u32::from(bits_of(addr)) => p as u8,
            _ if addr.is_ipv4() => return Err(fail("prefix longer than 32 bits")),
            _ => return Err(fail("prefix longer than 128 bits")),
        };
        Cidr::new(addr, prefix).map_err(|e| fail(e.why))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn bits_of(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_bits()),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

/// The `prefix` high bits of a `bits`-wide address, set.
fn mask(prefix: u8, bits: u8) -> u128 {
    let all = if bits == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    let host_bits = u32::from(bits.saturating_sub(prefix));
    all.checked_shl(host_bits).map_or(0, |m| m & all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_match_exactly_their_range() {
        let n = net("192.168.4.0/22");
        assert!(n.contains(ip("192.168.4.0")));
        assert!(n.contains(ip("192.168.7.255")));
        assert!(!n.contains(ip("192.168.8.0")));
        assert!(!n.contains(ip("192.168.3.255")));
        let n6 = net("2001:db8::/32");
        assert!(n6.contains(ip("2001:db8:ffff::1")));
        assert!(!n6.contains(ip("2001:db9::")));
    }

    #[test]
    fn zero_prefix_matches_its_family_only() {
        assert!(net("0.0.0.0/0").contains(ip("255.255.255.255")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")));
        assert!(net("::/0").contains(ip("::1")));
        assert!(!net("::/0").contains(ip("127.0.0.1")));
    }

    #[test]
    fn bare_addresses_are_hosts() {
        assert_eq!(net("127.0.0.1"), net("127.0.0.1/32"));
        assert!(net("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!net("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(net("::1").contains(ip("::1")));
        assert!(net("127.0.0.1/32").contains(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn bad_input_is_rejected_with_a_reason() {
        for (input, why) in [
            ("", "not an IP address"),
            ("10.0.0.0/", "the prefix length is not a number"),
            ("10.0.0.0/+8", "the prefix length is not a number"),
            ("10.0.0.0/8/8", "the prefix length is not a number"),
            ("10.0.0.0/99999999999", "prefix longer than 32 bits"),
            ("10.0.0.0/33", "prefix longer than 32 bits"),
            ("::/129", "prefix longer than 128 bits"),
            ("10.0.0.1/8", "host bits set after the prefix"),
            ("fd00::1/8", "host bits set after the prefix"),
            ("localhost", "not an IP address"),
            (" 10.0.0.0/8", "not an IP address"),
        ] {
            let err = input.parse::<Cidr>().unwrap_err();
            assert_eq!(err.why, why, "{input:?}");
            assert!(err.to_string().contains(&format!("{input:?}")));
        }
    }

    /// `--trusted-proxy ::ffff:127.0.0.1` trusted no one: the network stayed IPv6 while peers are
    /// compared as IPv4. An IPv4-mapped address or network is the IPv4 one it maps.
    #[test]
    fn ipv4_mapped_networks_are_their_ipv4_networks() {
        assert_eq!(net("::ffff:127.0.0.1"), net("127.0.0.1"));
        assert_eq!(net("::ffff:127.0.0.1/128"), net("127.0.0.1/32"));
        assert_eq!(net("::ffff:10.0.0.0/104"), net("10.0.0.0/8"));
        assert_eq!(net("::ffff:0.0.0.0/96"), net("0.0.0.0/0"));
        assert_eq!(net("::FFFF:7F00:1"), net("127.0.0.1"));
        assert_eq!(Cidr::from(ip("::ffff:192.0.2.1")), net("192.0.2.1"));
        let mapped = Cidr::new(ip("::ffff:10.0.0.0"), 104).unwrap();
        assert_eq!(mapped, net("10.0.0.0/8"));
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        for peer in ["127.0.0.1", "::ffff:127.0.0.1"] {
            assert!(net("::ffff:127.0.0.1").contains(ip(peer)), "{peer}");
            assert!(net("127.0.0.1").contains(ip(peer)), "{peer}");
            assert!(net("::ffff:127.0.0.0/120").contains(ip(peer)), "{peer}");
            assert!(!net("::ffff:127.0.0.2").contains(ip(peer)), "{peer}");
        }
        // Mistakes are still mistakes, quoted as typed.
        for (input, why) in [
            ("::ffff:10.0.0.1/104", "host bits set after the prefix"),
            ("::ffff:10.0.0.0/129", "prefix longer than 128 bits"),
        ] {
            let err = input.parse::<Cidr>().unwrap_err();
            assert_eq!(err.why, why, "{input:?}");
            assert!(err.to_string().contains(input), "{err}");
        }
        // A shorter IPv6 network only overlaps the mapped range; it stays IPv6, and IPv4 peers
        // (mapped or not) are not in it: families never mix.
        assert!(!net("::fffe:0:0/95").contains(ip("127.0.0.1")));
        assert!(!net("::fffe:0:0/95").contains(ip("::ffff:127.0.0.1")));
        assert!(!net("::/0").contains(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "10.0.0.0/8",
            "0.0.0.0/0",
            "fd00::/8",
            "::1/128",
            "1.2.3.4/32",
        ] {
            assert_eq!(net(s).to_string(), s);
            assert_eq!(net(&net(s).to_string()), net(s));
        }
    }
}
