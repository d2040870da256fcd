//! Upload sessions: start (or mount, or a whole blob at once), append
//! chunks, report progress, finish, cancel.

use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::body::{self, feed};
use super::error::{ApiError, upload_range};
use super::{Api, Handled, header_str, query, query_param};
use crate::auth::Caller;
use crate::oci::{Algorithm, Digest, RepoName};
use crate::store::{self, Appender, ChunkSpec, Store};

fn location(name: &RepoName, id: &str) -> String {
    format!("/v2/{}/blobs/uploads/{id}", name.as_str())
}

/// 202 with where the upload stands.
fn progress(name: &RepoName, id: &str, offset: u64, status: StatusCode) -> Handled {
    Ok(Response::builder()
        .status(status)
        .header(header::LOCATION, location(name, id))
        .header(header::RANGE, upload_range(offset))
        .header("docker-upload-uuid", id)
        .header(header::CONTENT_LENGTH, 0)
        .body(body::empty())
        .expect("valid response"))
}

fn created(name: &RepoName, digest: &Digest) -> Handled {
    Ok(Response::builder()
        .status(StatusCode::CREATED)
        .header(
            header::LOCATION,
            format!("/v2/{}/blobs/{digest}", name.as_str()),
        )
        .header(super::DOCKER_CONTENT_DIGEST, digest.as_str())
        .header(header::CONTENT_LENGTH, 0)
        .body(body::empty())
        .expect("valid response"))
}

/// Upload ids are UUIDs we issued; anything else names no upload (and never
/// reaches the file system).
fn upload_id(id: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| crate::store::Error::UploadUnknown.into())
}

fn required_digest(value: Option<String>) -> Result<Digest, ApiError> {
    let value =
        value.ok_or_else(|| ApiError::digest_invalid("the digest parameter is required"))?;
    Digest::parse(&value)
        .ok_or_else(|| ApiError::digest_invalid(format!("invalid digest {value:?}")))
}

fn content_length<B>(req: &Request<B>) -> Option<u64> {
    header_str(req, header::CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

/// Reads `Content-Range: <start>-<end>` (also `bytes <start>-<end>/<total>`).
fn chunk_spec<B>(req: &Request<B>) -> Result<ChunkSpec, ApiError> {
    let Some(raw) = req.headers().get(header::CONTENT_RANGE) else {
        return Ok(ChunkSpec {
            start: None,
            len: None,
        });
    };
    // A header that is there but unreadable is refused, never ignored.
    let value = String::from_utf8_lossy(raw.as_bytes());
    let range = value.trim().trim_start_matches("bytes").trim();
    let range = range.split('/').next().unwrap_or("");
    let bounds = range
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)));
    let len = bounds.and_then(|(start, end)| end.checked_sub(start)?.checked_add(1));
    match (bounds, len) {
        (Some((start, _)), Some(len)) => Ok(ChunkSpec {
            start: Some(start),
            len: Some(len),
        }),
        _ => Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
            format!("invalid Content-Range {value:?}; expected <start>-<end>"),
        )),
    }
}

pub async fn start(api: &Api, req: Request<Incoming>, name: RepoName, caller: &Caller) -> Handled {
    let params = query(&req);
    if let Some(mount) = query_param(&params, "mount") {
        let digest = Digest::parse(&mount)
            .ok_or_else(|| ApiError::digest_invalid(format!("invalid mount digest {mount:?}")))?;
        // A source the caller may not read is treated as lacking the blob.
        let from = query_param(&params, "from")
            .and_then(|f| RepoName::parse(&f))
            .filter(|from| api.may_pull(caller, from.as_str()));
        if let Some(from) = from {
            let (n, d) = (name.clone(), digest.clone());
            if api.store(move |s| s.mount_blob(&n, &d, &from)).await? {
                return created(&name, &digest);
            }
        }
    }
    if let Some(value) = query_param(&params, "digest") {
        let digest = required_digest(Some(value))?;
        let len = content_length(&req);
        let (n, d, algorithm) = (name.clone(), digest.clone(), digest.algorithm());
        append(
            api,
            req,
            move |store| store.put_blob(&n, len, algorithm),
            move |appender| appender.finish(&d),
        )
        .await?;
        return created(&name, &digest);
    }
    let algorithm = match query_param(&params, "digest-algorithm") {
        None => Algorithm::Sha256,
        Some(name) => Algorithm::parse(&name).ok_or_else(|| {
            ApiError::digest_invalid(format!(
                "unsupported digest-algorithm {name:?}; this registry supports sha256 and sha512"
            ))
        })?,
    };
    let upload = api.recover(api.store.start_upload(&name, algorithm).await)?;
    progress(&name, &upload.id, upload.offset, StatusCode::ACCEPTED)
}

pub async fn status(api: &Api, name: RepoName, id: String) -> Handled {
    let id = upload_id(&id)?;
    let (n, i) = (name.clone(), id.clone());
    let offset = api.store(move |s| s.upload_offset(&n, &i)).await?;
    progress(&name, &id, offset, StatusCode::NO_CONTENT)
}

pub async fn patch(api: &Api, req: Request<Incoming>, name: RepoName, id: String) -> Handled {
    let id = upload_id(&id)?;
    let spec = chunk_spec(&req)?;
    let (n, i) = (name.clone(), id.clone());
    let offset = append(
        api,
        req,
        move |store| store.append_to(&n, &i, spec),
        |appender| appender.commit(),
    )
    .await
    .map_err(|e| with_location(e, &name, &id))?;
    progress(&name, &id, offset, StatusCode::ACCEPTED)
}

pub async fn finish(api: &Api, req: Request<Incoming>, name: RepoName, id: String) -> Handled {
    let id = upload_id(&id)?;
    let digest = required_digest(query_param(&query(&req), "digest"))?;
    let mut spec = chunk_spec(&req)?;
    if spec.len.is_none() {
        spec.len = content_length(&req);
    }
    let (n, i, d) = (name.clone(), id.clone(), digest.clone());
    let algorithm = digest.algorithm();
    append(
        api,
        req,
        move |store| {
            let mut appender = store.append_to(&n, &i, spec)?;
            appender.hash_as(algorithm);
            Ok(appender)
        },
        move |appender| appender.finish(&d),
    )
    .await
    .map_err(|e| with_location(e, &name, &id))?;
    created(&name, &digest)
}

/// Streams a request body into the appender `open` gives (a session's next
/// chunk, or a whole blob), then ends it with `end` (commit the chunk, or
/// finish the blob).
async fn append<T: Send + 'static>(
    api: &Api,
    req: Request<Incoming>,
    open: impl FnOnce(&Arc<Store>) -> store::Result<Appender> + Send + 'static,
    end: impl FnOnce(Appender) -> store::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    if small_body(&req) {
        // Held in memory until its end either way (see body::MIN_WRITE), so
        // it is read first and the store opens, writes and ends it in one
        // blocking call instead of three: each call is two thread wake-ups,
        // and for 32 clients pushing small blobs they were most of berth's
        // CPU time.
        let chunks = body::gather(api.frames(req))
            .await
            .map_err(store::Error::BodyFailed)?;
        return api
            .store(move |store| {
                let mut appender = open(store)?;
                if !chunks.is_empty() {
                    appender.write(&chunks)?;
                }
                end(appender)
            })
            .await;
    }
    let appender = api.store(open).await?;
    let appender = api.recover(feed(api.frames(req), appender).await)?;
    api.blocking(move || end(appender)).await
}

/// Whether the body declared a length small enough to be read whole.
fn small_body(req: &Request<Incoming>) -> bool {
    use http_body::Body as _;
    req.body()
        .size_hint()
        .exact()
        .is_some_and(|len| len <= body::MIN_WRITE as u64)
}

pub async fn cancel(api: &Api, name: RepoName, id: String) -> Handled {
    let id = upload_id(&id)?;
    api.store(move |s| s.cancel_upload(&name, &id)).await?;
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(body::empty())
        .expect("valid response"))
}

/// A client told to retry a chunk needs to know where the upload lives.
fn with_location(e: ApiError, name: &RepoName, id: &str) -> ApiError {
    if e.status == StatusCode::RANGE_NOT_SATISFIABLE {
        e.with_header("location", &location(name, id))
            .with_header("docker-upload-uuid", id)
    } else {
        e
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn content_range() -> impl Strategy<Value = Vec<u8>> {
        let number = prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            (0u64..100).prop_map(|n| n.to_string()),
            Just(String::new()),
            "[0-9a-z -]{1,6}",
        ];
        (
            prop_oneof![Just(""), Just("bytes "), Just("bytes=")],
            number.clone(),
            number.clone(),
            prop_oneof![Just(String::new()), number.prop_map(|n| format!("/{n}"))],
        )
            .prop_map(|(unit, a, b, total)| format!("{unit}{a}-{b}{total}").into_bytes())
    }

    proptest! {
        #![proptest_config(crate::props::config())]

        #[test]
        fn a_content_range_is_a_chunk_or_a_416(
            value in prop_oneof![prop::collection::vec(any::<u8>(), 0..40), content_range()],
        ) {
            // Only bytes a header may hold ever reach the handler.
            let Ok(value) = http::HeaderValue::from_bytes(&value) else {
                return Ok(());
            };
            let req = Request::builder()
                .header(header::CONTENT_RANGE, value.clone())
                .body(())
                .unwrap();
            match chunk_spec(&req) {
                Ok(spec) => {
                    let (start, len) = (spec.start.unwrap(), spec.len.unwrap());
                    prop_assert!(len >= 1 && start.checked_add(len - 1).is_some(), "{:?}", value);
                }
                Err(e) => prop_assert_eq!(e.status, StatusCode::RANGE_NOT_SATISFIABLE),
            }
        }
    }
}
