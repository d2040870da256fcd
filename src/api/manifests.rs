//! Manifests by tag or digest.

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::body::{self, CollectError, collect_limited};
use super::error::ApiError;
use super::{Api, Handled, header_str};
use crate::oci::{Reference, RepoName};

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "SIZE_INVALID",
        format!("manifest is larger than the registry's limit of {limit} bytes"),
    )
}

pub async fn put(
    api: &Api,
    req: Request<Incoming>,
    name: RepoName,
    reference: Reference,
) -> Handled {
    let limit = api.max_manifest_bytes;
    let declared = header_str(&req, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large(limit));
    }
    let content_type = header_str(&req, header::CONTENT_TYPE).map(str::to_owned);
    let bytes = collect_limited(api.frames(req), limit)
        .await
        .map_err(|e| match e {
            CollectError::TooLarge => too_large(limit),
            CollectError::Failed(e) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "MANIFEST_INVALID",
                format!("manifest body failed: {e}"),
            ),
        })?;
    if let Some(mirror) = api.mirrors.for_repo(&name) {
        mirror
            .bring_blobs(&name, content_type.as_deref(), &bytes)
            .await;
    }
    let n = name.clone();
    let put = api
        .store(move |s| s.put_manifest(&n, &reference, content_type.as_deref(), bytes))
        .await?;
    let mut response = Response::builder()
        .status(StatusCode::CREATED)
        .header(
            header::LOCATION,
            format!("/v2/{}/manifests/{}", name.as_str(), put.digest),
        )
        .header(super::DOCKER_CONTENT_DIGEST, put.digest.as_str())
        .header(header::CONTENT_LENGTH, 0);
    if let Some(subject) = &put.subject {
        response = response.header("oci-subject", subject.as_str());
    }
    Ok(response.body(body::empty()).expect("valid response"))
}

pub async fn get<B>(api: &Api, req: &Request<B>, name: RepoName, reference: Reference) -> Handled {
    let manifest = match api.mirrors.for_repo(&name) {
        Some(mirror) => mirror.manifest(&name, &reference).await?,
        None => {
            api.lookup(move |s| s.get_manifest(&name, &reference))
                .await?
        }
    };
    // The headers are built as values, not parsed from strings through
    // the builder: callgrind counted the builder's conversions and the
    // ETag's formatting at about 3,500 instructions of a GET's 30,800.
    // The digest's header shares the ETag's bytes, one allocation for both.
    let digest = manifest.digest.as_str();
    let mut etag = String::with_capacity(digest.len() + 2);
    etag.push('"');
    etag.push_str(digest);
    etag.push('"');
    let etag = bytes::Bytes::from(etag);
    let values = (
        HeaderValue::try_from(manifest.media_type),
        HeaderValue::from_maybe_shared(etag.slice(1..etag.len() - 1)),
        HeaderValue::from_maybe_shared(etag),
    );
    let (Ok(media_type), Ok(digest), Ok(etag)) = values else {
        let why = format!("stored manifest {digest} cannot be sent as headers");
        return Err(crate::store::Error::Corrupt(why).into());
    };
    // A GET's length is the body's, which hyper writes without a header
    // value (two allocations); a HEAD has no body to tell it.
    let (body, length) = if req.method() == Method::HEAD {
        let length = HeaderValue::from(manifest.body.len());
        (body::empty(), Some(length))
    } else {
        (body::full(manifest.body), None)
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.reserve(5);
    headers.insert(header::CONTENT_TYPE, media_type);
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, length);
    }
    headers.insert(super::DOCKER_CONTENT_DIGEST, digest);
    headers.insert(header::ETAG, etag);
    Ok(response)
}

pub async fn delete(api: &Api, name: RepoName, reference: Reference) -> Handled {
    api.store(move |s| s.delete_manifest(&name, &reference))
        .await?;
    Ok(Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(header::CONTENT_LENGTH, 0)
        .body(body::empty())
        .expect("valid response"))
}
