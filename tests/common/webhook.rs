//! A webhook receiver on loopback standing in for alert channels: records every POST.

use std::sync::{Arc, Mutex};

use serde_json::Value;

/// What the webhook server received: (path, body).
pub type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook receiver on loopback; answers 204 to every POST. Returns its base URL.
pub async fn webhook_server() -> (String, Received) {
    let received: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/{*path}",
            axum::routing::post(
                |axum::extract::State(r): axum::extract::State<Received>,
                 axum::extract::Path(path): axum::extract::Path<String>,
                 body: String| async move {
                    r.lock().unwrap().push((path, serde_json::from_str(&body).unwrap_or(Value::Null)));
                    http::StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, received)
}

/// The bodies received on one path.
pub fn bodies(r: &Received, path: &str) -> Vec<Value> {
    r.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, b)| b.clone()).collect()
}
