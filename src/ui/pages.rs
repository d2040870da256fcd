//! The pages, as maud templates: every value that came from a client or a
//! manifest goes through maud's escaping.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::STYLESHEET_PATH;
use super::format::{age, short, size};
use crate::mirror::Stats;
use crate::oci::{Reference, RepoName};
use crate::store::{self, ManifestView, Referrer, TagSummary};

fn page(status: StatusCode, title: &str, body: Markup) -> Response<Bytes> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · berth" }
                link rel="stylesheet" href=(STYLESHEET_PATH);
            }
            body {
                header { a.brand href="/" { "berth" } }
                main { (body) }
            }
        }
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        // The page shows what the user may see: it is theirs alone, and
        // nobody frames it.
        .header(header::CACHE_CONTROL, "no-store")
        .header("x-frame-options", "DENY")
        .header(
            "content-security-policy",
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'",
        )
        .header("x-content-type-options", "nosniff")
        .body(Bytes::from(markup.into_string()))
        .expect("valid response")
}

fn message(status: StatusCode, title: &str, text: &str) -> Response<Bytes> {
    page(status, title, html! { h1 { (title) } p { (text) } })
}

pub fn not_found(text: &str) -> Response<Bytes> {
    message(StatusCode::NOT_FOUND, "Not found", text)
}

pub fn bad_request(text: &str) -> Response<Bytes> {
    message(StatusCode::BAD_REQUEST, "Bad request", text)
}

pub fn method_not_allowed() -> Response<Bytes> {
    message(
        StatusCode::METHOD_NOT_ALLOWED,
        "Not allowed",
        "This page does not take that method.",
    )
}

pub fn forbidden(repo: &RepoName) -> Response<Bytes> {
    let text = format!("You may not delete from {}.", repo.as_str());
    message(StatusCode::FORBIDDEN, "Forbidden", &text)
}

pub fn forbidden_origin() -> Response<Bytes> {
    message(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "A delete must come from this registry's own page: open it again and confirm there.",
    )
}

pub fn log_in() -> Response<Bytes> {
    let mut response = message(
        StatusCode::UNAUTHORIZED,
        "Log in",
        "This registry asks for a user name and password.",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Basic realm=\"berth\", charset=\"UTF-8\""),
    );
    response
}

pub fn too_many() -> Response<Bytes> {
    message(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many tries",
        "Too many failed logins from here: wait a while and try again.",
    )
}

pub fn error(e: &store::Error) -> Response<Bytes> {
    match e {
        store::Error::NameUnknown => not_found("No such repository here."),
        store::Error::ManifestUnknown => not_found("No such tag or manifest here."),
        e => {
            log::error!("a page failed: {e}");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something failed",
                "The registry could not read this; its log says why.",
            )
        }
    }
}

pub fn see_other(location: &str) -> Response<Bytes> {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, location)
        .body(Bytes::new())
        .expect("valid response")
}

pub fn repository_path(repo: &RepoName) -> String {
    format!("/r/{}", repo.as_str())
}

fn manifest_path(repo: &RepoName, digest: &str) -> String {
    format!("/r/{}/-/manifest/{digest}", repo.as_str())
}

fn delete_path(repo: &RepoName, key: &str, value: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair(key, value)
        .finish();
    format!("/r/{}/-/delete?{query}", repo.as_str())
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            query.append_pair(k, v);
        }
    }
    query.finish()
}

/// `docker pull` and `podman pull` lines, selected whole by one click.
fn pull(host: &str, image: &str) -> Markup {
    html! {
        div.pull {
            code { "docker pull " (host) "/" (image) }
            code { "podman pull " (host) "/" (image) }
        }
    }
}

pub fn home(names: &[String], more: bool, filter: &str, namespaces: &[Stats]) -> Response<Bytes> {
    let body = html! {
        h1 { "Repositories" }
        @if !namespaces.is_empty() {
            section.namespaces {
                h2 { "Mirrored upstreams" }
                table {
                    thead { tr { th { "Namespace" } th { "Upstream" } th { "Hits" } th { "Misses" } } }
                    tbody {
                        @for ns in namespaces {
                            tr {
                                td { (ns.namespace) }
                                td { (ns.upstream) }
                                td.num { (ns.hits) }
                                td.num { (ns.misses) }
                            }
                        }
                    }
                }
                p.hint { "Pull " code { "HOST/NAMESPACE/REPOSITORY:TAG" } " to fetch through the cache." }
            }
        }
        form.filter method="get" action="/" {
            label for="q" { "Filter" }
            input #q type="search" name="q" value=(filter) placeholder="part of a name";
            button type="submit" { "Filter" }
        }
        @if names.is_empty() {
            p.empty { "No repositories" @if !filter.is_empty() { " match " code { (filter) } } "." }
        } @else {
            ul.repos {
                @for name in names {
                    li { a href=(format!("/r/{name}")) { (name) } }
                }
            }
        }
        @if more {
            @let last = names.last().map(String::as_str).unwrap_or("");
            a.next href=(format!("/?{}", query(&[("q", filter), ("after", last)]))) { "Next page →" }
        }
    };
    page(StatusCode::OK, "Repositories", body)
}

pub fn repository(
    repo: &RepoName,
    tags: &[TagSummary],
    more: bool,
    host: &str,
    may_delete: bool,
) -> Response<Bytes> {
    let name = repo.as_str();
    let body = html! {
        nav.crumbs { a href="/" { "Repositories" } " / " (name) }
        h1 { (name) }
        @if tags.is_empty() {
            p.empty { "No tags." }
        }
        @for t in tags {
            article.tag {
                h2 {
                    a href=(manifest_path(repo, &t.digest)) { (t.tag) }
                }
                dl {
                    dt { "Digest" } dd { code title=(t.digest) { (short(&t.digest)) } }
                    dt { "Size" } dd { (size(t.size)) }
                    dt { "Pushed" } dd { (age(t.created)) }
                    dt { "Platforms" }
                    dd {
                        @if t.platforms.is_empty() { "—" }
                        @for p in &t.platforms { span.platform { (p) } " " }
                    }
                }
                (pull(host, &format!("{name}:{}", t.tag)))
                @if may_delete {
                    a.delete href=(delete_path(repo, "tag", &t.tag)) { "Delete tag" }
                }
            }
        }
        @if more {
            @let last = tags.last().map(|t| t.tag.as_str()).unwrap_or("");
            a.next href=(format!("/r/{name}?{}", query(&[("after", last)]))) { "Next page →" }
        }
    };
    page(StatusCode::OK, name, body)
}

pub fn manifest(
    repo: &RepoName,
    view: &ManifestView,
    referrers: &[Referrer],
    host: &str,
    may_delete: bool,
) -> Response<Bytes> {
    let name = repo.as_str();
    let digest = view.digest.as_str();
    let doc: Value = serde_json::from_slice(&view.body).unwrap_or_default();
    let config: Value = view
        .config
        .as_deref()
        .and_then(|c| serde_json::from_slice(c).ok())
        .unwrap_or_default();
    let body = html! {
        nav.crumbs {
            a href="/" { "Repositories" } " / "
            a href=(repository_path(repo)) { (name) } " / "
            (short(digest))
        }
        h1 { (name) }
        dl {
            dt { "Digest" } dd { code { (digest) } }
            dt { "Media type" } dd { (view.media_type) }
            @if let Some(artifact) = doc["artifactType"].as_str() {
                dt { "Artifact type" } dd { (artifact) }
            }
            dt { "Tags" }
            dd {
                @if view.tags.is_empty() { "—" }
                @for tag in &view.tags { span.tag-name { (tag) } " " }
            }
            dt { "Pushed" } dd { (age(view.created)) }
            @if let Some(subject) = doc["subject"]["digest"].as_str() {
                dt { "Refers to" } dd { a href=(manifest_path(repo, subject)) { code { (short(subject)) } } }
            }
        }
        (pull(host, &format!("{name}@{digest}")))
        (annotations(&doc["annotations"]))
        @if let Some(children) = doc["manifests"].as_array() {
            h2 { "Platforms" }
            table {
                thead { tr { th { "Platform" } th { "Manifest" } th { "Size" } } }
                tbody {
                    @for child in children {
                        @let child_digest = child["digest"].as_str().unwrap_or("");
                        tr {
                            td { (crate::oci::manifest::platform(&child["platform"]).unwrap_or_else(|| "—".into())) }
                            td { a href=(manifest_path(repo, child_digest)) { code { (short(child_digest)) } } }
                            td.num { (size(child["size"].as_u64().unwrap_or(0))) }
                        }
                    }
                }
            }
        }
        @if !config.is_null() {
            (config_section(&config))
        }
        @if let Some(layers) = doc["layers"].as_array() {
            h2 { "Layers" }
            table {
                thead { tr { th { "#" } th { "Digest" } th { "Size" } th { "Media type" } } }
                tbody {
                    @for (i, layer) in layers.iter().enumerate() {
                        tr {
                            td.num { (i + 1) }
                            td { code title=(layer["digest"].as_str().unwrap_or("")) { (short(layer["digest"].as_str().unwrap_or(""))) } }
                            td.num { (size(layer["size"].as_u64().unwrap_or(0))) }
                            td { (layer["mediaType"].as_str().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        h2 { "Referrers" }
        @if referrers.is_empty() {
            p.empty { "No signatures, SBOMs or attestations refer to this manifest." }
        } @else {
            table {
                thead { tr { th { "Artifact type" } th { "Manifest" } th { "Size" } } }
                tbody {
                    @for r in referrers {
                        tr {
                            td { (r.artifact_type.as_deref().unwrap_or(&r.media_type)) }
                            td { a href=(manifest_path(repo, &r.digest)) { code { (short(&r.digest)) } } }
                            td.num { (size(r.size)) }
                        }
                    }
                }
            }
        }
        @if may_delete {
            a.delete href=(delete_path(repo, "digest", digest)) { "Delete this manifest" }
        }
    };
    page(StatusCode::OK, name, body)
}

fn annotations(annotations: &Value) -> Markup {
    html! {
        @if let Some(map) = annotations.as_object().filter(|m| !m.is_empty()) {
            h2 { "Annotations" }
            dl.pairs {
                @for (key, value) in map {
                    dt { (key) } dd { (value.as_str().map_or_else(|| value.to_string(), str::to_owned)) }
                }
            }
        }
    }
}

/// What a person wants to know of an image config.
fn config_section(config: &Value) -> Markup {
    let run = &config["config"];
    let words = |v: &Value| -> Option<String> {
        let words: Vec<&str> = v.as_array()?.iter().filter_map(Value::as_str).collect();
        (!words.is_empty()).then(|| words.join(" "))
    };
    html! {
        h2 { "Config" }
        dl {
            @if let Some(platform) = crate::oci::manifest::platform(config) {
                dt { "Platform" } dd { (platform) }
            }
            @if let Some(created) = config["created"].as_str() {
                dt { "Created" } dd { (created) }
            }
            @if let Some(entrypoint) = words(&run["Entrypoint"]) {
                dt { "Entrypoint" } dd { code { (entrypoint) } }
            }
            @if let Some(cmd) = words(&run["Cmd"]) {
                dt { "Command" } dd { code { (cmd) } }
            }
            @if let Some(dir) = run["WorkingDir"].as_str().filter(|d| !d.is_empty()) {
                dt { "Working directory" } dd { code { (dir) } }
            }
            @if let Some(user) = run["User"].as_str().filter(|u| !u.is_empty()) {
                dt { "User" } dd { (user) }
            }
        }
        @if let Some(env) = run["Env"].as_array().filter(|e| !e.is_empty()) {
            h3 { "Environment" }
            ul.env { @for var in env { li { code { (var.as_str().unwrap_or("")) } } } }
        }
        @if let Some(labels) = run["Labels"].as_object().filter(|l| !l.is_empty()) {
            h3 { "Labels" }
            dl.pairs {
                @for (key, value) in labels {
                    dt { (key) } dd { (value.as_str().unwrap_or("")) }
                }
            }
        }
    }
}

pub fn confirm_delete(repo: &RepoName, target: &Reference, token: &str) -> Response<Bytes> {
    let (key, what) = match target {
        Reference::Tag(tag) => ("tag", format!("tag {}", tag.as_str())),
        Reference::Digest(digest) => (
            "digest",
            format!(
                "manifest {} and every tag that points at it",
                digest.as_str()
            ),
        ),
    };
    let body = html! {
        nav.crumbs { a href="/" { "Repositories" } " / " a href=(repository_path(repo)) { (repo.as_str()) } }
        h1 { "Delete?" }
        p { "Delete " strong { (what) } " from " strong { (repo.as_str()) } "? This cannot be undone." }
        form.confirm method="post" action=(format!("/r/{}/-/delete", repo.as_str())) {
            input type="hidden" name=(key) value=(target.as_str());
            input type="hidden" name="token" value=(token);
            button.danger type="submit" { "Delete" }
            " "
            a href=(repository_path(repo)) { "Cancel" }
        }
    };
    page(StatusCode::OK, "Delete?", body)
}
