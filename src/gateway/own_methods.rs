//! The protocol's own methods, answered by the gateway itself: the handshake, ping, log
//! level, discovery, the lists (each filtered by the caller's access) and
//! `subscriptions/listen`.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::{Answer, Ctx, Gateway, lists};
use crate::catalog;
use crate::error::Refusal;
use crate::method::Method;
use crate::policy::Access;
use crate::protocol::{self, Generation, Params};
use crate::session::Session;

impl Gateway {
    /// The protocol's own methods (handshake, lists, discovery); lists show a caller only
    /// what it may use.
    pub(super) async fn protocol_method(
        &self,
        session: &Arc<Session>,
        id: &RawValue,
        method: Method,
        params: Option<Box<RawValue>>,
        access: &Access,
        ctx: Ctx<'_>,
    ) -> Result<Answer, Refusal> {
        let modern = ctx.modern.is_some();
        let policy = self.policy.load();
        let catalog = self.catalog();
        let live = self.live.load();
        let visible = |e: &catalog::Entry| policy.visible(access, &e.exposed, live.slots[e.backend].name());
        let answer = match method {
            Method::Initialize => Answer::Result(self.initialize(session, params.as_deref())?),
            Method::Ping => Answer::Result("{}".into()),
            Method::SetLogLevel => {
                let p = Params::parse(params.as_deref())?;
                let level = p.str("level")?.unwrap_or_default();
                let rank = protocol::log_level_rank(&level)
                    .ok_or_else(|| Refusal::InvalidParams(format!("unknown log level `{level}`")))?;
                session.set_log_level(rank);
                Answer::Result("{}".into())
            }
            Method::Discover => Answer::Result(lists::discover()),
            Method::ToolsList => Answer::Result(lists::list("tools", &catalog.tools_json(visible), modern)),
            Method::PromptsList => Answer::Result(lists::list("prompts", &catalog.prompts_json(visible), modern)),
            Method::ResourcesList => Answer::Result(lists::list("resources", &catalog.resources_json(visible), modern)),
            Method::TemplatesList => {
                Answer::Result(lists::list("resourceTemplates", &catalog.templates_json(visible), modern))
            }
            Method::Listen if modern => Answer::Listen(self.listen(session, access, id, params.as_deref())?),
            Method::Listen => {
                return Err(Refusal::InvalidRequest(
                    "subscriptions/listen is a stream; send it to /mcp directly".into(),
                ));
            }
            Method::ToolsCall
            | Method::PromptsGet
            | Method::ResourcesRead
            | Method::ResourcesSubscribe
            | Method::ResourcesUnsubscribe
            | Method::Complete => return Err(Refusal::MethodNotFound(method.as_str().to_string())),
        };
        Ok(answer)
    }

    fn initialize(&self, session: &Session, params: Option<&RawValue>) -> Result<String, Refusal> {
        let p = Params::parse(params)?;
        let requested = p.str("protocolVersion")?;
        let version = protocol::negotiate_legacy(requested.as_deref());
        let caps: serde_json::Value =
            p.0.get("capabilities")
                .and_then(|c| serde_json::from_str(c.get()).ok())
                .unwrap_or_else(|| serde_json::json!({}));
        session.initialize(Generation::Legacy(version), caps);
        Ok(lists::initialize_result(version))
    }
}
