//! A stand-in OTLP/HTTP collector for `--governance traced`: it takes every trace export and
//! answers 200 at once, so the gateway's exporter does all of its work (encode, send) and the
//! bench measures what tracing costs the gateway, not what a collector costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;

pub struct Sink {
    /// The base URL for `[telemetry] otlp_endpoint`.
    pub url: String,
    pub requests: Arc<AtomicU64>,
    pub bytes: Arc<AtomicU64>,
}

impl Sink {
    pub async fn start() -> anyhow::Result<Sink> {
        let (requests, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (r, b) = (requests.clone(), bytes.clone());
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                r.fetch_add(1, Ordering::Relaxed);
                b.fetch_add(body.len() as u64, Ordering::Relaxed);
                // An empty body is an empty ExportTraceServiceResponse: everything accepted.
                async { [("content-type", "application/x-protobuf")] }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Sink { url, requests, bytes })
    }

    /// Export requests and bytes received so far.
    pub fn received(&self) -> (u64, u64) {
        (self.requests.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }
}
