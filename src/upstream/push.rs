//! Pushing to a registry as a docker client does: a blob by a POST and a
//! streamed PUT (or a cross-repository mount), a manifest by a PUT.

use std::io::{self, Read};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::BodyExt;
use http_body_util::channel::Channel;

use super::{Ask, Result, Upstream, resolve};
use crate::oci::Digest;

/// How much of a blob is read ahead of the connection.
const CHUNK: usize = 1 << 20;

impl<'a> Ask<'a> {
    /// To push to `repo`.
    fn push(method: Method, url: &'a str, repo: &str) -> Ask<'a> {
        Ask::new(method, url, vec![format!("repository:{repo}:pull,push")])
    }
}

impl Upstream {
    /// Gives `repo` the blob `digest` that repository `from` holds,
    /// without its bytes; false when the registry does not mount, and the
    /// blob must be uploaded.
    pub async fn mount(&self, repo: &str, digest: &Digest, from: &str) -> Result<bool> {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("mount", digest.as_str())
            .append_pair("from", from)
            .finish();
        let url = format!("{}/v2/{repo}/blobs/uploads/?{query}", self.base);
        let mut ask = Ask::push(Method::POST, &url, repo);
        ask.scopes.push(format!("repository:{from}:pull"));
        let resp = self.send(&ask).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // A session was opened instead: it is not needed.
                if let Some(location) = self.location(&resp, &url) {
                    let ask = Ask::push(Method::DELETE, &location, repo);
                    let _ = self.send(&ask).await;
                }
                Ok(false)
            }
            _ => self.expect_ok(&resp).map(|()| false),
        }
    }

    /// Uploads blob `digest` of `size` bytes into `repo`, read from
    /// `reader` as the connection takes them. The registry checks the
    /// digest; a reader that fails or ends early aborts the upload.
    pub async fn push_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        reader: Box<dyn Read + Send>,
    ) -> Result<()> {
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let resp = self.send(&Ask::push(Method::POST, &url, repo)).await?;
        self.expect_status(&resp, StatusCode::ACCEPTED)?;
        let location = self
            .location(&resp, &url)
            .ok_or_else(|| self.invalid("an upload without a Location".into()))?;
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={digest}");
        let ask = Ask::push(Method::PUT, &url, repo)
            .header(header::CONTENT_TYPE, "application/octet-stream".into())
            .header(header::CONTENT_LENGTH, size.to_string());
        // The POST logged in for this scope; a stream cannot be sent twice.
        let authorization = self.cached_token(&ask.scope());
        let (sender, body) = Channel::<Bytes, io::Error>::new(4);
        let req = self.build(&ask, authorization.as_deref(), body.boxed())?;
        let stall = self.read_timeout();
        let mut feed = tokio::task::spawn_blocking(move || feed(reader, size, sender, stall));
        let request = self.connector.client.request(req);
        tokio::pin!(request);
        let answer = tokio::select! {
            answer = &mut request => answer,
            fed = &mut feed => {
                if let Err(why) = fed.expect("the feeder does not panic") {
                    return Err(self.unreachable(format!("sending {digest}: {why}")));
                }
                // All is sent: the answer comes within the read timeout.
                tokio::time::timeout(stall, &mut request)
                    .await
                    .map_err(|_| self.timeout())?
            }
        };
        let resp = answer.map_err(|e| self.unreachable(super::error_chain(&e)))?;
        self.expect_status(&resp, StatusCode::CREATED)
    }

    /// Puts a manifest into `repo` under `reference` (a tag or its digest).
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: Vec<u8>,
    ) -> Result<()> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let ask = Ask::push(Method::PUT, &url, repo)
            .header(header::CONTENT_TYPE, media_type.to_owned())
            .with_body(Bytes::from(body));
        let resp = self.send(&ask).await?;
        self.expect_status(&resp, StatusCode::CREATED)
    }

    fn location(&self, resp: &http::Response<hyper::body::Incoming>, url: &str) -> Option<String> {
        let location = resp.headers().get(header::LOCATION)?.to_str().ok()?;
        resolve(url, location)
    }

    fn expect_status(
        &self,
        resp: &http::Response<hyper::body::Incoming>,
        want: StatusCode,
    ) -> Result<()> {
        self.expect_ok(resp)?;
        if resp.status() == want {
            Ok(())
        } else {
            Err(self.invalid(format!("{} where {want} was due", resp.status())))
        }
    }
}

/// Reads `reader` into the request body; a read error, an early end, or
/// a connection that takes nothing for `stall` aborts the body.
fn feed(
    mut reader: Box<dyn Read + Send>,
    size: u64,
    mut sender: http_body_util::channel::Sender<Bytes, io::Error>,
    stall: Duration,
) -> io::Result<()> {
    let runtime = tokio::runtime::Handle::current();
    let mut sent = 0u64;
    while sent < size {
        let mut buf = vec![0u8; CHUNK.min((size - sent) as usize)];
        let read = match reader.read(&mut buf) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("ended after {sent} of {size} bytes"),
            )),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                sender.abort(io::Error::new(e.kind(), e.to_string()));
                return Err(e);
            }
        };
        buf.truncate(n);
        sent += n as u64;
        let sending = tokio::time::timeout(stall, sender.send_data(Bytes::from(buf)));
        match runtime.block_on(sending) {
            Ok(Ok(())) => {}
            // The request ended: its own error tells why.
            Ok(Err(_)) => return Ok(()),
            Err(_) => {
                let e =
                    io::Error::new(io::ErrorKind::TimedOut, format!("no progress in {stall:?}"));
                sender.abort(io::Error::new(e.kind(), e.to_string()));
                return Err(e);
            }
        }
    }
    Ok(())
}
