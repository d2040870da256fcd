//! The clustered target's object store measured on its own, with the same
//! S3 client berth uses: what bounds the cluster's pull and small pushes.

use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use berth::store::cluster::{ObjectSettings, s3_client};

use crate::cases::random_bytes;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// One GET of a whole object straight from the store, MB/s.
pub fn get_mbps(store: &ObjectSettings, key: &str) -> Result<f64, String> {
    runtime().block_on(async {
        let client = s3_client(store);
        let start = Instant::now();
        let mut body = client
            .get_object()
            .bucket(&store.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| format!("GET {key}: {e}"))?
            .body;
        let mut got = 0usize;
        while let Some(bytes) = body.try_next().await.map_err(|e| e.to_string())? {
            got += bytes.len();
        }
        Ok(got as f64 / start.elapsed().as_secs_f64() / 1e6)
    })
}

/// `clients` tasks each PUTting `per_client` objects of 4-64 KiB (the
/// sizes of case d) straight into the store: objects per second.
pub fn small_puts(
    store: &ObjectSettings,
    clients: usize,
    per_client: usize,
) -> Result<f64, String> {
    runtime().block_on(async {
        let client = s3_client(store);
        let start = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let client = client.clone();
                let bucket = store.bucket.clone();
                tokio::spawn(async move {
                    for i in 0..per_client {
                        let seed = (c * 100_003 + i) as u64 ^ 0xD1;
                        let len = 4096 + (seed.wrapping_mul(2_654_435_761) % (60 * 1024)) as usize;
                        let data = random_bytes(len, seed);
                        client
                            .put_object()
                            .bucket(&bucket)
                            .key(format!("limits/{c}/{i}"))
                            .content_length(len as i64)
                            .body(ByteStream::from(data))
                            .send()
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Ok::<_, String>(())
                })
            })
            .collect();
        for task in tasks {
            task.await.map_err(|e| e.to_string())??;
        }
        Ok((clients * per_client) as f64 / start.elapsed().as_secs_f64())
    })
}
