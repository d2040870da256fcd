//! The object store: blob bytes and upload pieces as S3 objects, through
//! the AWS SDK (path-style addressing, so any S3-compatible store works).

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use super::super::{Error, Result};
use super::compose::{self, Part};

/// Where blobs go: `s3://BUCKET[/PREFIX]?endpoint=URL&region=REGION`, with
/// the access key from the environment or a credentials file.
#[derive(Clone)]
pub struct ObjectSettings {
    pub bucket: String,
    /// Put before every key, so several registries may share a bucket.
    pub prefix: String,
    /// The most parts the store takes in one multipart upload.
    pub max_parts: usize,
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for ObjectSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSettings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl ObjectSettings {
    /// Reads `s3://BUCKET[/PREFIX]?endpoint=URL&region=REGION[&max_parts=N]`
    /// (`max_parts`: the most parts the store takes in one multipart
    /// upload; Swift's default, 1000, unless given). The key comes from
    /// `credentials` (an AWS-style file: `aws_access_key_id = ...` and
    /// `aws_secret_access_key = ...`) or else from `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`: never from the command line.
    pub fn parse(
        url: &str,
        credentials: Option<&std::path::Path>,
    ) -> std::result::Result<ObjectSettings, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} is not an s3://BUCKET?endpoint=URL URL"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(format!("{url:?} names no bucket"));
        }
        let mut endpoint = None;
        let mut region = "us-east-1".to_owned();
        let mut max_parts = compose::MAX_PARTS;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "endpoint" => endpoint = Some(value.into_owned()),
                "region" => region = value.into_owned(),
                "max_parts" => {
                    max_parts = value
                        .parse()
                        .ok()
                        .filter(|n| (2..=10_000).contains(n))
                        .ok_or_else(|| {
                            format!("max_parts={value} is not a number from 2 to 10000")
                        })?;
                }
                other => return Err(format!("unknown s3 URL parameter {other:?}")),
            }
        }
        let endpoint = endpoint.ok_or_else(|| format!("{url:?} needs endpoint=URL"))?;
        let (access_key, secret_key) = match credentials {
            Some(path) => read_credentials(path)?,
            None => match (
                std::env::var("AWS_ACCESS_KEY_ID"),
                std::env::var("AWS_SECRET_ACCESS_KEY"),
            ) {
                (Ok(a), Ok(s)) => (a, s),
                _ => {
                    return Err("the object store's key: set AWS_ACCESS_KEY_ID and \
                         AWS_SECRET_ACCESS_KEY, or name a credentials file"
                        .into());
                }
            },
        };
        Ok(ObjectSettings {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            max_parts,
            endpoint,
            region,
            access_key,
            secret_key,
        })
    }
}

fn read_credentials(path: &std::path::Path) -> std::result::Result<(String, String), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading credentials {}: {e}", path.display()))?;
    let (mut access, mut secret) = (None, None);
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key.trim() {
            "aws_access_key_id" => access = Some(value.trim().to_owned()),
            "aws_secret_access_key" => secret = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    access.zip(secret).ok_or_else(|| {
        format!(
            "{} needs aws_access_key_id and aws_secret_access_key lines",
            path.display()
        )
    })
}

/// A time the object store gave, in milliseconds since the epoch; none
/// counts as now, so nothing is taken for old that is not known to be.
fn millis(at: Option<&aws_sdk_s3::primitives::DateTime>) -> u64 {
    at.and_then(|t| t.to_millis().ok())
        .and_then(|ms| u64::try_from(ms).ok())
        .unwrap_or_else(super::super::meta::now)
}

fn failed<E>(what: &str, key: &str, e: aws_sdk_s3::error::SdkError<E>) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    Error::Objects(format!("{what} {key}: {}", DisplayErrorContext(e)))
}

/// An S3 client of the store `settings` names, as berth uses it (also for
/// the tests and the bench, which look at the store beside berth).
pub fn client(settings: &ObjectSettings) -> Client {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(settings.region.clone()))
        .endpoint_url(&settings.endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            &settings.access_key,
            &settings.secret_key,
            None,
            None,
            "berth",
        ))
        .http_client(http)
        // Checksums only where S3 requires them: otherwise the SDK sends
        // aws-chunked bodies, which S3-compatible stores (Swift) refuse.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    Client::from_conf(config)
}

pub(super) struct Objects {
    client: Client,
    bucket: String,
    /// Empty, or the settings' prefix and a slash.
    prefix: String,
    max_parts: usize,
}

impl Objects {
    /// Connects, creating the bucket if it is missing.
    pub(super) async fn connect(settings: &ObjectSettings) -> Result<Objects> {
        let objects = Objects {
            client: client(settings),
            bucket: settings.bucket.clone(),
            prefix: match settings.prefix.as_str() {
                "" => String::new(),
                prefix => format!("{prefix}/"),
            },
            max_parts: settings.max_parts,
        };
        if objects.probe().await.is_err() {
            match objects
                .client
                .create_bucket()
                .bucket(&objects.bucket)
                .send()
                .await
            {
                Ok(_) => log::info!("created bucket {}", objects.bucket),
                Err(e)
                    if matches!(
                        e.code(),
                        Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                    ) => {}
                Err(e) => return Err(failed("creating bucket", &objects.bucket, e)),
            }
        }
        Ok(objects)
    }

    /// The object key for a key of the store.
    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Whether the bucket answers.
    pub(super) async fn probe(&self) -> Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| failed("reaching bucket", &self.bucket, e))?;
        Ok(())
    }

    /// Writes an object whole; once this returns, the store holds it.
    pub(super) async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        let len = i64::try_from(bytes.len()).expect("objects are far below i64::MAX");
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .content_length(len)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| failed("writing", key, e))?;
        Ok(())
    }

    /// `len` bytes of an object from `start`, as they arrive.
    pub(super) async fn get(&self, key: &str, start: u64, len: u64) -> Result<ByteStream> {
        if len == 0 {
            return Ok(ByteStream::from_static(b""));
        }
        let answer = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .range(format!("bytes={start}-{}", start + len - 1))
            .send()
            .await
            .map_err(|e| failed("reading", key, e))?;
        if answer.content_length() != Some(super::signed(len)) {
            return Err(Error::Corrupt(format!(
                "object {key} gave {:?} bytes for a range of {len}",
                answer.content_length()
            )));
        }
        Ok(answer.body)
    }

    /// An object's size and digest in `algorithm`, read through once;
    /// `None` if there is no such object.
    pub(super) async fn hash(
        &self,
        key: &str,
        algorithm: crate::oci::Algorithm,
    ) -> Result<Option<(u64, crate::oci::Digest)>> {
        let answer = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
        {
            Ok(answer) => answer,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None);
            }
            Err(e) => return Err(failed("reading", key, e)),
        };
        let mut body = answer.body;
        let mut hasher = crate::oci::Hasher::new(algorithm);
        let mut size = 0u64;
        while let Some(bytes) = body
            .try_next()
            .await
            .map_err(|e| Error::Objects(format!("reading {key}: {e}")))?
        {
            hasher.update(&bytes);
            size += bytes.len() as u64;
        }
        Ok(Some((size, hasher.digest())))
    }

    /// Copies an object whole (at most [`compose::MAX_COPY`] bytes).
    pub(super) async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(self.full(to))
            .copy_source(format!("{}/{}", self.bucket, self.full(from)))
            .send()
            .await
            .map_err(|e| failed("copying to", to, e))?;
        Ok(())
    }

    /// `len` bytes of an object from `start`, in memory.
    pub(super) async fn read(&self, key: &str, start: u64, len: u64) -> Result<Bytes> {
        let body = self.get(key, start, len).await?;
        let bytes = body
            .collect()
            .await
            .map_err(|e| Error::Objects(format!("reading {key}: {e}")))?
            .into_bytes();
        if bytes.len() as u64 != len {
            return Err(Error::Corrupt(format!(
                "object {key} is short: {} bytes of {len}",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// Removes an object; one already gone is no error.
    pub(super) async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(|e| failed("removing", key, e))?;
        Ok(())
    }

    /// Every object under `prefix` (a key of the store): its key, and when
    /// it was last written (milliseconds since the epoch).
    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full(prefix))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| failed("listing", prefix, e))?;
            for object in page.contents() {
                if let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) {
                    out.push((key.to_owned(), millis(object.last_modified())));
                }
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(next)) => token = Some(next.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    /// Aborts the multipart uploads under this store's keys started at or
    /// before `cutoff`: what a node that died while composing left behind
    /// (object stores keep them, and their parts, until told).
    pub(super) async fn abort_stale_multipart(&self, cutoff: u64) -> Result<usize> {
        let mut aborted = 0;
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| failed("listing multipart uploads in", &self.bucket, e))?;
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                if millis(upload.initiated()) > cutoff {
                    continue;
                }
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .map_err(|e| failed("aborting the multipart upload of", key, e))?;
                aborted += 1;
            }
            match (page.is_truncated(), page.next_key_marker()) {
                (Some(true), Some(next)) => {
                    key_marker = Some(next.to_owned());
                    id_marker = page.next_upload_id_marker().map(str::to_owned);
                }
                _ => return Ok(aborted),
            }
        }
    }

    /// Makes `dst` the concatenation of `pieces` (key and size each),
    /// inside the object store where it can: see [`compose::plan`].
    pub(super) async fn compose(&self, dst: &str, pieces: &[(String, u64)]) -> Result<()> {
        match pieces {
            [] => return self.put(dst, Bytes::new()).await,
            [(key, size)] if *size <= compose::MAX_COPY => return self.copy(key, dst).await,
            _ => {}
        }
        let sizes: Vec<u64> = pieces.iter().map(|(_, size)| *size).collect();
        let parts = match compose::plan(&sizes, self.max_parts) {
            Ok(parts) => parts,
            Err(too_many) => {
                return Box::pin(self.compose_in_runs(dst, pieces, &sizes, too_many)).await;
            }
        };
        let started = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full(dst))
            .send()
            .await
            .map_err(|e| failed("starting a multipart upload of", dst, e))?;
        let upload_id = started
            .upload_id()
            .ok_or_else(|| Error::Objects(format!("no upload id for {dst}")))?
            .to_owned();
        match self.send_parts(dst, &upload_id, pieces, &parts).await {
            Ok(done) => {
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(self.full(dst))
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(done))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| failed("completing", dst, e))?;
                Ok(())
            }
            Err(e) => {
                let aborted = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(self.full(dst))
                    .upload_id(&upload_id)
                    .send()
                    .await;
                if let Err(abort) = aborted {
                    log::warn!("aborting the multipart upload of {dst}: {abort}");
                }
                Err(e)
            }
        }
    }

    /// Joins runs of pieces into objects of their own, then those into
    /// `dst`; the objects in between go afterwards, and ones a crash
    /// leaves are orphans a prune removes (they live under `uploads/`).
    async fn compose_in_runs(
        &self,
        dst: &str,
        pieces: &[(String, u64)],
        sizes: &[u64],
        too_many: String,
    ) -> Result<()> {
        let runs = compose::groups(sizes, self.max_parts)
            // Runs no fewer than the pieces would never end.
            .filter(|runs| runs.len() < pieces.len())
            .ok_or(Error::Objects(too_many))?;
        let scratch = format!("uploads/compose-{}", uuid::Uuid::new_v4());
        let mut joined = Vec::with_capacity(runs.len());
        let mut result = Ok(());
        for (n, run) in runs.into_iter().enumerate() {
            let key = format!("{scratch}/{n}");
            let size = sizes[run.clone()].iter().sum();
            result = Box::pin(self.compose(&key, &pieces[run])).await;
            if result.is_err() {
                break;
            }
            joined.push((key, size));
        }
        if result.is_ok() {
            result = Box::pin(self.compose(dst, &joined)).await;
        }
        for (key, _) in &joined {
            if let Err(e) = self.delete(key).await {
                log::warn!("removing {key}: {e}");
            }
        }
        result
    }

    async fn send_parts(
        &self,
        dst: &str,
        upload_id: &str,
        pieces: &[(String, u64)],
        parts: &[Part],
    ) -> Result<Vec<CompletedPart>> {
        let mut done = Vec::with_capacity(parts.len());
        for (n, part) in parts.iter().enumerate() {
            let number = i32::try_from(n + 1).expect("at most compose::MAX_PARTS parts");
            let etag = match part {
                Part::Copy(segment) => {
                    let answer = self
                        .client
                        .upload_part_copy()
                        .bucket(&self.bucket)
                        .key(self.full(dst))
                        .upload_id(upload_id)
                        .part_number(number)
                        .copy_source(format!(
                            "{}/{}",
                            self.bucket,
                            self.full(&pieces[segment.piece].0)
                        ))
                        .copy_source_range(format!("bytes={}-{}", segment.start, segment.end - 1))
                        .send()
                        .await
                        .map_err(|e| failed("copying a part into", dst, e))?;
                    answer
                        .copy_part_result()
                        .and_then(|r| r.e_tag())
                        .map(str::to_owned)
                }
                Part::Upload(segments) => {
                    let mut bytes = bytes::BytesMut::new();
                    for s in segments {
                        let key = &pieces[s.piece].0;
                        bytes.extend_from_slice(&self.read(key, s.start, s.end - s.start).await?);
                    }
                    let len = super::signed(bytes.len() as u64);
                    let answer = self
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(self.full(dst))
                        .upload_id(upload_id)
                        .part_number(number)
                        .content_length(len)
                        .body(ByteStream::from(bytes.freeze()))
                        .send()
                        .await
                        .map_err(|e| failed("writing a part of", dst, e))?;
                    answer.e_tag().map(str::to_owned)
                }
            };
            let etag =
                etag.ok_or_else(|| Error::Objects(format!("part {number} of {dst}: no ETag")))?;
            done.push(
                CompletedPart::builder()
                    .part_number(number)
                    .e_tag(etag)
                    .build(),
            );
        }
        Ok(done)
    }
}
