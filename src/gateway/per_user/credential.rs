//! Whose credential a per-user call acts with: the caller's stored one (cached on their
//! instance for a while), or a token exchanged for theirs; and the -32018 when there is none.

use std::sync::Arc;
use std::time::Instant;

use super::{Instance, PerUser, RECHECK_AFTER};
use crate::config::CredentialMode;
use crate::credentials::Secret;
use crate::error::Refusal;
use crate::gateway::{Caller, Gateway, Slot};

impl Gateway {
    /// The caller's credential for `slot`'s backend (`None` for a backend whose instances
    /// share the config's), and when it was read from the store if it was just now.
    pub(super) async fn caller_credential(
        &self,
        slot: &Arc<Slot>,
        per_user: &PerUser,
        caller: &Caller,
        subject: &str,
        known: Option<&Arc<Instance>>,
    ) -> Result<(Option<Secret>, Option<Instant>), Refusal> {
        let name = slot.name();
        let miss = |reason: &'static str, message: String| {
            self.metrics.credential_miss(name, reason);
            Refusal::NoCredential { backend: name.to_string(), reason, message }
        };
        // When the credential was read from the store, if it was just now.
        let mut read_at = None;
        let credential = match &slot.config.credentials {
            CredentialMode::Shared => None,
            CredentialMode::PerUser => {
                let cached = known.and_then(|i| {
                    let c = i.credential.lock().expect("credential lock");
                    (c.1.elapsed() < RECHECK_AFTER).then(|| c.0.clone()).flatten()
                });
                match cached {
                    Some(c) => Some(c),
                    None => match self.stored_credential(subject, name).await {
                        Ok(Some(c)) => {
                            read_at = Some(Instant::now());
                            Some(c)
                        }
                        Ok(None) => {
                            return Err(miss(
                                "not_set",
                                format!(
                                    "`{name}` acts as each caller, and none is stored for `{subject}`. An operator sets it with \
                                     `sentinel credentials set --sub {subject} --backend {name}` (the secret on stdin)"
                                ),
                            ));
                        }
                        Err(why) => {
                            tracing::error!(backend = %name, subject = %subject, "credential not usable: {why}");
                            return Err(miss("unreadable", format!("the stored credential cannot be read now: {why}")));
                        }
                    },
                }
            }
            CredentialMode::TokenExchange(_) => {
                let token = match caller {
                    Caller::User(i) => i.token.as_ref(),
                    _ => None,
                };
                let Some(token) = token else {
                    return Err(miss(
                        "no_token",
                        format!("`{name}` exchanges the caller's token, and this caller presented none"),
                    ));
                };
                let exchange = per_user.exchange.as_ref().expect("a token-exchange backend has its exchanger");
                match exchange.token_for(subject, token.expose()).await {
                    Ok(t) => Some(Secret::new(t)),
                    Err(e) => return Err(miss("exchange_failed", e.to_string())),
                }
            }
        };
        Ok((credential, read_at))
    }

    /// The caller's credential for `backend` from the store, opened.
    async fn stored_credential(&self, subject: &str, backend: &str) -> Result<Option<Secret>, String> {
        let config = self.config();
        let Some(keys) = &config.credentials else { return Err("the config has no [credentials] key".into()) };
        let store = self.credential_store().await.map_err(|e| e.to_string())?;
        let Some(plain) =
            crate::credentials::store::secret(store, keys, subject, backend).await.map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        String::from_utf8(plain).map(|s| Some(Secret::new(s))).map_err(|_| "it is not UTF-8 text".to_string())
    }
}
