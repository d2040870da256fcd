//! `tags/list`, and the `n`/`last` pagination it shares with `_catalog`.

use http::{Request, StatusCode, header};
use serde_json::json;

use super::error::ApiError;
use super::{Api, Handled, json_response, query, query_param};
use crate::oci::RepoName;

/// The most entries one page holds, whatever `n` asks for; clients follow
/// the `Link` header for the rest.
pub const MAX_PAGE: usize = 10_000;

pub struct Page {
    pub n: usize,
    pub last: Option<String>,
}

impl Page {
    pub fn from_request<B>(req: &Request<B>) -> Result<Page, ApiError> {
        let params = query(req);
        let n = match query_param(&params, "n") {
            None => MAX_PAGE,
            Some(n) => n
                .parse::<usize>()
                .map_err(|_| ApiError::pagination_invalid())?
                .min(MAX_PAGE),
        };
        let last = query_param(&params, "last").filter(|l| !l.is_empty());
        Ok(Page { n, last })
    }

    /// The response, with a `Link` to the next page when more entries follow.
    pub fn respond(
        &self,
        path: &str,
        body: serde_json::Value,
        entries: &[String],
        more: bool,
    ) -> Handled {
        let mut response = json_response(StatusCode::OK, serde_json::to_vec(&body).expect("JSON"));
        if let (true, Some(last)) = (more && self.n > 0, entries.last()) {
            let link = format!("<{path}?last={last}&n={}>; rel=\"next\"", self.n);
            response
                .headers_mut()
                .insert(header::LINK, link.parse().expect("names are header-safe"));
        }
        Ok(response)
    }
}

pub async fn list<B>(api: &Api, req: &Request<B>, name: RepoName) -> Handled {
    let page = Page::from_request(req)?;
    let (n, last, repo) = (page.n, page.last.clone(), name.clone());
    let (tags, more) = api
        .store(move |s| s.list_tags(&repo, last.as_deref(), n))
        .await?;
    let body = json!({ "name": name.as_str(), "tags": tags });
    page.respond(
        &format!("/v2/{}/tags/list", name.as_str()),
        body,
        &tags,
        more,
    )
}
