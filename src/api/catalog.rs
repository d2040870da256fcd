//! `_catalog`: the repositories this registry holds.

use http::Request;
use serde_json::json;

use super::tags::Page;
use super::{Api, Handled};
use crate::auth::Caller;

pub async fn list<B>(api: &Api, req: &Request<B>, caller: &Caller) -> Handled {
    let page = Page::from_request(req)?;
    let (n, last) = (page.n, page.last.clone());
    // Repositories the caller may not pull are not revealed, nor counted.
    let visible = api.listing_filter(caller);
    let (repos, more) = api
        .store(move |s| s.list_repositories(last.as_deref(), n, &*visible))
        .await?;
    page.respond(
        "/v2/_catalog",
        json!({ "repositories": repos }),
        &repos,
        more,
    )
}
