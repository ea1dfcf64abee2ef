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

/// Why the backend client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TLS configuration (protocol versions, the platform's verifier) was refused.
    #[error("{}", crate::audit::store::chain(.0))]
    Tls(rustls::Error),
    /// The user agent is not a valid header value.
    #[error("{0}")]
    UserAgent(http::header::InvalidHeaderValue),
}

/// Why a request to a backend got no answer (connect, TLS, or the connection broke).
pub type Error = hyper_util::client::legacy::Error;

impl BackendClient {
    /// `user_agent` names the caller (`sentinel/VERSION`, or `... (doctor)`).
    pub fn new(user_agent: &str) -> Result<BackendClient, ClientError> {
        use rustls_platform_verifier::BuilderVerifierExt;
        let mut http = HttpConnector::new();
        // https URLs go through the TLS layer, which gets them as plain TCP first.
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(ClientError::Tls)?
            .with_platform_verifier()
            .map_err(ClientError::Tls)?
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
        Ok(BackendClient { client, user_agent: HeaderValue::from_str(user_agent).map_err(ClientError::UserAgent)? })
    }

    /// Sends one request; the response's body is read by the caller. A redirect that keeps the
    /// method and body (307, 308) to the same origin is followed, as reqwest did: servers built on
    /// Starlette answer `/mcp` with a 307 to `/mcp/`. One to another origin is not (the request
    /// carries the backend's credentials), nor a 301/302/303 (which would turn the POST into a
    /// GET): the caller gets it as an answer that is not JSON-RPC.
    pub async fn send(
        &self,
        method: Method,
        uri: &Uri,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<Incoming>, Error> {
        headers.entry(http::header::USER_AGENT).or_insert_with(|| self.user_agent.clone());
        let mut uri = uri.clone();
        for _ in 0..MAX_REDIRECTS {
            let mut req = Request::new(Full::new(body.clone()));
            *req.method_mut() = method.clone();
            *req.uri_mut() = uri.clone();
            *req.headers_mut() = headers.clone();
            let resp = self.client.request(req).await?;
            match same_origin_redirect(&uri, &resp) {
                Some(next) => uri = next,
                None => return Ok(resp),
            }
        }
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        self.client.request(req).await
    }
}

/// Redirects followed in a row before the last answer is taken as it is (reqwest's default).
const MAX_REDIRECTS: usize = 10;

/// Where a 307/308 answer to a request for `from` points, if that is on the same origin.
fn same_origin_redirect(from: &Uri, resp: &Response<Incoming>) -> Option<Uri> {
    use http::StatusCode;
    if !matches!(resp.status(), StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT) {
        return None;
    }
    let location = resp.headers().get(http::header::LOCATION)?.to_str().ok()?;
    let to: Uri = location.parse().ok()?;
    if to.scheme().is_none() && to.authority().is_none() {
        // A path (with its query) on the same origin.
        let path = to.path_and_query()?.as_str();
        if !path.starts_with('/') {
            return None;
        }
        let mut parts = from.clone().into_parts();
        parts.path_and_query = Some(path.parse().ok()?);
        return Uri::from_parts(parts).ok();
    }
    (to.scheme() == from.scheme() && to.authority() == from.authority()).then_some(to)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers `/mcp` with a redirect to `location`, and echoes `/mcp/`'s body.
    async fn redirecting(location: &'static str) -> String {
        use axum::routing::post;
        let app = axum::Router::new()
            .route(
                "/mcp",
                post(move || async move {
                    (http::StatusCode::TEMPORARY_REDIRECT, [(http::header::LOCATION, location)], "")
                }),
            )
            .route("/mcp/", post(|body: String| async move { body }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/mcp")
    }

    async fn post(url: &str) -> (u16, String) {
        use http_body_util::BodyExt;
        let client = BackendClient::new("sentinel-test").unwrap();
        let resp = client.send(Method::POST, &url.parse().unwrap(), HeaderMap::new(), "ping".into()).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_same_origin_307_is_followed_with_its_body() {
        assert_eq!(post(&redirecting("/mcp/").await).await, (200, "ping".to_string()));
    }

    #[tokio::test]
    async fn a_redirect_to_another_origin_is_not_followed() {
        let url = redirecting("http://127.0.0.2:9/mcp/").await;
        assert_eq!(post(&url).await.0, 307);
    }
}
