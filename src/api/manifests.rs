//! Manifests by tag or digest.

use http::{Method, Request, Response, StatusCode, header};
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
        .header("docker-content-digest", put.digest.as_str())
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
    let response = Response::builder()
        .header(header::CONTENT_TYPE, manifest.media_type)
        .header(header::CONTENT_LENGTH, manifest.body.len())
        .header("docker-content-digest", manifest.digest.as_str())
        .header(header::ETAG, format!("\"{}\"", manifest.digest));
    let body = if req.method() == Method::HEAD {
        body::empty()
    } else {
        body::full(manifest.body)
    };
    Ok(response.body(body).expect("valid response"))
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
