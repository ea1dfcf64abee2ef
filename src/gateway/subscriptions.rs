//! Subscriptions and server-initiated notifications: stateless clients' `subscriptions/listen`
//! streams, resource subscriptions counted per backend across clients, and list changes and
//! resource updates fanned out to the clients that asked for them.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::{Gateway, Listening};
use crate::error::Refusal;
use crate::jsonrpc;
use crate::method::{Method, Notification};
use crate::policy::Access;
use crate::protocol::{self, Generation, Params};
use crate::request::ListenFilter;
use crate::session::Session;

/// A stateless client's open `subscriptions/listen` stream and what it asked to hear.
pub(super) struct Listener {
    id: Box<RawValue>,
    tools: bool,
    prompts: bool,
    resources: bool,
    uris: HashSet<String>,
    tx: mpsc::UnboundedSender<String>,
}

impl Gateway {
    /// Opens a stateless client's `subscriptions/listen` stream: the acknowledgment, and the
    /// stream's notifications as they come. Resource subscriptions are honoured only for URIs
    /// the caller may read (the same predicate as `resources/read`); the acknowledgment names
    /// what was honoured.
    pub(super) fn listen(
        &self,
        session: &Arc<Session>,
        access: &Access,
        id: &RawValue,
        mut f: ListenFilter,
    ) -> Result<Listening, Refusal> {
        let Some(call) = session.start_call(id.get()) else {
            return Err(Refusal::InvalidRequest(format!("request id {} is already in flight", id.get())));
        };
        let (policy, catalog) = (self.policy.load(), self.catalog());
        // The same judgement as `resources/subscribe`: a URI in normal form, that a backend
        // serves, that the caller may read.
        f.resource_subscriptions.retain(|uri| {
            crate::uri::is_normal(uri)
                && catalog.resource_backend(uri).is_some_and(|b| policy.visible(access, uri, self.slot(b).name()))
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let mut honored = serde_json::Map::new();
        if f.tools_list_changed {
            honored.insert("toolsListChanged".into(), true.into());
        }
        if f.prompts_list_changed {
            honored.insert("promptsListChanged".into(), true.into());
        }
        if f.resources_list_changed {
            honored.insert("resourcesListChanged".into(), true.into());
        }
        if !f.resource_subscriptions.is_empty() {
            honored.insert("resourceSubscriptions".into(), f.resource_subscriptions.clone().into());
        }
        let ack = format!(
            r#"{{"jsonrpc":"2.0","method":"{}","params":{{"_meta":{{"{}":{}}},"notifications":{}}}}}"#,
            Notification::SubscriptionsAcknowledged.as_str(),
            protocol::META_SUBSCRIPTION_ID,
            id.get(),
            serde_json::Value::Object(honored)
        );
        let uris: HashSet<String> = f.resource_subscriptions.into_iter().collect();
        for uri in &uris {
            self.count_subscription(uri, true);
        }
        let mut listeners = self.listeners.lock().expect("listeners lock");
        self.prune_listeners(&mut listeners);
        listeners.push(Listener {
            id: id.to_owned(),
            tools: f.tools_list_changed,
            prompts: f.prompts_list_changed,
            resources: f.resources_list_changed,
            uris,
            tx,
        });
        let notifications = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let notifications =
            Box::pin(futures::StreamExt::take_until(notifications, self.shutdown.clone().cancelled_owned()));
        Ok(Listening { ack, notifications, call })
    }

    /// Drops listeners whose client went away, releasing their resource subscriptions.
    fn prune_listeners(&self, listeners: &mut Vec<Listener>) {
        listeners.retain(|l| {
            if !l.tx.is_closed() {
                return true;
            }
            for uri in &l.uris {
                self.count_subscription(uri, false);
            }
            false
        });
    }

    /// Counts a resource subscriber in or out at the owning backend. A session-based backend
    /// is told of the first subscriber and the last one leaving; a stateless backend hears it
    /// through its listen stream.
    pub(super) fn count_subscription(&self, uri: &str, add: bool) {
        let Some(b) = self.catalog().resource_backend(uri).and_then(|i| self.backend(i)) else { return };
        let changed = if add { b.subscriptions.add(uri) } else { b.subscriptions.remove(uri) };
        if changed && b.generation != Generation::Stateless {
            let method = if add { Method::ResourcesSubscribe } else { Method::ResourcesUnsubscribe }.as_str();
            let params = serde_json::json!({ "uri": uri });
            self.tasks.spawn(async move {
                let params: Params = serde_json::from_value(params).unwrap_or_default();
                if let Err(e) = b.call(method, params, &crate::backend::CallOpts::default()).await {
                    tracing::warn!(backend = %b.name(), method, "subscription change failed: {e}");
                }
            });
        }
    }

    /// Tells every client that asked that a list changed.
    pub(super) fn broadcast_list_changed(&self, kind: &str) {
        let Some(method) = Notification::list_changed(kind).map(Notification::as_str) else { return };
        let session_based = format!(r#"{{"jsonrpc":"2.0","method":"{method}"}}"#);
        // Only session-based clients (they initialized) get unsolicited list changes; a
        // stateless client asks for them with subscriptions/listen.
        self.sessions.for_each(|s| {
            if s.generation().is_none() {
                return;
            }
            if let Some(out) = s.outbound() {
                let _ = out.send(session_based.clone());
            }
        });
        let mut listeners = self.listeners.lock().expect("listeners lock");
        self.prune_listeners(&mut listeners);
        for l in listeners.iter() {
            let wanted = match kind {
                "tools" => l.tools,
                "prompts" => l.prompts,
                _ => l.resources,
            };
            if wanted {
                let _ = l.tx.send(format!(
                    r#"{{"jsonrpc":"2.0","method":"{method}","params":{{"_meta":{{"{}":{}}}}}}}"#,
                    protocol::META_SUBSCRIPTION_ID,
                    l.id.get()
                ));
            }
        }
    }

    pub(super) fn broadcast_resource_updated(&self, params: &RawValue) {
        let Ok(mut p) = Params::parse(Some(params)) else { return };
        let Ok(Some(uri)) = p.str("uri") else { return };
        let session_based = jsonrpc::notification(Notification::ResourcesUpdated.as_str(), params.get());
        self.sessions.for_each(|s| {
            if s.is_subscribed(&uri) {
                if let Some(out) = s.outbound() {
                    let _ = out.send(session_based.clone());
                }
            }
        });
        let mut listeners = self.listeners.lock().expect("listeners lock");
        self.prune_listeners(&mut listeners);
        for l in listeners.iter().filter(|l| l.uris.contains(&uri)) {
            let mut meta = p.meta().unwrap_or_default();
            meta.insert(protocol::META_SUBSCRIPTION_ID.into(), serde_json::from_str(l.id.get()).unwrap_or_default());
            p.set_meta(&meta);
            let _ = l.tx.send(jsonrpc::notification(Notification::ResourcesUpdated.as_str(), &p.to_json()));
        }
    }
}
