//! Who the client is behind a reverse proxy: `TRUSTED_PROXIES` lists the
//! addresses whose `X-Forwarded-For` the server believes.
//!
//! Behind a load balancer or an ingress every connection comes from the
//! proxy, so per-address limits (login failures, anonymous requests, new
//! streams) would throttle every client together and sessions would record
//! the proxy's address. The proxy appends the address it saw to
//! `X-Forwarded-For`; anyone can write the rest of that header. So the
//! client is found from the right: starting at the TCP peer, each address
//! that is a trusted proxy hands over to the one it forwarded for, and the
//! first that is not a trusted proxy is the client. Unset, no proxy is
//! trusted and the client is the TCP peer, whatever the header says.

use std::net::IpAddr;

use http::HeaderMap;

/// The forwarding header read (the de facto standard of nginx, Envoy,
/// HAProxy and cloud load balancers).
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The most hops read from `X-Forwarded-For`, right to left: a chain of
/// proxies is short, a header can be long.
const MAX_HOPS: usize = 32;

/// Networks whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<Network>,
}

/// An address and a prefix length: one address when the prefix is the whole
/// width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl TrustedProxies {
    /// Parses a comma-separated list of IP addresses, CIDR networks
    /// (`10.0.0.0/8`, `fd00::/8`), `loopback` (127.0.0.0/8 and ::1) and
    /// `private` (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7: the
    /// usual addresses of a cluster's pods and load balancers). Empty: none.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut networks = Vec::new();
        for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item {
                "loopback" => networks.extend(["127.0.0.0/8", "::1/128"].map(network)),
                "private" => networks.extend(
                    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"].map(network),
                ),
                _ => networks.push(parse_network(item)?),
            }
        }
        Ok(Self { networks })
    }

    /// Whether any proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.iter().any(|network| network.contains(ip))
    }

    /// The client of a request that came from `peer`: the right-most
    /// address of `X-Forwarded-For` not vouched for by a trusted proxy.
    /// An entry that is not an address ends the walk at the last trusted
    /// hop, since no trusted proxy wrote it.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        self.forwarded_client(peer, headers)
            .unwrap_or_else(|| peer.to_canonical())
    }

    /// [`TrustedProxies::client`] for a request from a trusted proxy; None
    /// when `peer` is not one (the client is then the peer itself).
    pub fn forwarded_client(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        let mut client = peer.to_canonical();
        if !self.contains(client) {
            return None;
        }
        let hops = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .rev()
            .flat_map(|value| {
                value
                    .to_str()
                    .map_or(Vec::new(), |list| list.rsplit(',').collect())
            })
            .take(MAX_HOPS);
        for hop in hops {
            let Some(ip) = parse_hop(hop.trim()) else {
                break;
            };
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        Some(client)
    }
}

/// `a.b.c.d`, `a.b.c.d:port`, an IPv6 address, or `[v6]:port` (some
/// proxies add the port).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    hop.parse::<std::net::SocketAddr>()
        .ok()
        .map(|addr| addr.ip().to_canonical())
}

fn parse_network(item: &str) -> Result<Network, String> {
    let (addr, prefix) = match item.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (item, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| {
        format!("'{item}' is not an IP address, a CIDR network, 'loopback' or 'private'")
    })?;
    let addr = addr.to_canonical();
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => width,
        Some(prefix) => prefix
            .parse::<u8>()
            .ok()
            .filter(|prefix| *prefix <= width)
            .ok_or_else(|| format!("'{item}': the prefix length must be 0 to {width}"))?,
    };
    Ok(Network { addr, prefix })
}

/// A network of the built-in lists (valid by construction).
fn network(item: &str) -> Network {
    parse_network(item).expect("built-in networks parse")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(value: &str) -> IpAddr {
        value.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(X_FORWARDED_FOR, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn lists_take_addresses_networks_and_names() {
        let trusted =
            TrustedProxies::parse(" 10.1.2.3, 192.168.0.0/16 ,fd00::/8,loopback").unwrap();
        assert!(trusted.contains(ip("10.1.2.3")));
        assert!(!trusted.contains(ip("10.1.2.4")));
        assert!(trusted.contains(ip("192.168.200.1")));
        assert!(!trusted.contains(ip("192.169.0.1")));
        assert!(trusted.contains(ip("fd12::1")));
        assert!(!trusted.contains(ip("fe80::1")));
        assert!(trusted.contains(ip("127.9.9.9")));
        assert!(trusted.contains(ip("::1")));
        // An IPv4 peer on a dual-stack socket.
        assert!(trusted.contains(ip("::ffff:10.1.2.3")));

        let private = TrustedProxies::parse("private").unwrap();
        for inside in ["10.0.0.1", "172.31.255.255", "192.168.1.1", "fc00::1"] {
            assert!(private.contains(ip(inside)), "{inside}");
        }
        for outside in ["172.32.0.1", "8.8.8.8", "127.0.0.1", "2001:db8::1"] {
            assert!(!private.contains(ip(outside)), "{outside}");
        }

        assert!(TrustedProxies::parse("").unwrap().is_empty());
        assert!(
            TrustedProxies::parse("0.0.0.0/0")
                .unwrap()
                .contains(ip("203.0.113.9"))
        );
    }

    #[test]
    fn bad_lists_say_what_is_wrong() {
        let error = TrustedProxies::parse("10.0.0.0/8, proxy.internal").unwrap_err();
        assert!(
            error.contains("'proxy.internal' is not an IP address"),
            "{error}"
        );
        let error = TrustedProxies::parse("10.0.0.0/33").unwrap_err();
        assert!(error.contains("prefix length must be 0 to 32"), "{error}");
        let error = TrustedProxies::parse("::/129").unwrap_err();
        assert!(error.contains("prefix length must be 0 to 128"), "{error}");
        assert!(TrustedProxies::parse("10.0.0.0/x").is_err());
    }

    #[test]
    fn without_trusted_proxies_the_client_is_the_peer() {
        let none = TrustedProxies::default();
        let headers = forwarded(&["203.0.113.9"]);
        assert_eq!(none.client(ip("10.0.0.5"), &headers), ip("10.0.0.5"));
    }

    #[test]
    fn an_untrusted_peer_cannot_claim_another_address() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let headers = forwarded(&["10.0.0.7, 203.0.113.9"]);
        assert_eq!(
            trusted.client(ip("198.51.100.1"), &headers),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        // The client wrote a fake first entry; the ingress (10.0.0.2)
        // appended the address it saw, then the sidecar (10.0.0.9)
        // appended the ingress.
        let headers = forwarded(&["1.2.3.4, 203.0.113.9, 10.0.0.2"]);
        assert_eq!(trusted.client(ip("10.0.0.9"), &headers), ip("203.0.113.9"));
        // The same chain over several header lines.
        let headers = forwarded(&["1.2.3.4", "203.0.113.9", "10.0.0.2"]);
        assert_eq!(trusted.client(ip("10.0.0.9"), &headers), ip("203.0.113.9"));
        // Ports and IPv6.
        let headers = forwarded(&["[2001:db8::7]:443, 10.0.0.2:5555"]);
        assert_eq!(trusted.client(ip("10.0.0.9"), &headers), ip("2001:db8::7"));
        let headers = forwarded(&["203.0.113.9:61000"]);
        assert_eq!(trusted.client(ip("10.0.0.9"), &headers), ip("203.0.113.9"));
    }

    #[test]
    fn a_chain_of_trusted_hops_ends_at_its_last_address() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        // Every hop is a proxy: the left-most one is as far as anyone knows.
        let headers = forwarded(&["10.0.0.1, 10.0.0.2"]);
        assert_eq!(trusted.client(ip("10.0.0.9"), &headers), ip("10.0.0.1"));
        // No header: the proxy itself.
        assert_eq!(
            trusted.client(ip("10.0.0.9"), &HeaderMap::new()),
            ip("10.0.0.9")
        );
    }

    #[test]
    fn garbage_ends_the_walk_at_the_last_trusted_hop() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let headers = forwarded(&["203.0.113.9, unknown, 10.0.0.2"]);
        assert_eq!(trusted.client(ip("10.0.0.9"), &headers), ip("10.0.0.2"));
        let headers = forwarded(&["203.0.113.9, "]);
        assert_eq!(trusted.client(ip("10.0.0.9"), &headers), ip("10.0.0.9"));
    }

    #[test]
    fn only_so_many_hops_are_read() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let mut chain = vec!["203.0.113.9".to_owned()];
        chain.extend((0..100).map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1)));
        let headers = forwarded(&[&chain.join(", ")]);
        // The walk stops inside the trusted chain, never reaching the client
        // 100 hops away, and answers an address it did read.
        let client = trusted.client(ip("10.0.0.9"), &headers);
        assert!(trusted.contains(client));
    }
}
