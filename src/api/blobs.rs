//! Blob reads and deletes.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};

use super::body::{self, ResBody};
use super::error::ApiError;
use super::{Api, Handled, header_str};
use crate::conn::Activity;
use crate::mirror::{self, BlobAnswer};
use crate::oci::{Digest, RepoName};
use crate::store::Blob;

pub async fn get<B>(api: &Api, req: &Request<B>, name: RepoName, digest: Digest) -> Handled {
    let response = Response::builder()
        .header(super::DOCKER_CONTENT_DIGEST, digest.as_str())
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{digest}\""));
    // The connection's watchdog cuts the download if the client stops
    // taking it.
    let transfer = req
        .extensions()
        .get::<Arc<Activity>>()
        .map(|activity| activity.transfer());
    let head = req.method() == Method::HEAD;
    if let Some(mirror) = api.mirrors.for_repo(&name)
        && head
    {
        match mirror.blob_head(&name, &digest).await {
            Ok(Some(size)) => {
                return Ok(response
                    .header(header::CONTENT_LENGTH, size)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(body::empty())
                    .expect("valid response"));
            }
            Ok(None) => {}
            // A push asks this before each upload, and must not fail because
            // the upstream does; a HEAD has no body to say why anyway.
            Err(mirror::Error::Upstream(e)) => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "BLOB_UNKNOWN",
                    e.to_string(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    } else if let Some(mirror) = api.mirrors.for_repo(&name) {
        match mirror.blob(&name, &digest).await {
            Ok(BlobAnswer::Streaming { size, body }) => {
                // Its first pull: the whole blob, whatever Range asked.
                let mut response = response
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/octet-stream");
                if let Some(size) = size {
                    response = response.header(header::CONTENT_LENGTH, size);
                }
                return Ok(response
                    .body(body::fetched(body, transfer))
                    .expect("valid response"));
            }
            Ok(BlobAnswer::Stored) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if head {
        let size = api.store(move |s| s.blob_size(&name, &digest)).await?;
        return Ok(response
            .header(header::CONTENT_LENGTH, size)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body::empty())
            .expect("valid response"));
    }
    let blob = api.store(move |s| s.open_blob(&name, &digest)).await?;
    let size = blob.size();
    let (status, start, len, response) =
        match header_str(req, header::RANGE).map(|r| parse_range(r, size)) {
            None | Some(RangeSpec::Ignored) => (StatusCode::OK, 0, size, response),
            Some(RangeSpec::Unsatisfiable) => {
                return Err(ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "RANGE_INVALID",
                    format!("range not satisfiable: the blob has {size} bytes"),
                )
                .with_header("content-range", &format!("bytes */{size}")));
            }
            Some(RangeSpec::Bytes(start, end)) => (
                StatusCode::PARTIAL_CONTENT,
                start,
                end - start + 1,
                response.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")),
            ),
        };
    let body: ResBody = match blob {
        Blob::File(blob) => body::file_range(blob.file, start, len, transfer),
        Blob::Object(blob) => {
            let stream = api.blocking(move || blob.range(start, len)).await?;
            body::object(stream, transfer)
        }
    };
    Ok(response
        .status(status)
        .header(header::CONTENT_LENGTH, len)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .expect("valid response"))
}

pub async fn delete(api: &Api, name: RepoName, digest: Digest) -> Handled {
    api.store(move |s| s.delete_blob(&name, &digest)).await?;
    Ok(Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(header::CONTENT_LENGTH, 0)
        .body(body::empty())
        .expect("valid response"))
}

#[derive(Debug, PartialEq)]
enum RangeSpec {
    /// Inclusive byte range within the blob.
    Bytes(u64, u64),
    Unsatisfiable,
    /// Not a single byte range; as HTTP allows, the whole blob is sent.
    Ignored,
}

fn parse_range(header: &str, size: u64) -> RangeSpec {
    let Some((first, last)) = header
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
    else {
        return RangeSpec::Ignored;
    };
    if last.contains(',') {
        return RangeSpec::Ignored;
    }
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(a), Ok(b)) if a <= b => Some((a, b.min(size.saturating_sub(1)))),
        (Ok(a), Err(_)) if last.is_empty() => Some((a, size.saturating_sub(1))),
        (Err(_), Ok(n)) if first.is_empty() => {
            if n == 0 {
                return RangeSpec::Unsatisfiable;
            }
            Some((size.saturating_sub(n), size.saturating_sub(1)))
        }
        _ => None,
    };
    match parsed {
        None => RangeSpec::Ignored,
        Some((a, _)) if a >= size => RangeSpec::Unsatisfiable,
        Some((a, b)) => RangeSpec::Bytes(a, b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeSpec::Bytes(0, 9));
        assert_eq!(parse_range("bytes=90-200", 100), RangeSpec::Bytes(90, 99));
        assert_eq!(parse_range("bytes=10-", 100), RangeSpec::Bytes(10, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeSpec::Bytes(90, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), RangeSpec::Ignored);
        assert_eq!(parse_range("bytes=0-1,3-4", 100), RangeSpec::Ignored);
        assert_eq!(parse_range("items=0-1", 100), RangeSpec::Ignored);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn range_like() -> impl Strategy<Value = String> {
        let number = prop_oneof![
            Just(String::new()),
            any::<u64>().prop_map(|n| n.to_string()),
            (0u64..2000).prop_map(|n| n.to_string()),
            "[0-9 ,-]{1,8}",
        ];
        (
            prop_oneof![Just("bytes="), Just(" bytes= "), Just("items="), Just("")],
            number.clone(),
            prop_oneof![Just("-"), Just(", "), Just("--")],
            number,
        )
            .prop_map(|(unit, a, dash, b)| format!("{unit}{a}{dash}{b}"))
    }

    proptest! {
        #![proptest_config(crate::props::config())]

        #[test]
        fn a_range_served_lies_within_the_blob(
            header in prop_oneof![any::<String>(), range_like()],
            size in prop_oneof![0u64..4096, any::<u64>()],
        ) {
            if let RangeSpec::Bytes(first, last) = parse_range(&header, size) {
                prop_assert!(first <= last && last < size, "{:?} of {}: {}-{}", header, size, first, last);
            }
        }

        /// RFC 9110's reading of the three single-range forms.
        #[test]
        fn a_single_range_is_read_as_http_says(
            size in prop_oneof![0u64..64, any::<u64>()],
            a in prop_oneof![0u64..80, any::<u64>()],
            b in prop_oneof![0u64..80, any::<u64>()],
        ) {
            let last = size.checked_sub(1);
            let want = |first: u64, end: u64| match last {
                Some(last) if first <= last => RangeSpec::Bytes(first, end.min(last)),
                _ => RangeSpec::Unsatisfiable,
            };
            let closed = if a <= b { want(a, b) } else { RangeSpec::Ignored };
            prop_assert_eq!(parse_range(&format!("bytes={a}-{b}"), size), closed);
            prop_assert_eq!(parse_range(&format!("bytes={a}-"), size), want(a, u64::MAX));
            let suffix = match (b, last) {
                (0, _) | (_, None) => RangeSpec::Unsatisfiable,
                (n, Some(last)) => RangeSpec::Bytes(size - n.min(size), last),
            };
            prop_assert_eq!(parse_range(&format!("bytes=-{b}"), size), suffix);
        }
    }
}
