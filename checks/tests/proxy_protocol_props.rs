//! Property tests for `socketserver::proxy_protocol`.

use std::io::{self, BufRead, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use proptest::prelude::*;
use socketserver::proxy_protocol::{
    Cidr, Command, Parsed, ProxyError, ProxyHeader, V2_SIGNATURE, Version, parse, parse_with_limit,
    read_header,
};

fn addr_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
    let v4 = (any::<[u8; 4]>(), any::<u16>())
        .prop_map(|(ip, port)| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)));
    let v6 = (any::<[u8; 16]>(), any::<u16>())
        .prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0)));
    prop_oneof![(v4.clone(), v4), (v6.clone(), v6)]
}

fn tlvs() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    prop::collection::vec(
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..40)),
        0..4,
    )
}

/// Headers in the canonical form the parser produces for `version`.
fn header(version: Version) -> impl Strategy<Value = ProxyHeader> {
    let proxied = (addr_pair(), tlvs()).prop_map(move |((s, d), tlvs)| ProxyHeader {
        version,
        command: Command::Proxy,
        source: Some(s),
        destination: Some(d),
        tlvs: if version == Version::V2 {
            tlvs
        } else {
            Vec::new()
        },
    });
    let unknown_command = match version {
        Version::V1 => Command::Proxy,
        Version::V2 => Command::Local,
    };
    let no_addrs = Just(ProxyHeader {
        version,
        command: unknown_command,
        source: None,
        destination: None,
        tlvs: Vec::new(),
    });
    prop_oneof![4 => proxied, 1 => no_addrs]
}

fn encoded() -> impl Strategy<Value = (ProxyHeader, Vec<u8>)> {
    prop_oneof![
        header(Version::V1).prop_map(|h| {
            let bytes = h.to_v1().into_bytes();
            (h, bytes)
        }),
        header(Version::V2).prop_map(|h| {
            let bytes = h.to_v2();
            (h, bytes)
        }),
    ]
}

/// A `BufRead` that hands out data in caller-chosen short chunks.
struct ChunkReader {
    data: Vec<u8>,
    pos: usize,
    chunks: Vec<usize>,
    next_chunk: usize,
    end: Option<usize>,
}

impl ChunkReader {
    fn new(data: Vec<u8>, chunks: Vec<usize>) -> Self {
        ChunkReader {
            data,
            pos: 0,
            chunks,
            next_chunk: 0,
            end: None,
        }
    }

    fn rest(&self) -> &[u8] {
        &self.data[self.pos..]
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let end = match self.end {
            Some(end) => end,
            None => {
                let size = self.chunks.get(self.next_chunk).copied().unwrap_or(7);
                self.next_chunk += 1;
                let end = (self.pos + size).min(self.data.len());
                self.end = Some(end);
                end
            }
        };
        Ok(&self.data[self.pos..end])
    }

    fn consume(&mut self, amt: usize) {
        let end = self.end.unwrap_or(self.pos);
        assert!(
            self.pos + amt <= end,
            "consumed more than fill_buf returned"
        );
        self.pos += amt;
        if self.pos >= end {
            self.end = None;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse(&bytes);
        let _ = parse_with_limit(&bytes, 10);
        let mut r: &[u8] = &bytes;
        let _ = read_header(&mut r, 1000);
    }

    #[test]
    fn mutated_headers_never_panic(
        (_, mut bytes) in encoded(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let cut = cut.index(bytes.len() + 1);
        if let Ok(Parsed::Complete { len, .. }) = parse(&bytes[..cut]) {
            prop_assert!(len <= cut);
        }
    }

    #[test]
    fn round_trip_with_trailing_data(
        (h, bytes) in encoded(),
        trailing in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut data = bytes.clone();
        data.extend_from_slice(&trailing);
        prop_assert_eq!(
            parse(&data),
            Ok(Parsed::Complete { header: h, len: bytes.len() })
        );
    }

    #[test]
    fn strict_prefixes_are_incomplete((_, bytes) in encoded()) {
        for n in 0..bytes.len() {
            prop_assert_eq!(parse(&bytes[..n]), Ok(Parsed::Incomplete), "prefix length {}", n);
        }
    }

    #[test]
    fn v2_limit_is_enforced((h, bytes) in header(Version::V2).prop_map(|h| { let b = h.to_v2(); (h, b) })) {
        let body = bytes.len() - 16;
        prop_assert_eq!(
            parse_with_limit(&bytes, body),
            Ok(Parsed::Complete { header: h, len: bytes.len() })
        );
        if body > 0 {
            prop_assert_eq!(parse_with_limit(&bytes, body - 1), Err(ProxyError::TooLong));
        }
    }

    #[test]
    fn read_header_consumes_exactly_the_header(
        (h, bytes) in encoded(),
        trailing in prop::collection::vec(any::<u8>(), 0..64),
        chunks in prop::collection::vec(1usize..20, 0..64),
    ) {
        let mut data = bytes;
        data.extend_from_slice(&trailing);
        let mut reader = ChunkReader::new(data, chunks);
        let got = read_header(&mut reader, 65535).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(got, h);
        prop_assert_eq!(reader.rest(), &trailing[..]);
    }

    #[test]
    fn read_header_truncated_is_eof(
        (_, bytes) in encoded(),
        cut in any::<prop::sample::Index>(),
        chunks in prop::collection::vec(1usize..20, 0..64),
    ) {
        let cut = cut.index(bytes.len());
        let mut reader = ChunkReader::new(bytes[..cut].to_vec(), chunks);
        let err = read_header(&mut reader, 65535).err().map(|e| e.kind());
        prop_assert_eq!(err, Some(io::ErrorKind::UnexpectedEof));
    }

    #[test]
    fn non_signature_first_byte_is_rejected_immediately(first in any::<u8>()) {
        prop_assume!(first != b'P' && first != V2_SIGNATURE[0]);
        prop_assert_eq!(parse(&[first]), Err(ProxyError::NotProxy));
    }
}

proptest! {
    /// Any IPv4 network written IPv4-mapped is that network: equal, and containing the same
    /// peers, whether they come as IPv4 or IPv4-mapped.
    #[test]
    fn mapped_and_plain_ipv4_networks_agree(
        net_bits in any::<u32>(),
        prefix in 0u8..=32,
        peer in any::<u32>(),
    ) {
        let network = Ipv4Addr::from_bits(net_bits & (u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)));
        let plain = Cidr::new(network.into(), prefix).unwrap();
        let mapped = Cidr::new(network.to_ipv6_mapped().into(), 96 + prefix).unwrap();
        prop_assert_eq!(plain, mapped);
        let parsed: Cidr = format!("{}/{}", network.to_ipv6_mapped(), 96 + prefix).parse().unwrap();
        prop_assert_eq!(parsed, plain);
        let peer = Ipv4Addr::from_bits(peer);
        let inside = prefix == 0 || (peer.to_bits() ^ network.to_bits()) >> (32 - prefix) == 0;
        for candidate in [IpAddr::V4(peer), IpAddr::V6(peer.to_ipv6_mapped())] {
            prop_assert_eq!(plain.contains(candidate), inside);
            prop_assert_eq!(mapped.contains(candidate), inside);
        }
    }
}
