//! Authentication and authorization at the HTTP door: who is calling
//! (Basic, Bearer or nobody), whether they may do what the route does, the
//! challenge that starts the Docker token flow, and the token endpoint.

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{Method, Request, StatusCode, Version, header};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::json;

use super::error::ApiError;
use super::origin::host;
use super::route::Route;
use super::{Api, Handled, header_str, json_response, query, query_param};
use crate::auth::{Action, Authority, Caller, LoginError, Scope};
use crate::oci::RepoName;

/// Service name in challenges and tokens.
const SERVICE: &str = "berth";

/// What a route needs: nothing (the token endpoint), any identity
/// (`/v2/`), or an action on a repository. The catalog needs a user, and
/// then filters.
enum Need<'a> {
    Nothing,
    Identity,
    /// A login: a password, or a token issued for one.
    User,
    Listing,
    Repo(&'a str, Action),
}

fn need<'a>(route: &'a Route, method: &Method) -> Need<'a> {
    let action = match (method, route) {
        // An upload's status is part of pushing it, not content to pull.
        (_, Route::Upload(..)) => Action::Push,
        (&Method::GET | &Method::HEAD, _) => Action::Pull,
        // Deleting content is its own action in Docker's token scopes.
        (
            &Method::DELETE,
            Route::Manifest(..) | Route::BadManifestReference(..) | Route::Blob(..),
        ) => Action::Delete,
        _ => Action::Push,
    };
    match route {
        Route::Health | Route::Ready => Need::Nothing,
        Route::Base | Route::Token => Need::Identity,
        Route::Metrics => Need::User,
        Route::Catalog => Need::Listing,
        Route::Tags(name)
        | Route::Manifest(name, _)
        | Route::BadManifestReference(name, ..)
        | Route::Blob(name, _)
        | Route::Uploads(name)
        | Route::Upload(name, _)
        | Route::Referrers(name, _) => Need::Repo(name.as_str(), action),
    }
}

impl Api {
    /// The caller, once it may do what `route` does; the error otherwise.
    /// With auth off everyone is an anonymous caller who may do anything.
    pub(super) async fn authorize<B>(
        &self,
        req: &Request<B>,
        peer: SocketAddr,
        route: &Route,
    ) -> Result<Caller, ApiError> {
        let Some(authority) = &self.authority else {
            return Ok(Caller::Anonymous);
        };
        let need = need(route, req.method());
        if matches!(need, Need::Nothing) {
            return Ok(Caller::Anonymous);
        }
        // A browser attaches a Basic login it keeps to any site's request,
        // never a token: only a token's holder can have sent one.
        let write = !matches!(*req.method(), Method::GET | Method::HEAD);
        let token = header_str(req, header::AUTHORIZATION)
            .is_some_and(|v| strip_scheme(v, "bearer").is_some());
        let public = self
            .public_url
            .as_deref()
            .and_then(super::origin::authority);
        if write && !token && !super::origin::is_ours(req.headers(), &[host(req), public]) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "DENIED",
                "a browser's request from another site may not write here",
            ));
        }
        let caller = self.identify(authority, req, peer).await?;
        match need {
            Need::Nothing => Ok(caller),
            // Not a pull of any one repository, so anonymous pull does not
            // cover it; an empty list would tell clients there is nothing to
            // log in for, so they are asked to log in.
            Need::Listing if caller.user().is_none() => {
                Err(self.challenge(req, Some("registry:catalog:*")))
            }
            Need::Listing => Ok(caller),
            Need::Identity if matches!(caller, Caller::Anonymous) => Err(self.challenge(req, None)),
            Need::Identity => Ok(caller),
            Need::User if caller.user().is_none() => Err(self.challenge(req, None)),
            Need::User => Ok(caller),
            Need::Repo(repo, action) if authority.may(&caller, repo, action) => Ok(caller),
            Need::Repo(repo, action) => {
                if caller.user().is_some() && !authority.rules_allow(caller.user(), repo, action) {
                    // A known user the rules refuse: no token would help.
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "DENIED",
                        format!("requested access to {repo} is denied"),
                    ));
                }
                // Anonymous, or a token without this scope: ask for a token.
                let actions = match action {
                    Action::Pull => "pull",
                    Action::Delete => "delete",
                    Action::Push => "pull,push",
                };
                let mut scope = format!("repository:{repo}:{actions}");
                if let Some(from) = mount_source(req, route) {
                    // A token without pull on the source cannot mount: ask
                    // for both at once, in one scope as Distribution does.
                    scope.push_str(&format!(" repository:{}:pull", from.as_str()));
                }
                Err(self.challenge(req, Some(&scope)))
            }
        }
    }

    async fn identify<B>(
        &self,
        authority: &Arc<Authority>,
        req: &Request<B>,
        peer: SocketAddr,
    ) -> Result<Caller, ApiError> {
        if self.public_url.is_none() && !host(req).is_none_or(valid_host) {
            // It would go into the realm of a challenge: refused before any.
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "UNSUPPORTED",
                "invalid Host header",
            ));
        }
        let Some(value) = header_str(req, header::AUTHORIZATION) else {
            return Ok(Caller::Anonymous);
        };
        if let Some(token) = strip_scheme(value, "bearer") {
            return authority
                .verify_token(token.trim(), unix_now())
                .map(Caller::Token)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "UNAUTHORIZED",
                        "invalid or expired token",
                    )
                    .with_header(
                        "www-authenticate",
                        &self.challenge_value(req, None, Some("invalid_token")),
                    )
                });
        }
        let (user, password) = strip_scheme(value, "basic")
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())))
            .ok_or_else(|| self.unauthorized(req, "malformed Authorization header"))?;
        let result = authority.login(peer.ip(), &user, &password).await;
        match result {
            Ok(()) => Ok(Caller::User(user)),
            Err(LoginError::BadCredentials) => {
                Err(self.unauthorized(req, "invalid username or password"))
            }
            Err(LoginError::TooManyFailures) => Err(too_many()),
        }
    }

    fn unauthorized<B>(&self, req: &Request<B>, message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
            .with_header("www-authenticate", &self.challenge_value(req, None, None))
    }

    fn challenge<B>(&self, req: &Request<B>, scope: Option<&str>) -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        )
        .with_header("www-authenticate", &self.challenge_value(req, scope, None))
    }

    fn challenge_value<B>(
        &self,
        req: &Request<B>,
        scope: Option<&str>,
        error: Option<&str>,
    ) -> String {
        let realm = match &self.public_url {
            Some(url) => format!("{url}/token"),
            None => {
                let scheme = if self.tls { "https" } else { "http" };
                format!("{scheme}://{}/token", host(req).unwrap_or("localhost"))
            }
        };
        // Escaped even though checked: a Config built in code is not parsed.
        let realm = realm.replace('\\', "\\\\").replace('"', "\\\"");
        let mut value = format!("Bearer realm=\"{realm}\",service=\"{SERVICE}\"");
        if let Some(scope) = scope {
            value.push_str(&format!(",scope=\"{scope}\""));
        }
        if let Some(error) = error {
            value.push_str(&format!(",error=\"{error}\""));
        }
        value
    }

    /// Whether the caller may pull `repo` by the rules (for the catalog and
    /// for the source of a cross-repository mount).
    pub(super) fn may_pull(&self, caller: &Caller, repo: &str) -> bool {
        match &self.authority {
            None => true,
            Some(authority) => authority.may(caller, repo, Action::Pull),
        }
    }

    /// A filter over repository names: those the caller may pull by the
    /// rules, whatever scopes a token holds.
    pub(super) fn listing_filter(&self, caller: &Caller) -> Box<dyn Fn(&str) -> bool + Send> {
        match &self.authority {
            None => Box::new(|_| true),
            Some(authority) => {
                let (authority, user) = (Arc::clone(authority), caller.user().map(str::to_owned));
                Box::new(move |repo| authority.rules_allow(user.as_deref(), repo, Action::Pull))
            }
        }
    }
}

/// A host name, an IPv4 address or a bracketed IPv6 address, with an
/// optional port: nothing that could break out of a quoted header value.
fn valid_host(host: &str) -> bool {
    let (name_ok, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) => (v6.parse::<Ipv6Addr>().is_ok(), port),
            None => return false,
        },
        None => {
            let (name, port) = host.split_at(host.find(':').unwrap_or(host.len()));
            let name_ok = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            (name_ok, port)
        }
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
        });
    name_ok && port_ok
}

/// The repository a `POST .../blobs/uploads/?mount=D&from=R` mounts from,
/// when it names one other than the target (only a valid name may reach a
/// header).
fn mount_source<B>(req: &Request<B>, route: &Route) -> Option<RepoName> {
    let (Route::Uploads(target), &Method::POST) = (route, req.method()) else {
        return None;
    };
    let params = query(req);
    query_param(&params, "mount")?;
    RepoName::parse(&query_param(&params, "from")?).filter(|from| from != target)
}

/// A refused request's body is read and dropped up to this size, within
/// `DRAIN_TIME`, so its connection can carry the next request.
const DRAIN_LIMIT: u64 = 64 << 10;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Readies a refusal sent before the request's body was read. hyper drops a
/// connection whose request body is left unread, without saying so, and the
/// client's next request on it fails: so a small body is read and dropped,
/// and when that cannot be (too large, too slow, or waiting for a `100
/// Continue` it should not get) the refusal says `Connection: close`.
pub(super) async fn refuse_unread(req: Request<Incoming>, refusal: ApiError) -> ApiError {
    let http1 = req.version() < Version::HTTP_2;
    let waits_for_continue =
        header_str(&req, header::EXPECT).is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let declared = header_str(&req, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    let mut body = req.into_body();
    if body.is_end_stream() {
        return refusal;
    }
    if !waits_for_continue && declared.is_none_or(|n| n <= DRAIN_LIMIT) {
        let drain = async {
            let mut read = 0;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { return false };
                read += frame.data_ref().map_or(0, |d| d.len() as u64);
                if read > DRAIN_LIMIT {
                    return false;
                }
            }
            true
        };
        if tokio::time::timeout(DRAIN_TIME, drain).await == Ok(true) {
            return refusal;
        }
    }
    // HTTP/2 has no such header: an unread body there costs only its stream.
    if http1 {
        refusal.with_header("connection", "close")
    } else {
        refusal
    }
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then_some(rest)
}

fn too_many() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TOOMANYREQUESTS",
        "too many failed logins from this address; try again later",
    )
}

/// `GET /token`: the Docker token flow. Basic credentials, or none for an
/// anonymous token; grants what was asked for and is allowed.
pub async fn token<B>(api: &Api, req: &Request<B>, peer: SocketAddr) -> Handled {
    let Some(authority) = &api.authority else {
        return Err(ApiError::not_found());
    };
    if !matches!(*req.method(), Method::GET) {
        return Err(ApiError::unsupported());
    }
    let caller = match header_str(req, header::AUTHORIZATION) {
        Some(v) if strip_scheme(v, "basic").is_some() => api.identify(authority, req, peer).await?,
        _ => Caller::Anonymous,
    };
    let scopes: Vec<Scope> = query(req)
        .into_iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').filter_map(Scope::parse).collect::<Vec<_>>())
        .collect();
    let now = unix_now();
    let (token, ttl) = authority.issue(caller.user(), &scopes, now);
    let body = json!({
        "token": token,
        "access_token": token,
        "expires_in": ttl,
        "issued_at": humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(now)).to_string(),
    });
    let mut response = json_response(StatusCode::OK, serde_json::to_vec(&body).expect("JSON"));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
    Ok(response)
}

/// Seconds since the Unix epoch, the unit of token times. Read here rather
/// than from the store's clock: tokens have nothing to do with storage.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
