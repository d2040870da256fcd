//! Names resolved for the upstream client, without the addresses no
//! registry lives at. A redirect's host is checked as written (see
//! `may_redirect`); a name is only an address once resolved, so a hostile
//! upstream could otherwise send berth to a name of its own that resolves
//! to the cloud's instance metadata service.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

/// Where clouds serve instance metadata and credentials outside the
/// link-local ranges: AWS over IPv6, and Alibaba Cloud.
const METADATA: [IpAddr; 2] = [
    IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V4(std::net::Ipv4Addr::new(100, 100, 100, 200)),
];

/// Whether `ip` may serve a cloud's instance metadata: link-local (where
/// most clouds serve it) or one of [`METADATA`] (an IPv4-mapped IPv6
/// address as its IPv4 one).
pub(super) fn is_metadata(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    METADATA.contains(&ip)
        || match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_unicast_link_local(),
        }
}

/// The addresses a name resolved to that berth may connect to: none that
/// may serve instance metadata, nor unspecified (connecting to 0.0.0.0
/// reaches this host).
/// A name left with none is an error naming it.
fn usable(name: &str, found: impl Iterator<Item = SocketAddr>) -> io::Result<Vec<SocketAddr>> {
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for addr in found {
        if is_metadata(addr.ip()) || addr.ip().is_unspecified() {
            dropped.push(addr.ip());
        } else {
            kept.push(addr);
        }
    }
    if kept.is_empty() && !dropped.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{name} resolves only to {dropped:?}, where clouds serve instance metadata or which is unspecified: no upstream is fetched from there"
            ),
        ));
    }
    Ok(kept)
}

/// The system's resolver (getaddrinfo on a blocking thread, as hyper's
/// own), filtered by [`usable`].
#[derive(Clone, Default)]
pub(super) struct Resolver;

type Resolving = Pin<Box<dyn Future<Output = io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            Ok(usable(name.as_str(), found)?.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(ips: &[&str]) -> Vec<SocketAddr> {
        ips.iter()
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), 0))
            .collect()
    }

    #[test]
    fn link_local_and_unspecified_addresses_are_left_out() {
        for bad in [
            "169.254.169.254",
            "169.254.170.2",
            "fe80::1",
            "febf::1",
            "::ffff:169.254.169.254",
            "fd00:ec2::254",
            "100.100.100.200",
            "0.0.0.0",
            "::",
        ] {
            let err = usable("metadata.example", addrs(&[bad]).into_iter()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{bad}");
            assert!(err.to_string().contains("metadata.example"), "{err}");
        }
        let mixed = addrs(&["169.254.169.254", "10.0.0.5", "fe80::2", "2001:db8::1"]);
        assert_eq!(
            usable("both.example", mixed.into_iter()).unwrap(),
            addrs(&["10.0.0.5", "2001:db8::1"])
        );
        let fine = addrs(&[
            "127.0.0.1",
            "::1",
            "192.168.1.2",
            "fec0::1",
            "169.253.1.1",
            "fd00:ec2::253",
            "100.100.100.201",
        ]);
        assert_eq!(
            usable("ok.example", fine.clone().into_iter()).unwrap(),
            fine
        );
    }

    #[tokio::test]
    async fn localhost_resolves_through_it() {
        let mut resolver = Resolver;
        let found: Vec<_> =
            tower_service::Service::call(&mut resolver, "localhost".parse().unwrap())
                .await
                .unwrap()
                .collect();
        assert!(found.iter().any(|a| a.ip().is_loopback()), "{found:?}");
    }
}
