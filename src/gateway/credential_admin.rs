//! The credential store for automation (`/admin/credentials`): what `sentinel credentials
//! set|remove|list` does, for a caller whose verified token carries `[credentials] admin_role`.
//!
//! A change takes effect at once on this gateway (its per-user instances read the store again
//! on their next call) and within 30 s on other replicas. Secrets go in and never come out:
//! `list` shows who has one, answers never echo one, and the log line of a change names who made
//! it, for whom and which backend only.

use super::{Caller, Gateway};
use crate::credentials::{MAX_SECRET_BYTES, store};

/// The longest subject or backend name accepted (as the CLI and the audit trail bound them).
const MAX_NAME_BYTES: usize = 256;

/// Why an admin request was not served; each has its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No `[credentials] admin_role` (or no `[credentials]`): the endpoint is off.
    #[error("the credentials admin endpoint is off; set `[credentials] admin_role` to enable it")]
    Off,
    /// No valid token.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// A valid token without the role.
    #[error("your token's roles do not include `{0}`, the role `[credentials] admin_role` names")]
    Forbidden(String),
    /// A parameter or the secret is not acceptable.
    #[error("{0}")]
    BadRequest(String),
    /// The secret is larger than any credential.
    #[error("the secret is longer than {MAX_SECRET_BYTES} bytes")]
    TooLarge,
    /// Nothing to remove.
    #[error("`{subject}` has no credential for `{backend}`")]
    NotFound {
        /// Whose.
        subject: String,
        /// For which backend.
        backend: String,
    },
    /// The store did not answer or refused.
    #[error("the credential store: {0}")]
    Store(String),
}

impl AdminError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            AdminError::Off => S::NOT_FOUND,
            AdminError::Unauthenticated(_) => S::UNAUTHORIZED,
            AdminError::Forbidden(_) => S::FORBIDDEN,
            AdminError::BadRequest(_) => S::BAD_REQUEST,
            AdminError::TooLarge => S::PAYLOAD_TOO_LARGE,
            AdminError::NotFound { .. } => S::NOT_FOUND,
            AdminError::Store(_) => S::SERVICE_UNAVAILABLE,
        }
    }
}

impl Gateway {
    /// Who may use the endpoint: the `sub` of a verified token with the admin role.
    pub async fn credentials_admin(&self, bearer: Option<&str>) -> Result<String, AdminError> {
        let config = self.config();
        let (Some(role), Some(_)) = (&config.credentials_admin_role, &config.credentials) else {
            return Err(AdminError::Off);
        };
        match self.authenticate(bearer).await {
            Caller::User(i) => {
                i.check_time_now().map_err(|e| AdminError::Unauthenticated(e.to_string()))?;
                if i.roles.iter().any(|r| r == role) { Ok(i.subject) } else { Err(AdminError::Forbidden(role.clone())) }
            }
            Caller::Refused(e) => Err(AdminError::Unauthenticated(e.to_string())),
            // Authentication off: the config check refuses `admin_role` then.
            Caller::Anonymous => Err(AdminError::Off),
        }
    }

    /// Stores `secret` for (`subject`, `backend`); says whether one was replaced.
    pub async fn credential_set(
        &self,
        admin: &str,
        subject: &str,
        backend: &str,
        secret: &[u8],
    ) -> Result<bool, AdminError> {
        self.check_names(subject, backend)?;
        if secret.len() > MAX_SECRET_BYTES {
            return Err(AdminError::TooLarge);
        }
        let text = std::str::from_utf8(secret).map_err(|_| AdminError::BadRequest("the secret is not UTF-8".into()))?;
        if text.is_empty() {
            return Err(AdminError::BadRequest("the secret is empty: send it as the request body".into()));
        }
        // It goes into a header or an environment variable as it is: a line break there would
        // make a different request, or a broken one.
        if text.chars().any(char::is_control) {
            return Err(AdminError::BadRequest("the secret holds a line break or another control character".into()));
        }
        let config = self.config();
        let keys = config.credentials.as_ref().ok_or(AdminError::Off)?;
        let db = self.credential_store().await?;
        store::verify(db, keys).await.map_err(|e| AdminError::Store(e.to_string()))?;
        let replaced =
            store::set(db, keys, subject, backend, secret).await.map_err(|e| AdminError::Store(e.to_string()))?;
        self.credential_changed(subject, backend);
        tracing::info!(admin, subject, backend, replaced, "credential set through /admin/credentials");
        Ok(replaced)
    }

    /// Removes the credential of (`subject`, `backend`).
    pub async fn credential_remove(&self, admin: &str, subject: &str, backend: &str) -> Result<(), AdminError> {
        self.check_names(subject, backend)?;
        let db = self.credential_store().await?;
        if !store::remove(db, subject, backend).await.map_err(|e| AdminError::Store(e.to_string()))? {
            return Err(AdminError::NotFound { subject: subject.into(), backend: backend.into() });
        }
        self.credential_changed(subject, backend);
        tracing::info!(admin, subject, backend, "credential removed through /admin/credentials");
        Ok(())
    }

    /// Who has a credential for which backend (never the secret).
    pub async fn credential_list(
        &self,
        subject: Option<&str>,
        backend: Option<&str>,
    ) -> Result<Vec<store::Entry>, AdminError> {
        let db = self.credential_store().await?;
        store::list(db, subject, backend).await.map_err(|e| AdminError::Store(e.to_string()))
    }

    /// The store, connected on first use.
    pub(super) async fn credential_store(&self) -> Result<&crate::audit::store::SqlStore, AdminError> {
        let url = self.config().audit.url.clone();
        self.credential_db
            .get_or_try_init(|| crate::audit::store::SqlStore::connect(&url))
            .await
            .map_err(|e| AdminError::Store(e.to_string()))
    }

    fn check_names(&self, subject: &str, backend: &str) -> Result<(), AdminError> {
        for (what, v) in [("sub", subject), ("backend", backend)] {
            if v.is_empty() || v.len() > MAX_NAME_BYTES || v.chars().any(char::is_control) {
                return Err(AdminError::BadRequest(format!(
                    "`{what}` must be 1 to {MAX_NAME_BYTES} bytes without control characters"
                )));
            }
        }
        let config = self.config();
        if !config.backends.iter().any(|b| b.name == backend) {
            let known: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
            return Err(AdminError::BadRequest(format!(
                "the config has no backend `{backend}` (it has: {})",
                known.join(", ")
            )));
        }
        Ok(())
    }

    /// The caller's instance reads the store again on its next call.
    fn credential_changed(&self, subject: &str, backend: &str) {
        let live = self.live.load();
        for (_, slot) in live.active().filter(|(_, s)| s.name() == backend) {
            if let Some(p) = &slot.per_user {
                p.forget(subject);
            }
        }
    }
}
