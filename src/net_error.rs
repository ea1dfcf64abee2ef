//! What a failed HTTP request says: the cause, named once (a refused connection is "connection
//! refused", not reqwest's "error sending request"), and where — without the URL's query or
//! credentials, which may carry a key.

use std::error::Error;

/// The URL as messages and logs show it: scheme, host, port and path.
pub fn shown_url(url: &reqwest::Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{}{port}{}", url.scheme(), url.host_str().unwrap_or_default(), url.path())
}

/// Why a request to `url` got no answer at all.
pub fn describe(url: &reqwest::Url, e: reqwest::Error) -> String {
    let at = shown_url(url);
    let io_kind = io_cause(&e).map(std::io::Error::kind);
    if io_kind == Some(std::io::ErrorKind::ConnectionRefused) {
        format!("connection refused at {at}")
    } else if e.is_timeout() {
        format!("no answer from {at} in time")
    } else if e.is_connect() {
        format!("cannot connect to {at}: {}", chain(e))
    } else {
        format!("request to {at} failed: {}", chain(e))
    }
}

/// Why a request to a backend at `url` got no answer at all (the backend client's error).
pub fn describe_backend(url: &reqwest::Url, e: &crate::backend::http_client::Error) -> String {
    let at = shown_url(url);
    match io_cause(e).map(std::io::Error::kind) {
        Some(std::io::ErrorKind::ConnectionRefused) => format!("connection refused at {at}"),
        Some(std::io::ErrorKind::TimedOut) => format!("no answer from {at} in time"),
        _ if e.is_connect() => format!("cannot connect to {at}: {}", causes(e)),
        _ => format!("request to {at} failed: {}", causes(e)),
    }
}

/// The error and its causes, `: `-separated, without the URL.
pub fn chain(e: reqwest::Error) -> String {
    causes(&e.without_url())
}

/// An error and its causes, `: `-separated (none of the backend client's errors name the URL).
pub fn causes(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        // hyper and reqwest often repeat their cause's words in their own.
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

fn io_cause<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a std::io::Error> {
    let mut source: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_says_so_and_where() {
        // A port nobody listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}/mcp?key=s3cret")).unwrap();
        let e = reqwest::Client::new().post(url.clone()).send().await.unwrap_err();
        let text = describe(&url, e);
        assert_eq!(text, format!("connection refused at http://127.0.0.1:{port}/mcp"));
        let client = crate::backend::http_client::BackendClient::new("sentinel-test").unwrap();
        let uri: http::Uri = url.as_str().parse().unwrap();
        let e = client.send(http::Method::POST, &uri, Default::default(), Default::default()).await.unwrap_err();
        assert_eq!(describe_backend(&url, &e), format!("connection refused at http://127.0.0.1:{port}/mcp"));
    }
}
