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

/// Whether `ip` is link-local, where clouds serve instance metadata and
/// credentials (an IPv4-mapped IPv6 address as its IPv4 one).
pub(super) fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.is_link_local(),
            None => (v6.segments()[0] & 0xffc0) == 0xfe80,
        },
    }
}

/// The addresses a name resolved to that berth may connect to: none that
/// is link-local, nor unspecified (connecting to 0.0.0.0 reaches this host).
/// A name left with none is an error naming it.
fn usable(name: &str, found: impl Iterator<Item = SocketAddr>) -> io::Result<Vec<SocketAddr>> {
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for addr in found {
        if is_link_local(addr.ip()) || addr.ip().is_unspecified() {
            dropped.push(addr.ip());
        } else {
            kept.push(addr);
        }
    }
    if kept.is_empty() && !dropped.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{name} resolves only to {dropped:?}, link-local or unspecified addresses no upstream is fetched from"
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
        let fine = addrs(&["127.0.0.1", "::1", "192.168.1.2", "fec0::1", "169.253.1.1"]);
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
