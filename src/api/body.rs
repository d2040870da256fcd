//! Request and response bodies. No thread ever waits on a client: a
//! download reads its next chunk only once the client has taken the last
//! one, and an upload hands the store each batch of bytes only once it has
//! arrived. Memory per transfer stays a chunk or two
//! whatever the blob size, and a client that stops moving holds no thread.

use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use tokio::task::JoinHandle;

use crate::conn::Transfer;
use crate::mirror::ChunkStream;
use crate::pace::Pace;
use crate::store::{self, Appender};

pub type ResBody = BoxBody<Bytes, io::Error>;

/// Read size for blob downloads. Large chunks are what lets a pull go at
/// loopback speed; a stalled download holds one in hyper, beside less than
/// hyper's 128 KiB buffer (see server.rs), and READ_BUDGET below bounds
/// what many hold together. 1 MiB pulled 10-29% faster, but the rate
/// watchdog counts a download's bytes a whole chunk at a time, as the
/// client takes it: a client must take a chunk per window (60 s), so 1 MiB
/// would cut clients slower than about 17 KiB/s, where this cuts those
/// slower than about 6.4 KiB/s.
const READ_SIZE: usize = 384 << 10;
/// What all file downloads together hold in chunks, at most, once there
/// are so many that each cannot have a whole READ_SIZE (more than ten):
/// 64 clients pulling at once took 43 MiB of RSS with 384 KiB each, and
/// smaller chunks cost them little, since they share the cores anyway.
const READ_BUDGET: usize = 4 << 20;
const MIN_READ_SIZE: usize = 64 << 10;
/// File downloads under way in this process.
static DOWNLOADS: AtomicUsize = AtomicUsize::new(0);

fn read_size() -> usize {
    (READ_BUDGET / DOWNLOADS.load(Ordering::Relaxed).max(1)).clamp(MIN_READ_SIZE, READ_SIZE)
}
/// An upload hands the store at most this much at once. Up to four
/// batches of a push are alive at once: one arriving, one being written,
/// one queued for hashing and one being hashed (see store/hashing.rs).
/// Four of 768 KiB hold what three of 1 MiB did before the hashing queue,
/// so peak RSS stays under 16 MiB through the bench's pushes.
const BATCH_BYTES: usize = 768 << 10;

pub fn full(bytes: impl Into<Bytes>) -> ResBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> ResBody {
    full(Bytes::new())
}

/// What a response body keeps until it is done (sent or dropped), told
/// the size of each data frame on the way.
pub trait Keep: Unpin {
    fn sent(&self, _bytes: u64) {}
}

/// A response body with what it keeps. A struct rather than
/// `map_frame(..).boxed()`: every answer had two of those wrappers, each
/// an allocation and a dynamic call per frame. Unlike them it passes the
/// body's size on, so hyper writes a known length itself.
pub struct Kept<B, K> {
    body: B,
    keeper: K,
}

impl<B, K> Kept<B, K> {
    pub fn new(body: B, keeper: K) -> Kept<B, K> {
        Kept { body, keeper }
    }
}

impl Keep for Arc<crate::ops::Exchange> {
    fn sent(&self, bytes: u64) {
        crate::ops::Exchange::sent(self, bytes);
    }
}

impl<B, K> HttpBody for Kept<B, K>
where
    B: HttpBody<Data = Bytes> + Unpin,
    K: Keep,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
        {
            this.keeper.sent(data.len() as u64);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// `len` bytes of a blob file from `offset`, read a chunk at a time as
/// hyper asks for it: straight from the page cache when the bytes are
/// there, else on a blocking thread, so no thread ever waits on the client
/// and an async thread never waits on the disk.
struct FileBody {
    file: Arc<File>,
    /// Where the next chunk starts, and where the range ends.
    next: u64,
    end: u64,
    /// A read the page cache could not serve, on a blocking thread.
    reading: Option<JoinHandle<io::Result<Bytes>>>,
    meter: Meter,
}

impl Drop for FileBody {
    fn drop(&mut self) {
        DOWNLOADS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FileBody {
    fn hand(&mut self, chunk: Bytes) -> Frame<Bytes> {
        self.next += chunk.len() as u64;
        self.meter.hand(chunk)
    }
}

/// What a download tells the connection's watchdog: how much the client
/// has taken, and whether the server is the one keeping it waiting.
struct Meter {
    transfer: Option<Arc<Transfer>>,
    /// The chunk last handed out: the client has taken it once hyper asks
    /// for the next.
    handed: u64,
}

impl Meter {
    fn new(transfer: Option<Arc<Transfer>>) -> Meter {
        Meter {
            transfer,
            handed: 0,
        }
    }

    /// Called as hyper asks for the next chunk.
    fn taken(&mut self) {
        if let Some(transfer) = &self.transfer {
            transfer.moved(std::mem::take(&mut self.handed));
        }
    }

    fn server_busy(&self, busy: bool) {
        if let Some(transfer) = &self.transfer {
            transfer.server_busy(busy);
        }
    }

    fn hand(&mut self, chunk: Bytes) -> Frame<Bytes> {
        self.handed = chunk.len() as u64;
        Frame::data(chunk)
    }
}

impl HttpBody for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        this.meter.taken();
        if this.reading.is_none() {
            if this.next >= this.end {
                return Poll::Ready(None);
            }
            let want = usize::try_from(this.end - this.next)
                .unwrap_or(usize::MAX)
                .min(read_size());
            match store::read_chunk(&this.file, this.next, want, true) {
                Ok(chunk) => {
                    this.meter.server_busy(false);
                    return Poll::Ready(Some(Ok(this.hand(chunk))));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let (file, at) = (Arc::clone(&this.file), this.next);
                    this.reading = Some(tokio::task::spawn_blocking(move || {
                        store::read_chunk(&file, at, want, false)
                    }));
                }
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
        let reading = this.reading.as_mut().expect("a read is under way");
        let polled = Pin::new(reading).poll(cx);
        this.meter.server_busy(polled.is_pending());
        let chunk = match polled {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(joined) => joined.unwrap_or_else(|e| Err(io::Error::other(e))),
        };
        this.reading = None;
        Poll::Ready(Some(chunk.map(|chunk| this.hand(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end.saturating_sub(self.next))
    }
}

/// Bytes that arrive from elsewhere: a blob's first pull through a
/// mirror, or a clustered store's object.
trait Chunks: Send + Sync + Unpin + 'static {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>>;
}

impl Chunks for ChunkStream {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        self.poll_next(cx)
    }
}

impl Chunks for store::cluster::ObjectStream {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        self.poll_next(cx)
    }
}

struct StreamBody<S> {
    stream: S,
    meter: Meter,
}

impl<S: Chunks> HttpBody for StreamBody<S> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        this.meter.taken();
        let polled = this.stream.poll_chunk(cx);
        // Waiting on the upstream or the object store is not the client's fault.
        this.meter.server_busy(polled.is_pending());
        polled.map(|piece| piece.map(|bytes| bytes.map(|bytes| this.meter.hand(bytes))))
    }
}

/// A blob's first pull through a mirror, as the fetch hands it over.
pub fn fetched(stream: ChunkStream, transfer: Option<Arc<Transfer>>) -> ResBody {
    StreamBody {
        stream,
        meter: Meter::new(transfer),
    }
    .boxed()
}

/// A range of a clustered store's object, as it arrives.
pub fn object(stream: store::cluster::ObjectStream, transfer: Option<Arc<Transfer>>) -> ResBody {
    StreamBody {
        stream,
        meter: Meter::new(transfer),
    }
    .boxed()
}

/// Streams `len` bytes of `file` from `offset`; `transfer`, if given, is
/// told how the download moves.
pub fn file_range(file: File, offset: u64, len: u64, transfer: Option<Arc<Transfer>>) -> ResBody {
    DOWNLOADS.fetch_add(1, Ordering::Relaxed);
    FileBody {
        file: Arc::new(file),
        next: offset,
        end: offset + len,
        reading: None,
        meter: Meter::new(transfer),
    }
    .boxed()
}

/// A request body read against a minimum rate (see [`Pace`]): each window
/// must bring its bytes (or the end), or reading fails.
pub struct Frames {
    body: Incoming,
    /// Told of every byte read, for the metrics and the access log.
    exchange: Option<Arc<crate::ops::Exchange>>,
    pace: Pace,
}

impl Frames {
    pub fn new(body: Incoming, window: Duration, min_bytes: u64) -> Frames {
        Frames {
            body,
            exchange: None,
            pace: Pace::new(min_bytes, window),
        }
    }

    pub fn counted(mut self, exchange: Option<Arc<crate::ops::Exchange>>) -> Frames {
        self.exchange = exchange;
        self
    }

    /// The next data chunk, `None` at the end.
    pub async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            match tokio::time::timeout_at(self.pace.deadline().into(), self.body.frame()).await {
                Ok(None) => return None,
                Ok(Some(Err(e))) => return Some(Err(io::Error::other(e))),
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => {
                        self.pace.moved(data.len());
                        if let Some(exchange) = &self.exchange {
                            exchange.received(data.len() as u64);
                        }
                        return Some(Ok(data));
                    }
                    _ => continue,
                },
                Err(_) => {
                    if let Err(why) = self.pace.next_window() {
                        let why = format!("the body is too slow: {why}");
                        return Some(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
                    }
                }
            }
        }
    }

    /// The chunks that have arrived: waits for one, then takes what else
    /// is already there, up to [`BATCH_BYTES`]. Empty at the end.
    async fn batch(&mut self) -> io::Result<Vec<Bytes>> {
        let mut batch = Vec::new();
        let mut size = 0;
        if let Some(first) = self.next().await {
            let first = first?;
            size += first.len();
            batch.push(first);
        }
        while size > 0 && size < BATCH_BYTES {
            // A zero timeout polls the frame once: only what is already here.
            match tokio::time::timeout(Duration::ZERO, self.next()).await {
                Ok(Some(chunk)) => {
                    let chunk = chunk?;
                    size += chunk.len();
                    batch.push(chunk);
                }
                Ok(None) | Err(_) => break,
            }
        }
        Ok(batch)
    }
}

/// Below this many bytes, what arrived waits in memory for more before it
/// is written: a body that trickles in costs no blocking thread per byte,
/// and nothing of a request is acknowledged before its end anyway.
pub const MIN_WRITE: usize = 64 << 10;

/// Feeds a request body into `appender`: each batch is written on a
/// blocking thread while the next one arrives. A body that fails leaves the
/// appender to give back what it wrote.
pub async fn feed(mut frames: Frames, appender: Appender) -> store::Result<Appender> {
    let mut idle = Some(appender);
    let mut writing: Option<JoinHandle<(Appender, store::Result<()>)>> = None;
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_len = 0;
    loop {
        let batch = frames.batch().await;
        let end = match batch {
            Ok(batch) => {
                let end = batch.is_empty();
                pending_len += batch.iter().map(Bytes::len).sum::<usize>();
                pending.extend(batch);
                end
            }
            Err(e) => {
                // A failed write says more than the body that failed after it.
                if let Some(write) = writing.take() {
                    let (_, written) = write.await.map_err(join_error)?;
                    written?;
                }
                return Err(store::Error::BodyFailed(e));
            }
        };
        if !end && pending_len < MIN_WRITE {
            continue;
        }
        if let Some(write) = writing.take() {
            let (appender, written) = write.await.map_err(join_error)?;
            written?;
            idle = Some(appender);
        }
        let mut appender = idle.take().expect("the appender is back from its write");
        if pending.is_empty() {
            return Ok(appender);
        }
        let chunks = std::mem::take(&mut pending);
        pending_len = 0;
        let write = tokio::task::spawn_blocking(move || {
            crate::bulk::this_thread();
            let written = appender.write(&chunks);
            (appender, written)
        });
        if end {
            let (appender, written) = write.await.map_err(join_error)?;
            written?;
            return Ok(appender);
        }
        writing = Some(write);
    }
}

/// Reads a whole body that declared a length of at most [`MIN_WRITE`]
/// (hyper ends it there), as the chunks it came in.
pub async fn gather(mut frames: Frames) -> io::Result<Vec<Bytes>> {
    let mut chunks = Vec::new();
    while let Some(chunk) = frames.next().await {
        chunks.push(chunk?);
    }
    Ok(chunks)
}

fn join_error(e: tokio::task::JoinError) -> store::Error {
    store::Error::Internal(e.to_string())
}

/// Reads a whole small body, refusing it once it passes `limit` bytes.
pub async fn collect_limited(mut frames: Frames, limit: usize) -> Result<Vec<u8>, CollectError> {
    let mut out = Vec::new();
    while let Some(data) = frames.next().await {
        let data = data.map_err(CollectError::Failed)?;
        if out.len() + data.len() > limit {
            return Err(CollectError::TooLarge);
        }
        out.extend_from_slice(&data);
    }
    Ok(out)
}

#[derive(Debug)]
pub enum CollectError {
    TooLarge,
    Failed(io::Error),
}
