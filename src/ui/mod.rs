//! The web page at `/`: repositories, their tags, a manifest's layers,
//! config, platforms and referrers, and deleting a tag or a manifest.
//! Server-rendered HTML (maud escapes every value) and one small
//! stylesheet, both built into the binary: no scripts, fonts or CDNs.
//!
//! With auth on, the page asks for a login (HTTP Basic, which every browser
//! prompts for) and shows only what the user may pull. A delete is a POST
//! from the page itself: same origin, with a token bound to the user and
//! the thing deleted.

mod format;
mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, Method, Response, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use sha2::Sha256;

use crate::auth::{Action, Authority, Caller};
use crate::mirror::Mirrors;
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::store::{self, Store};

pub const STYLESHEET_PATH: &str = "/-/berth.css";
const STYLESHEET: &str = include_str!("berth.css");
/// Repositories and tags on one page.
const PAGE: usize = 100;
/// A delete form is a few hundred bytes.
const MAX_FORM: usize = 8 << 10;

pub struct Ui {
    store: Arc<Store>,
    authority: Option<Arc<Authority>>,
    mirrors: Arc<Mirrors>,
    /// The authority clients reach us by through a proxy (which may
    /// rewrite `Host`), from the public URL.
    public_authority: Option<String>,
    /// A form must arrive within this.
    form_timeout: std::time::Duration,
    /// Signs delete tokens; new at every start.
    key: [u8; KEY_LEN],
}

/// What a page may show and do, for whom.
struct Viewer {
    caller: Caller,
    /// `host[:port]` as the browser reached us, for pull commands.
    host: String,
}

/// The page's routes.
enum Page {
    Home,
    Stylesheet,
    Repository(RepoName),
    Manifest(RepoName, Digest),
    Delete(RepoName),
}

/// The length of the key that signs the page's delete forms.
pub const KEY_LEN: usize = 32;

/// Whether `path` is the web page's rather than the registry API's.
pub fn handles(path: &str) -> bool {
    path == "/" || path.starts_with("/r/") || path == STYLESHEET_PATH
}

impl Ui {
    pub fn new(
        store: Arc<Store>,
        authority: Option<Arc<Authority>>,
        mirrors: Arc<Mirrors>,
        config: &crate::config::Config,
        shared_key: Option<&[u8]>,
    ) -> Ui {
        // Shared by a cluster's nodes; else this process's own.
        let mut key = [0u8; KEY_LEN];
        match shared_key {
            Some(shared) if shared.len() == KEY_LEN => key.copy_from_slice(shared),
            _ => getrandom::fill(&mut key).expect("the system has randomness"),
        }
        Ui {
            store,
            authority,
            mirrors,
            public_authority: config
                .public_url
                .as_deref()
                .and_then(crate::api::origin::authority)
                .map(str::to_owned),
            form_timeout: config.body_idle_timeout,
            key,
        }
    }

    /// Answers one request for the page. The user who logged in, if any,
    /// comes back for the access log.
    pub async fn serve(
        &self,
        req: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> (Response<Bytes>, Option<String>) {
        let Some(page) = route(req.uri().path()) else {
            return (pages::not_found("No such page."), None);
        };
        if matches!(page, Page::Stylesheet) {
            let response = Response::builder()
                .header(header::CONTENT_TYPE, "text/css; charset=utf-8")
                .header(header::CACHE_CONTROL, "max-age=3600")
                .body(Bytes::from_static(STYLESHEET.as_bytes()))
                .expect("valid response");
            return (response, None);
        }
        let caller = match self.log_in(req.headers(), peer).await {
            Ok(caller) => caller,
            Err(response) => return (response, None),
        };
        let user = caller.user().map(str::to_owned);
        let viewer = Viewer {
            caller,
            host: crate::api::origin::host(&req)
                .unwrap_or("localhost")
                .to_owned(),
        };
        let response = match self.answer(req, page, &viewer).await {
            Ok(response) => response,
            Err(e) => pages::error(&e),
        };
        (response, user)
    }

    async fn answer(
        &self,
        req: http::Request<Incoming>,
        page: Page,
        viewer: &Viewer,
    ) -> Result<Response<Bytes>, store::Error> {
        let query: Vec<(String, String)> =
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let param = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let method = req.method().clone();
        match (page, method) {
            (Page::Home, Method::GET) => {
                let filter = param("q").unwrap_or_default();
                let after = param("after");
                let authority = self.authority.clone();
                let (caller, wanted) = (viewer.caller.clone(), filter.clone());
                // A page of names, filtered as they are read.
                let (names, more) = blocking(&self.store, move |store| {
                    let visible = |name: &str| {
                        name.contains(wanted.as_str())
                            && authority
                                .as_ref()
                                .is_none_or(|a| a.may(&caller, name, Action::Pull))
                    };
                    store.list_repositories(after.as_deref(), PAGE, &visible)
                })
                .await?;
                let namespaces = self.mirrors.stats();
                Ok(pages::home(&names, more, &filter, &namespaces))
            }
            (Page::Repository(repo), Method::GET) => {
                if !self.may_pull(viewer, repo.as_str()) {
                    return Err(store::Error::NameUnknown);
                }
                let after = param("after");
                let r = repo.clone();
                let (tags, more) = blocking(&self.store, move |store| {
                    store.tag_summaries(&r, after.as_deref(), PAGE)
                })
                .await?;
                let may_delete = self.may(viewer, repo.as_str(), Action::Delete);
                Ok(pages::repository(
                    &repo,
                    &tags,
                    more,
                    &viewer.host,
                    may_delete,
                ))
            }
            (Page::Manifest(repo, digest), Method::GET) => {
                if !self.may_pull(viewer, repo.as_str()) {
                    return Err(store::Error::NameUnknown);
                }
                let (r, d) = (repo.clone(), digest.clone());
                let (view, referrers) = blocking(&self.store, move |store| {
                    Ok((store.manifest_view(&r, &d)?, store.referrers(&r, &d, None)?))
                })
                .await?;
                let may_delete = self.may(viewer, repo.as_str(), Action::Delete);
                Ok(pages::manifest(
                    &repo,
                    &view,
                    &referrers,
                    &viewer.host,
                    may_delete,
                ))
            }
            (Page::Delete(repo), Method::GET) => {
                let Some(target) = target(param("tag"), param("digest")) else {
                    return Ok(pages::bad_request("Name a tag or a digest to delete."));
                };
                if !self.may(viewer, repo.as_str(), Action::Delete) {
                    return Ok(pages::forbidden(&repo));
                }
                let token = self.token(viewer, &repo, &target);
                Ok(pages::confirm_delete(&repo, &target, &token))
            }
            (Page::Delete(repo), Method::POST) => self.delete(req, repo, viewer).await,
            _ => Ok(pages::method_not_allowed()),
        }
    }

    async fn delete(
        &self,
        req: http::Request<Incoming>,
        repo: RepoName,
        viewer: &Viewer,
    ) -> Result<Response<Bytes>, store::Error> {
        let ours = [Some(viewer.host.as_str()), self.public_authority.as_deref()];
        if !crate::api::origin::is_ours(req.headers(), &ours) {
            return Ok(pages::forbidden_origin());
        }
        // A form is small: one that trickles in is cut, not waited for.
        let read = Limited::new(req.into_body(), MAX_FORM).collect();
        let form = match tokio::time::timeout(self.form_timeout, read).await {
            Ok(Ok(body)) => body.to_bytes(),
            _ => {
                return Ok(pages::bad_request(
                    "The form is too large, too slow or broken.",
                ));
            }
        };
        let fields: Vec<(String, String)> = form_urlencoded::parse(&form).into_owned().collect();
        let field = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let Some(target) = target(field("tag"), field("digest")) else {
            return Ok(pages::bad_request("Name a tag or a digest to delete."));
        };
        if !self.may(viewer, repo.as_str(), Action::Delete) {
            return Ok(pages::forbidden(&repo));
        }
        let token = field("token").unwrap_or_default();
        if !self.token_matches(viewer, &repo, &target, &token) {
            return Ok(pages::forbidden_origin());
        }
        let (r, t) = (repo.clone(), target.clone());
        blocking(&self.store, move |store| store.delete_manifest(&r, &t)).await?;
        Ok(pages::see_other(&pages::repository_path(&repo)))
    }

    /// The caller, or the answer that asks for a login.
    async fn log_in(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Result<Caller, Response<Bytes>> {
        let Some(authority) = &self.authority else {
            return Ok(Caller::Anonymous);
        };
        let credentials = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Basic ")
                    .or_else(|| v.strip_prefix("basic "))
            })
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())));
        let Some((user, password)) = credentials else {
            return Err(pages::log_in());
        };
        match authority.login(peer.ip(), &user, &password).await {
            Ok(()) => Ok(Caller::User(user)),
            Err(crate::auth::LoginError::BadCredentials) => Err(pages::log_in()),
            Err(crate::auth::LoginError::TooManyFailures) => Err(pages::too_many()),
        }
    }

    fn may(&self, viewer: &Viewer, repo: &str, action: Action) -> bool {
        self.authority
            .as_ref()
            .is_none_or(|authority| authority.may(&viewer.caller, repo, action))
    }

    fn may_pull(&self, viewer: &Viewer, repo: &str) -> bool {
        self.may(viewer, repo, Action::Pull)
    }

    /// What a delete token signs: the viewer, the repository and the
    /// thing deleted.
    fn token_mac(&self, viewer: &Viewer, repo: &RepoName, target: &Reference) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        for part in [
            "delete",
            viewer.caller.user().unwrap_or(""),
            repo.as_str(),
            target.as_str(),
        ] {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        mac
    }

    /// A token for deleting `target` of `repo` as this viewer.
    fn token(&self, viewer: &Viewer, repo: &RepoName, target: &Reference) -> String {
        let tag = self.token_mac(viewer, repo, target).finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(tag)
    }

    /// Checked by the hmac crate, in constant time.
    fn token_matches(
        &self,
        viewer: &Viewer,
        repo: &RepoName,
        target: &Reference,
        token: &str,
    ) -> bool {
        URL_SAFE_NO_PAD.decode(token).is_ok_and(|tag| {
            self.token_mac(viewer, repo, target)
                .verify_slice(&tag)
                .is_ok()
        })
    }
}

/// `/`, `/r/NAME`, `/r/NAME/-/manifest/DIGEST`, `/r/NAME/-/delete`: a
/// repository path component never is `-`, so the split is unambiguous.
fn route(path: &str) -> Option<Page> {
    if path == "/" {
        return Some(Page::Home);
    }
    if path == STYLESHEET_PATH {
        return Some(Page::Stylesheet);
    }
    let rest = path.strip_prefix("/r/")?;
    let (name, action) = match rest.split_once("/-/") {
        Some((name, action)) => (name, Some(action)),
        None => (rest.trim_end_matches('/'), None),
    };
    let repo = RepoName::parse(name)?;
    match action {
        None => Some(Page::Repository(repo)),
        Some("delete") => Some(Page::Delete(repo)),
        Some(action) => {
            let digest = Digest::parse(action.strip_prefix("manifest/")?)?;
            Some(Page::Manifest(repo, digest))
        }
    }
}

fn target(tag: Option<String>, digest: Option<String>) -> Option<Reference> {
    match (tag, digest) {
        (Some(tag), None) => Tag::parse(&tag).map(Reference::Tag),
        (None, Some(digest)) => Digest::parse(&digest).map(Reference::Digest),
        _ => None,
    }
}

/// Runs store work on a blocking thread; a storage error reopens the
/// database, as the API's calls do.
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    work: impl FnOnce(&Store) -> store::Result<T> + Send + 'static,
) -> store::Result<T> {
    let store = Arc::clone(store);
    store::blocking(move || store.recover(work(&store))).await
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::props::config())]

        #[test]
        fn any_path_is_routed_without_a_panic(path in any::<String>()) {
            let _ = route(&path);
            let _ = route(&format!("/r/{path}"));
        }

        #[test]
        fn the_pages_of_a_repository_route_to_it(
            name in crate::props::repo_name(),
            hex in "[0-9a-f]{64}",
        ) {
            let same = |repo: &RepoName| repo.as_str() == name;
            let repository = route(&format!("/r/{name}"));
            prop_assert!(matches!(repository, Some(Page::Repository(ref r)) if same(r)));
            let delete = route(&format!("/r/{name}/-/delete"));
            prop_assert!(matches!(delete, Some(Page::Delete(ref r)) if same(r)));
            let digest = format!("sha256:{hex}");
            let manifest = route(&format!("/r/{name}/-/manifest/{digest}"));
            prop_assert!(
                matches!(manifest, Some(Page::Manifest(ref r, ref d)) if same(r) && d.as_str() == digest)
            );
            let short = format!("/r/{name}/-/manifest/sha256:{}", &hex[1..]);
            prop_assert!(route(&short).is_none(), "a short digest routed");
        }
    }
}
