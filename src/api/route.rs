//! Maps a request path to an endpoint. Names, digests and references are
//! validated here, so handlers only ever see well-formed values.

use super::error::ApiError;
use crate::oci::name::BadReference;
use crate::oci::{Digest, Reference, RepoName};

#[derive(Debug, PartialEq)]
pub enum Route {
    Base,
    /// The token endpoint of the Docker token flow (with auth on).
    Token,
    /// Prometheus metrics, and the liveness and readiness probes.
    Metrics,
    Health,
    Ready,
    Catalog,
    Tags(RepoName),
    Manifest(RepoName, Reference),
    /// A manifest path whose reference is malformed. A malformed tag is
    /// simply unknown to reads, as the conformance suite expects of GET.
    BadManifestReference(RepoName, BadReference, String),
    Blob(RepoName, Digest),
    Uploads(RepoName),
    Upload(RepoName, String),
    Referrers(RepoName, Digest),
}

impl Route {
    /// `namespace` is the request's `?ns=`, the registry host a containerd
    /// mirror request names: every repository name is taken in it.
    pub fn parse(path: &str, namespace: Option<&str>) -> Result<Route, ApiError> {
        match path {
            "/token" => return Ok(Route::Token),
            "/metrics" => return Ok(Route::Metrics),
            "/healthz" => return Ok(Route::Health),
            "/readyz" => return Ok(Route::Ready),
            _ => {}
        }
        let rest = match path.strip_prefix("/v2") {
            Some("" | "/") => return Ok(Route::Base),
            Some(rest) => rest.strip_prefix('/').ok_or_else(ApiError::not_found)?,
            None => return Err(ApiError::not_found()),
        };
        if rest == "_catalog" {
            return Ok(Route::Catalog);
        }
        let segs: Vec<&str> = rest.split(slash).collect();
        let n = segs.len();
        // The name is everything before the endpoint's fixed segments, which
        // are matched from the end because a name may contain slashes.
        let name = |fixed: usize| -> Result<RepoName, ApiError> {
            // The segments before the fixed ones, with the slashes between.
            let len = segs[..n - fixed].iter().map(|s| s.len() + 1).sum::<usize>() - 1;
            let name = &rest[..len];
            let path = RepoName::parse(name).ok_or_else(|| ApiError::name_invalid(name))?;
            match namespace {
                None => Ok(path),
                Some(ns) => RepoName::in_namespace(&ns.to_ascii_lowercase(), &path)
                    .ok_or_else(|| ApiError::name_invalid(&format!("{ns}/{name}"))),
            }
        };
        let digest = |s: &str| {
            Digest::parse(s)
                .ok_or_else(|| ApiError::digest_invalid(format!("invalid digest {s:?}")))
        };
        match segs.as_slice() {
            [.., _, "blobs", "uploads", id] => {
                let name = name(3)?;
                if id.is_empty() {
                    Ok(Route::Uploads(name))
                } else {
                    Ok(Route::Upload(name, (*id).to_owned()))
                }
            }
            [.., _, "blobs", "uploads"] => Ok(Route::Uploads(name(2)?)),
            [.., _, "blobs", d] => Ok(Route::Blob(name(2)?, digest(d)?)),
            [.., _, "tags", "list"] => Ok(Route::Tags(name(2)?)),
            [.., _, "referrers", d] => Ok(Route::Referrers(name(2)?, digest(d)?)),
            [.., _, "manifests", r] => {
                let name = name(2)?;
                match Reference::parse(r) {
                    Ok(reference) => Ok(Route::Manifest(name, reference)),
                    Err(bad) => Ok(Route::BadManifestReference(name, bad, (*r).to_owned())),
                }
            }
            _ => Err(ApiError::not_found()),
        }
    }
}

/// A path's separator, as a function: a `char` pattern searches with
/// memchr, whose setup cost ~120 instructions a segment on paths this
/// short, a quarter of a manifest GET's routing (callgrind).
fn slash(c: char) -> bool {
    c == '/'
}

/// The class of route a path is for, as a metrics label: one of a fixed
/// few, whatever the path holds.
pub fn class(path: &str) -> &'static str {
    let Some(rest) = path.strip_prefix("/v2") else {
        return match path {
            "/token" => "token",
            "/metrics" => "metrics",
            "/healthz" | "/readyz" => "probe",
            _ if crate::ui::handles(path) => "ui",
            _ => "other",
        };
    };
    if rest.is_empty() || rest == "/" {
        return "base";
    }
    if rest == "/_catalog" {
        return "catalog";
    }
    // The endpoint's fixed segments come last, as the router reads them
    // (a repository may be named `blobs`).
    let mut segs = rest.rsplit(slash);
    match (segs.next(), segs.next(), segs.next()) {
        (_, Some("uploads"), Some("blobs")) | (Some("uploads"), Some("blobs"), _) => "upload",
        (_, Some("blobs"), _) => "blob",
        (_, Some("manifests"), _) => "manifest",
        (Some("list"), Some("tags"), _) => "tags",
        (_, Some("referrers"), _) => "referrers",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(path: &str) -> &'static str {
        Route::parse(path, None).unwrap_err().code
    }

    #[test]
    fn classes_come_from_the_fixed_segments_at_the_end() {
        for (path, want) in [
            ("/v2/", "base"),
            ("/v2/_catalog", "catalog"),
            ("/v2/a/b/blobs/uploads/", "upload"),
            ("/v2/a/blobs/uploads", "upload"),
            ("/v2/a/blobs/uploads/0f3c-id", "upload"),
            ("/v2/a/blobs/sha256:00", "blob"),
            ("/v2/blobs/manifests/v1", "manifest"),
            ("/v2/manifests/blobs/sha256:00", "blob"),
            ("/v2/a/tags/list", "tags"),
            ("/v2/a/referrers/sha256:00", "referrers"),
            ("/v2/a/nothing", "other"),
            ("/metrics", "metrics"),
            ("/elsewhere", "other"),
        ] {
            assert_eq!(class(path), want, "{path}");
        }
    }

    #[test]
    fn routes_names_with_slashes() {
        let d = format!("sha256:{}", "0".repeat(64));
        assert_eq!(Route::parse("/v2/", None).unwrap(), Route::Base);
        assert!(
            matches!(Route::parse("/v2/a/b/c/manifests/v1", None), Ok(Route::Manifest(n, _)) if n.as_str() == "a/b/c")
        );
        assert!(matches!(
            Route::parse(&format!("/v2/a/blobs/{d}"), None),
            Ok(Route::Blob(..))
        ));
        assert!(
            matches!(Route::parse("/v2/a/b/blobs/uploads/", None), Ok(Route::Uploads(n)) if n.as_str() == "a/b")
        );
        assert!(
            matches!(Route::parse("/v2/a/blobs/uploads/xyz", None), Ok(Route::Upload(_, id)) if id == "xyz")
        );
        assert!(
            matches!(Route::parse("/v2/tags/tags/list", None), Ok(Route::Tags(n)) if n.as_str() == "tags")
        );
        assert!(matches!(
            Route::parse(&format!("/v2/x/referrers/{d}"), None),
            Ok(Route::Referrers(..))
        ));
    }

    #[test]
    fn rejects_bad_parts_with_the_right_code() {
        assert_eq!(code("/v2/A/manifests/v1"), "NAME_INVALID");
        assert_eq!(code("/v2/../manifests/v1"), "NAME_INVALID");
        assert_eq!(code("/v2/a//b/manifests/v1"), "NAME_INVALID");
        assert!(matches!(
            Route::parse("/v2/a/manifests/-v1", None),
            Ok(Route::BadManifestReference(_, BadReference::Tag, _))
        ));
        assert_eq!(code("/v2/a/blobs/sha256:12"), "DIGEST_INVALID");
        assert_eq!(code("/v2/manifests/v1"), "NOT_FOUND");
        assert_eq!(code("/v3/"), "NOT_FOUND");
        assert_eq!(code("/v2/a/whatever"), "NOT_FOUND");
    }

    #[test]
    fn a_namespace_prefixes_every_name() {
        let name = |path: &str, ns: &str| match Route::parse(path, Some(ns)) {
            Ok(Route::Manifest(n, _)) => n.as_str().to_owned(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            name("/v2/alpine/manifests/3", "docker.io"),
            "docker.io/library/alpine"
        );
        assert_eq!(
            name("/v2/team/app/manifests/1", "Quay.IO"),
            "quay.io/team/app"
        );
        assert_eq!(
            name("/v2/a/manifests/1", "127.0.0.1:5001"),
            "127.0.0.1:5001/a"
        );
        let err = Route::parse("/v2/a/manifests/1", Some("bad host")).unwrap_err();
        assert_eq!(err.code, "NAME_INVALID");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// Paths made of registry-ish segments, so the router's own cases come
    /// up far more often than in arbitrary text.
    fn path_like() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            Just("blobs".to_owned()),
            Just("uploads".to_owned()),
            Just("manifests".to_owned()),
            Just("tags".to_owned()),
            Just("list".to_owned()),
            Just("referrers".to_owned()),
            Just("_catalog".to_owned()),
            Just(String::new()),
            "sha256:[0-9a-f]{0,66}",
            "[a-zA-Z0-9._:%-]{1,12}",
            "\\PC{1,6}",
        ];
        (
            prop::collection::vec(segment, 0..9),
            prop_oneof![Just("/v2/"), Just("/v2"), Just("/"), Just("")],
        )
            .prop_map(|(segs, prefix)| format!("{prefix}{}", segs.join("/")))
    }

    proptest! {
        #![proptest_config(crate::props::config())]

        #[test]
        fn any_path_gets_a_route_or_a_client_error(
            path in prop_oneof![any::<String>(), path_like()],
            namespace in proptest::option::of(prop_oneof![any::<String>(), "[a-z0-9.:-]{1,20}"]),
        ) {
            let _ = class(&path);
            if let Err(e) = Route::parse(&path, namespace.as_deref()) {
                prop_assert!(e.status.is_client_error(), "{:?} for {:?}", e.status, path);
            }
        }

        #[test]
        fn a_blob_path_names_its_repository_and_digest(name in crate::props::repo_name(), hex in "[0-9a-f]{64}") {
            let digest = format!("sha256:{hex}");
            let path = format!("/v2/{name}/blobs/{digest}");
            let want = Route::Blob(RepoName::parse(&name).unwrap(), Digest::parse(&digest).unwrap());
            prop_assert_eq!(Route::parse(&path, None).ok(), Some(want));
            prop_assert_eq!(class(&path), "blob");
        }

        #[test]
        fn a_manifest_path_names_its_repository_and_tag(
            name in crate::props::repo_name(),
            tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}",
        ) {
            let path = format!("/v2/{name}/manifests/{tag}");
            let want = Route::Manifest(
                RepoName::parse(&name).unwrap(),
                Reference::parse(&tag).unwrap(),
            );
            prop_assert_eq!(Route::parse(&path, None).ok(), Some(want));
            prop_assert_eq!(class(&path), "manifest");
        }
    }
}
