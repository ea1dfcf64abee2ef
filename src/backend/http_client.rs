//! The HTTP client that reaches HTTP backends: `hyper-util`'s pooled client over rustls (the
//! platform's certificate verifier, as reqwest's), HTTP/1.1 and HTTP/2.
//!
//! Not reqwest, which the gateway uses for everything else (JWKS, webhooks), because reqwest
//! has no setting for a connection's read buffer: hyper grows it up to ~400 KB while reads fill
//! it (a 1 MB result over loopback does), and keeps it with the pooled connection. With 1 MB
//! results at 256 clients, those buffers were most of the gateway's memory (docs/performance.md).
//! Here it is bounded by `READ_BUF_MAX`; the rest is what reqwest configured: connect timeout,
//! idle timeout of pooled connections, `TCP_NODELAY`, the `User-Agent`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// The most a backend connection's read buffer grows to. It must hold a response's header
/// section whole (hyper refuses a longer one), so it is well above any header a backend sends,
/// and still a sixth of hyper's default: a body is read in pieces of this size at most.
const READ_BUF_MAX: usize = 64 * 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct BackendClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    user_agent: HeaderValue,
}

pub type Error = hyper_util::client::legacy::Error;

impl BackendClient {
    /// `user_agent` names the caller (`sentinel/VERSION`, or `... (doctor)`).
    pub fn new(user_agent: &str) -> anyhow::Result<BackendClient> {
        use rustls_platform_verifier::BuilderVerifierExt;
        let mut http = HttpConnector::new();
        // https URLs go through the TLS layer, which gets them as plain TCP first.
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_platform_verifier()?
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .http1_max_buf_size(READ_BUF_MAX)
            .build(https);
        Ok(BackendClient { client, user_agent: HeaderValue::from_str(user_agent)? })
    }

    /// Sends one request; the response's body is read by the caller.
    pub async fn send(
        &self,
        method: Method,
        uri: &Uri,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<Incoming>, Error> {
        headers.entry(http::header::USER_AGENT).or_insert_with(|| self.user_agent.clone());
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri.clone();
        *req.headers_mut() = headers;
        self.client.request(req).await
    }
}

/// The length a response announces, if it does.
pub fn content_length(resp: &Response<Incoming>) -> Option<u64> {
    resp.headers().get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// A response's body as the pieces it arrives in.
pub fn body_stream(resp: Response<Incoming>) -> http_body_util::BodyDataStream<Incoming> {
    use http_body_util::BodyExt;
    resp.into_body().into_data_stream()
}
