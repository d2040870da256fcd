//! `_catalog`: the repositories this registry holds.

use http::Request;
use serde_json::json;

use super::tags::Page;
use super::{Api, Handled};

pub async fn list<B>(api: &Api, req: &Request<B>) -> Handled {
    let page = Page::from_request(req)?;
    let (n, last) = (page.n, page.last.clone());
    let (repos, more) = api
        .store(move |s| s.list_repositories(last.as_deref(), n))
        .await?;
    page.respond(
        "/v2/_catalog",
        json!({ "repositories": repos }),
        &repos,
        more,
    )
}
