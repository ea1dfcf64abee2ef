//! `/admin/credentials`: the credential store for automation, for a token with
//! `[credentials] admin_role` (src/gateway/credential_admin.rs).
//!
//! - `GET /admin/credentials[?sub=S][&backend=B]`: `{"credentials": [{subject, backend, key_id,
//!   updated_ms}]}`, never a secret;
//! - `PUT /admin/credentials?sub=S&backend=B` with the secret as the body (at most 16 KiB):
//!   `{"subject", "backend", "replaced"}`;
//! - `DELETE /admin/credentials?sub=S&backend=B`: `{"subject", "backend", "removed": true}`, or 404.
//!
//! Parameters are in the query, not the path: a subject is any string a token's `sub` may hold
//! (`/` and `@` included), and a query takes it percent-encoded without a second routing rule.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::json;

use super::prelude::{bearer, host_origin_ok};
use super::respond::json_response;
use crate::gateway::{AdminError, Gateway};

pub(super) async fn credentials(
    State(gw): State<Arc<Gateway>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(why) = host_origin_ok(&gw, &headers, &uri) {
        return error(StatusCode::FORBIDDEN, why);
    }
    let admin = match gw.credentials_admin(bearer(&headers)).await {
        Ok(sub) => sub,
        Err(e) => return refused(&e),
    };
    let query: HashMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).into_owned().collect();
    let (sub, backend) = (query.get("sub").map(String::as_str), query.get("backend").map(String::as_str));
    let both = || match (sub, backend) {
        (Some(s), Some(b)) => Ok((s, b)),
        _ => Err(AdminError::BadRequest("name the credential: `?sub=SUBJECT&backend=BACKEND`".into())),
    };
    let result = match method {
        Method::GET => gw.credential_list(sub, backend).await.map(|entries| json!({ "credentials": entries })),
        Method::PUT => match both() {
            Ok((s, b)) => gw
                .credential_set(&admin, s, b, &body)
                .await
                .map(|replaced| json!({ "subject": s, "backend": b, "replaced": replaced })),
            Err(e) => Err(e),
        },
        Method::DELETE => match both() {
            Ok((s, b)) => gw
                .credential_remove(&admin, s, b)
                .await
                .map(|()| json!({ "subject": s, "backend": b, "removed": true })),
            Err(e) => Err(e),
        },
        _ => return error(StatusCode::METHOD_NOT_ALLOWED, "GET, PUT or DELETE"),
    };
    match result {
        Ok(v) => json_response(StatusCode::OK, v.to_string()),
        Err(e) => refused(&e),
    }
}

fn refused(e: &AdminError) -> Response {
    let mut r = error(e.status(), &e.to_string());
    if e.status() == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
    }
    r
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({ "error": message }).to_string())
}
