//! Request and response bodies. Both stream through bounded channels between
//! the async side and a blocking thread, so memory stays flat whatever the
//! blob size.

use std::fs::File;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use tokio::sync::mpsc;

pub type ResBody = BoxBody<Bytes, io::Error>;

/// Chunks in flight between the network and the disk, per request.
const CHANNEL_DEPTH: usize = 2;
/// Reads in flight per download: with the one hyper is sending, enough to
/// keep the socket busy, and little memory.
const READ_AHEAD: usize = 2;
/// Read size for blob downloads: large reads are what lets a pull go at
/// loopback speed rather than syscall speed.
const READ_SIZE: usize = 1 << 20;

pub fn full(bytes: impl Into<Bytes>) -> ResBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> ResBody {
    full(Bytes::new())
}

/// A response body fed by a channel.
struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    remaining: u64,
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                self.remaining = self.remaining.saturating_sub(bytes.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Streams `len` bytes of `file` from `offset`, read on a blocking thread.
pub fn file_range(file: File, offset: u64, len: u64) -> ResBody {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let want = usize::try_from(end - pos)
                .unwrap_or(usize::MAX)
                .min(READ_SIZE);
            let mut buf = BytesMut::zeroed(want);
            let chunk = match file.read_at(&mut buf, pos) {
                Ok(0) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "blob file is short",
                )),
                Ok(n) => {
                    buf.truncate(n);
                    pos += n as u64;
                    Ok(buf.freeze())
                }
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                break;
            }
        }
    });
    ChannelBody { rx, remaining: len }.boxed()
}

/// A request body as the store reads it: an iterator that blocks for the
/// next chunk. Only for use on a blocking thread.
pub struct BlockingBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl Iterator for BlockingBody {
    type Item = io::Result<Bytes>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.blocking_recv()
    }
}

/// Runs `work` on a blocking thread with the request body streaming into it.
/// If `work` stops reading early, the rest of the body is not read.
pub async fn with_body<T, F>(mut body: Incoming, idle: Duration, work: F) -> T
where
    F: FnOnce(&mut BlockingBody) -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let worker = tokio::task::spawn_blocking(move || work(&mut BlockingBody { rx }));
    let pump = async move {
        while let Some(frame) = next_frame(&mut body, idle).await {
            let item = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => Ok(data),
                    Err(_trailers) => continue,
                },
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    };
    let ((), result) = tokio::join!(pump, worker);
    result.expect("store work does not panic")
}

/// The next frame of a request body, or an error once the client has sent
/// nothing for `idle`: a stalled upload must not hold a thread for ever.
async fn next_frame(body: &mut Incoming, idle: Duration) -> Option<io::Result<Frame<Bytes>>> {
    match tokio::time::timeout(idle, body.frame()).await {
        Ok(frame) => frame.map(|f| f.map_err(io::Error::other)),
        Err(_) => Some(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no body bytes for {idle:?}"),
        ))),
    }
}

/// Reads a whole small body, refusing it once it passes `limit` bytes.
pub async fn collect_limited(
    mut body: Incoming,
    limit: usize,
    idle: Duration,
) -> Result<Vec<u8>, CollectError> {
    let mut out = Vec::new();
    while let Some(frame) = next_frame(&mut body, idle).await {
        let frame = frame.map_err(CollectError::Failed)?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(CollectError::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

#[derive(Debug)]
pub enum CollectError {
    TooLarge,
    Failed(io::Error),
}
