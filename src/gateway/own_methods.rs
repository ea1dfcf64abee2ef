//! The protocol's own methods, answered by the gateway itself: the handshake, ping, log
//! level, discovery, the lists (each filtered by the caller's access) and
//! `subscriptions/listen`.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::{Answer, Ctx, Gateway, lists, meta};
use crate::catalog;
use crate::config::Discovery;
use crate::error::Refusal;
use crate::policy::Access;
use crate::protocol::{self, Generation};
use crate::request::{Listing, Request};
use crate::session::Session;

impl Gateway {
    /// The protocol's own methods (handshake, lists, discovery, listen): one arm per request
    /// the gateway answers itself. Lists show a caller only what it may use.
    pub(super) async fn protocol_method(
        &self,
        session: &Arc<Session>,
        id: &RawValue,
        request: Request,
        access: &Access,
        ctx: Ctx<'_>,
    ) -> Result<Answer, Refusal> {
        let stateless = ctx.stateless.is_some();
        let policy = self.policy.load();
        let catalog = self.catalog();
        let live = self.live.load();
        let visible = |e: &catalog::Entry| policy.visible(access, &e.exposed, live.slots[e.backend].name());
        // Tools also leave the list while their changed definition is held.
        let usable_tool = |e: &catalog::Entry| {
            let backend = live.slots[e.backend].name();
            policy.visible(access, &e.exposed, backend) && !self.is_held(&policy, e, backend)
        };
        let answer = match request {
            Request::Initialize { version, capabilities, client_info } => {
                let version = protocol::negotiate_session_based(version.as_deref());
                session.initialize(Generation::SessionBased(version), capabilities, client_info);
                // Task-augmented tool calls, when some backend takes them (task_handles.rs).
                let tasks = live
                    .active()
                    .filter_map(|(_, s)| s.backend())
                    .any(|b| b.for_session_based_client().capabilities.pointer("/tasks/requests/tools/call").is_some());
                Answer::Result(lists::initialize_result(version, tasks))
            }
            Request::Ping => Answer::Result("{}".into()),
            Request::SetLogLevel(rank) => {
                session.set_log_level(rank);
                self.share_log_level(session, rank).await;
                Answer::Result("{}".into())
            }
            Request::Discover => {
                // The tasks extension, when some backend serves it.
                let tasks = live
                    .active()
                    .filter_map(|(_, s)| s.backend())
                    .any(|b| b.capabilities.pointer("/extensions/io.modelcontextprotocol~1tasks").is_some());
                Answer::Result(lists::discover(tasks))
            }
            Request::List(Listing::Tools) => match policy.discovery(access) {
                Discovery::Full => Answer::Result(lists::list("tools", &catalog.tools_json(usable_tool), stateless)),
                Discovery::Meta => Answer::Result(lists::list("tools", meta::TOOLS, stateless)),
            },
            Request::List(Listing::Prompts) => {
                Answer::Result(lists::list("prompts", &catalog.prompts_json(visible), stateless))
            }
            Request::List(Listing::Resources) => {
                Answer::Result(lists::list("resources", &catalog.resources_json(visible), stateless))
            }
            Request::List(Listing::Templates) => {
                Answer::Result(lists::list("resourceTemplates", &catalog.templates_json(visible), stateless))
            }
            Request::Listen(filter) if stateless => Answer::Listen(self.listen(session, access, id, filter)?),
            Request::Listen(_) => {
                return Err(Refusal::InvalidRequest(
                    "subscriptions/listen is a stream; send it to /mcp directly".into(),
                ));
            }
            // The pipeline sends calls down the governed path and refuses unknown methods.
            Request::Call(c) => return Err(Refusal::MethodNotFound(c.method.as_str().to_string())),
            Request::Other(name) => return Err(Refusal::MethodNotFound(name)),
            Request::Task(method, task, params) => return self.task_request(method, task, params, access, ctx).await,
        };
        Ok(answer)
    }
}
