//! Where a browser says a request comes from. A browser sends a login it
//! keeps (the web page's Basic credentials) with any site's form posted
//! here, so a write is taken only from this registry's own pages or from
//! clients that are no browser (which say nothing of an origin).

use http::{HeaderMap, Request, header};

/// Whether a request comes from this site or from no browser: browsers say
/// where it came from in `Origin` (and `Sec-Fetch-Site`); a request that
/// says neither is not a browser's cross-site one. `ours`: the `Host` the
/// request came with and, behind a proxy that rewrites it, the public
/// URL's authority.
pub(crate) fn is_ours(headers: &HeaderMap, ours: &[Option<&str>]) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|site| site != "same-origin") {
        return false;
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| ours.contains(&Some(authority))),
        None => true,
    }
}

/// The host the client asked for: the Host header, or the URI's authority
/// (HTTP/2 names it in :authority, which hyper puts in the URI).
pub(crate) fn host<B>(req: &Request<B>) -> Option<&str> {
    let header = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    header.or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// `reg.example:8443` of `https://reg.example:8443/path`.
pub(crate) fn authority(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    rest.split('/').next()
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::props::config())]

        #[test]
        fn a_request_is_ours_only_from_our_own_origin(
            origin in "[a-z0-9.:-]{1,20}",
            ours in "[a-z0-9.:-]{1,20}",
            fetch_site in prop::option::of(prop_oneof![
                Just("same-origin"), Just("same-site"), Just("cross-site"), Just("none"),
            ]),
        ) {
            let mut headers = HeaderMap::new();
            headers.insert(header::ORIGIN, format!("http://{origin}").parse().unwrap());
            if let Some(site) = fetch_site {
                headers.insert("sec-fetch-site", site.parse().unwrap());
            }
            let expected = origin == ours && fetch_site.is_none_or(|s| s == "same-origin");
            prop_assert_eq!(is_ours(&headers, &[Some(&ours), None]), expected);
        }
    }
}
