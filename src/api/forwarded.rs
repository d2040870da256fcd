//! Who the client is when a proxy stands in front: the address the last
//! trusted proxy says it took the request from (`X-Forwarded-For`), so
//! that the failed-login limit and the access log count clients, not the
//! proxy. The header is believed only from a proxy named trusted: anyone
//! else could name any address in it.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// The client of a request that came from `peer`. From a trusted proxy,
/// the `X-Forwarded-For` entries are read from the right (each proxy
/// appends the address it was reached from), past any that are trusted
/// proxies themselves, to the first that is not: what a client wrote
/// before them is never reached. An entry that is no address stops the
/// walk at the proxy that passed it on.
pub fn client(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> SocketAddr {
    // An IPv4-mapped IPv6 address as its IPv4 one, as a dual-stack
    // listener reports IPv4 clients.
    let trusts = |ip: IpAddr| trusted.iter().any(|net| net.contains(&ip.to_canonical()));
    if !trusts(peer.ip()) {
        return peer;
    }
    let entries = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    let mut client = peer.ip();
    for entry in entries.iter().rev() {
        if !trusts(client) {
            break;
        }
        match address(entry.trim()) {
            Some(ip) => client = ip,
            None => break,
        }
    }
    SocketAddr::new(client, 0)
}

/// An entry's address: bare, or with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`).
fn address(entry: &str) -> Option<IpAddr> {
    entry
        .parse()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip: IpAddr| ip.to_canonical())
}

/// Parses a `--trusted-proxy` value: a network (`10.0.0.0/8`) or one
/// address.
pub fn parse_trusted(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or a network like 10.0.0.0/8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(peer: &str, forwarded: &[&str], trusted: &[&str]) -> IpAddr {
        let mut headers = HeaderMap::new();
        for f in forwarded {
            headers.append("x-forwarded-for", f.parse().unwrap());
        }
        let trusted: Vec<IpNet> = trusted.iter().map(|t| parse_trusted(t).unwrap()).collect();
        client(
            SocketAddr::new(peer.parse().unwrap(), 9),
            &headers,
            &trusted,
        )
        .ip()
    }

    #[test]
    fn the_client_is_the_last_address_no_trusted_proxy_holds() {
        let proxy = ["10.0.0.0/8"];
        assert_eq!(
            from("10.0.0.1", &["192.0.2.1"], &proxy).to_string(),
            "192.0.2.1"
        );
        assert_eq!(
            from("10.0.0.1", &["6.6.6.6, 192.0.2.1"], &proxy).to_string(),
            "192.0.2.1"
        );
        assert_eq!(
            from("10.0.0.1", &["192.0.2.1, 10.0.0.2"], &proxy).to_string(),
            "192.0.2.1",
            "through two proxies"
        );
        assert_eq!(
            from("10.0.0.1", &["6.6.6.6", "192.0.2.1"], &proxy).to_string(),
            "192.0.2.1",
            "headers in order"
        );
        assert_eq!(
            from("10.0.0.1", &["[2001:db8::1]:4711"], &proxy).to_string(),
            "2001:db8::1"
        );
        assert_eq!(
            from("10.0.0.1", &["192.0.2.1:4711"], &proxy).to_string(),
            "192.0.2.1"
        );
        assert_eq!(
            from("::ffff:10.0.0.1", &["192.0.2.1"], &proxy).to_string(),
            "192.0.2.1"
        );
        assert_eq!(
            from("10.0.0.1", &["192.0.2.1, unknown"], &proxy).to_string(),
            "10.0.0.1",
            "an entry that is no address"
        );
        assert_eq!(from("10.0.0.1", &[], &proxy).to_string(), "10.0.0.1");
        assert_eq!(
            from("192.0.2.7", &["6.6.6.6"], &proxy).to_string(),
            "192.0.2.7",
            "not from a trusted proxy"
        );
        assert_eq!(from("10.0.0.1", &["6.6.6.6"], &[]).to_string(), "10.0.0.1");
        assert_eq!(
            parse_trusted("10.1.2.3").unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert!(parse_trusted("10.0.0.0/33").is_err());
        assert!(parse_trusted("proxy.example").is_err());
    }
}
