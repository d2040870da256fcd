//! The referrers API: manifests whose `subject` is a given digest.

use http::{Request, header};
use serde_json::{Value, json};

use super::{Api, Handled, json_response, query, query_param};
use crate::oci::manifest::OCI_INDEX;
use crate::oci::{Digest, RepoName};

pub async fn list<B>(api: &Api, req: &Request<B>, name: RepoName, subject: Digest) -> Handled {
    let filter = query_param(&query(req), "artifactType").filter(|t| !t.is_empty());
    if let Some(mirror) = api.mirrors.for_repo(&name) {
        mirror.refresh_referrers(&name, &subject).await?;
    }
    let f = filter.clone();
    let referrers = api
        .store(move |s| s.referrers(&name, &subject, f.as_deref()))
        .await?;
    let manifests: Vec<Value> = referrers
        .into_iter()
        .map(|r| {
            let mut d = json!({ "mediaType": r.media_type, "digest": r.digest, "size": r.size });
            if let Some(t) = r.artifact_type {
                d["artifactType"] = Value::String(t);
            }
            if let Some(a) = r.annotations {
                d["annotations"] = json!(a);
            }
            d
        })
        .collect();
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut response = json_response(
        http::StatusCode::OK,
        serde_json::to_vec(&index).expect("JSON"),
    );
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, OCI_INDEX.parse().expect("static"));
    if filter.is_some() {
        headers.insert(
            "oci-filters-applied",
            "artifactType".parse().expect("static"),
        );
    }
    Ok(response)
}
