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
    let (tags, more) = match api.mirrors.for_repo(&name) {
        Some(mirror) => {
            // The upstream's tags and those held here (pushed or cached),
            // as one list; bounded, as a page is.
            let repo = name.clone();
            let held = api
                .store(move |s| match s.list_tags(&repo, None, MAX_PAGE) {
                    Err(crate::store::Error::NameUnknown) => Ok((Vec::new(), false)),
                    listed => listed,
                })
                .await?
                .0;
            let upstream = mirror.upstream_tags(&name, MAX_PAGE).await;
            if held.is_empty() && upstream.is_none() {
                return Err(crate::store::Error::NameUnknown.into());
            }
            let all: std::collections::BTreeSet<String> = held
                .into_iter()
                .chain(upstream.iter().flat_map(|tags| tags.iter().cloned()))
                .collect();
            let after = all
                .into_iter()
                .filter(|t| page.last.as_deref().is_none_or(|last| t.as_str() > last));
            let mut tags: Vec<String> = after.take(page.n + 1).collect();
            let more = tags.len() > page.n;
            tags.truncate(page.n);
            (tags, more)
        }
        None => {
            let (n, last, repo) = (page.n, page.last.clone(), name.clone());
            api.store(move |s| s.list_tags(&repo, last.as_deref(), n))
                .await?
        }
    };
    let body = json!({ "name": name.as_str(), "tags": tags });
    page.respond(
        &format!("/v2/{}/tags/list", name.as_str()),
        body,
        &tags,
        more,
    )
}
