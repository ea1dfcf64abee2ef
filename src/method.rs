//! The MCP request methods the gateway serves, in one table: their wire names and what kind
//! of request each is (a governed call that reaches a backend, or one the gateway answers
//! itself). Every other module asks this table instead of matching method strings, so that
//! adding a method means adding one row here and one arm in the dispatch.

use std::fmt;
use std::str::FromStr;

/// A request method the gateway understands. Anything else is unknown to it (-32601).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `initialize`
    Initialize,
    /// `ping`
    Ping,
    /// `logging/setLevel`
    SetLogLevel,
    /// `server/discover`
    Discover,
    /// `tools/list`
    ToolsList,
    /// `prompts/list`
    PromptsList,
    /// `resources/list`
    ResourcesList,
    /// `resources/templates/list`
    TemplatesList,
    /// A stateless client's stream of notifications.
    Listen,
    /// `tools/call`
    ToolsCall,
    /// `prompts/get`
    PromptsGet,
    /// `resources/read`
    ResourcesRead,
    /// `resources/subscribe`
    ResourcesSubscribe,
    /// `resources/unsubscribe`
    ResourcesUnsubscribe,
    /// `completion/complete`
    Complete,
    /// `tasks/get` (2025-11-25 experimental tasks)
    TasksGet,
    /// `tasks/result`
    TasksResult,
    /// `tasks/list`
    TasksList,
    /// `tasks/cancel`
    TasksCancel,
    /// `tasks/update` (the 2026-07-28 tasks extension)
    TasksUpdate,
}

/// Every method with its wire name: the one place these strings are written.
const TABLE: [(Method, &str); 20] = [
    (Method::Initialize, "initialize"),
    (Method::Ping, "ping"),
    (Method::SetLogLevel, "logging/setLevel"),
    (Method::Discover, "server/discover"),
    (Method::ToolsList, "tools/list"),
    (Method::PromptsList, "prompts/list"),
    (Method::ResourcesList, "resources/list"),
    (Method::TemplatesList, "resources/templates/list"),
    (Method::Listen, "subscriptions/listen"),
    (Method::ToolsCall, "tools/call"),
    (Method::PromptsGet, "prompts/get"),
    (Method::ResourcesRead, "resources/read"),
    (Method::ResourcesSubscribe, "resources/subscribe"),
    (Method::ResourcesUnsubscribe, "resources/unsubscribe"),
    (Method::Complete, "completion/complete"),
    (Method::TasksGet, "tasks/get"),
    (Method::TasksResult, "tasks/result"),
    (Method::TasksList, "tasks/list"),
    (Method::TasksCancel, "tasks/cancel"),
    (Method::TasksUpdate, "tasks/update"),
];

/// A method name the gateway does not serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown method")]
pub struct UnknownMethod;

impl FromStr for Method {
    type Err = UnknownMethod;

    fn from_str(s: &str) -> Result<Method, UnknownMethod> {
        TABLE.iter().find(|(_, name)| *name == s).map(|(m, _)| *m).ok_or(UnknownMethod)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Method {
    /// Every method, in the table's order.
    pub fn all() -> impl Iterator<Item = Method> {
        TABLE.iter().map(|(m, _)| *m)
    }

    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        TABLE.iter().find(|(m, _)| *m == self).map(|(_, name)| *name).expect("every method is in the table")
    }

    /// The methods that reach a backend: each is a governed call, audited whatever happens.
    pub fn is_call(self) -> bool {
        self.makes_backend_work() || self.is_subscription()
    }

    /// The calls that make a backend do work: they draw from a rate limit, and their answers
    /// may stream (subscriptions only change what the backend tells the gateway).
    pub fn makes_backend_work(self) -> bool {
        matches!(self, Method::ToolsCall | Method::PromptsGet | Method::ResourcesRead | Method::Complete)
    }

    /// `resources/subscribe` and `resources/unsubscribe`.
    pub fn is_subscription(self) -> bool {
        matches!(self, Method::ResourcesSubscribe | Method::ResourcesUnsubscribe)
    }

    /// The methods the stateless revision (2026-07-28) removed: unknown to a stateless request.
    /// Its tasks extension has no `tasks/result` or `tasks/list`.
    pub fn removed_in_stateless(self) -> bool {
        matches!(
            self,
            Method::Initialize
                | Method::Ping
                | Method::SetLogLevel
                | Method::ResourcesSubscribe
                | Method::ResourcesUnsubscribe
                | Method::TasksResult
                | Method::TasksList
        )
    }

    /// The tasks' methods (2025-11-25 experimental tasks, and the 2026-07-28 extension's).
    pub fn is_task(self) -> bool {
        matches!(
            self,
            Method::TasksGet | Method::TasksResult | Method::TasksList | Method::TasksCancel | Method::TasksUpdate
        )
    }
}

/// The notifications the gateway reads or sends, in one table like the methods'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notification {
    /// `notifications/cancelled`
    Cancelled,
    /// `notifications/initialized`
    Initialized,
    /// `notifications/roots/list_changed`
    RootsListChanged,
    /// `notifications/progress`
    Progress,
    /// `notifications/message` (a log line)
    Message,
    /// `notifications/tools/list_changed`
    ToolsListChanged,
    /// `notifications/prompts/list_changed`
    PromptsListChanged,
    /// `notifications/resources/list_changed`
    ResourcesListChanged,
    /// `notifications/resources/updated`
    ResourcesUpdated,
    /// `notifications/subscriptions/acknowledged`
    SubscriptionsAcknowledged,
    /// `notifications/tasks/status` (2025-11-25 experimental tasks)
    TaskStatus,
}

const NOTIFICATIONS: [(Notification, &str); 11] = [
    (Notification::Cancelled, "notifications/cancelled"),
    (Notification::Initialized, "notifications/initialized"),
    (Notification::RootsListChanged, "notifications/roots/list_changed"),
    (Notification::Progress, "notifications/progress"),
    (Notification::Message, "notifications/message"),
    (Notification::ToolsListChanged, "notifications/tools/list_changed"),
    (Notification::PromptsListChanged, "notifications/prompts/list_changed"),
    (Notification::ResourcesListChanged, "notifications/resources/list_changed"),
    (Notification::ResourcesUpdated, "notifications/resources/updated"),
    (Notification::SubscriptionsAcknowledged, "notifications/subscriptions/acknowledged"),
    (Notification::TaskStatus, "notifications/tasks/status"),
];

impl FromStr for Notification {
    type Err = UnknownMethod;

    fn from_str(s: &str) -> Result<Notification, UnknownMethod> {
        NOTIFICATIONS.iter().find(|(_, name)| *name == s).map(|(n, _)| *n).ok_or(UnknownMethod)
    }
}

impl Notification {
    /// The notification's name on the wire.
    pub fn as_str(self) -> &'static str {
        NOTIFICATIONS
            .iter()
            .find(|(n, _)| *n == self)
            .map(|(_, name)| *name)
            .expect("every notification is in the table")
    }

    /// The list-changed notification of a catalog list (`tools`, `prompts`, `resources`).
    pub fn list_changed(kind: &str) -> Option<Notification> {
        match kind {
            "tools" => Some(Notification::ToolsListChanged),
            "prompts" => Some(Notification::PromptsListChanged),
            "resources" => Some(Notification::ResourcesListChanged),
            _ => None,
        }
    }
}

/// The requests a backend may send the gateway's client (relayed to it), by the client
/// capability each needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerRequest {
    /// `sampling/createMessage`
    Sampling,
    /// `elicitation/create`
    Elicitation,
    /// `roots/list`
    Roots,
}

const SERVER_REQUESTS: [(ServerRequest, &str, &str); 3] = [
    (ServerRequest::Sampling, "sampling/createMessage", "sampling"),
    (ServerRequest::Elicitation, "elicitation/create", "elicitation"),
    (ServerRequest::Roots, "roots/list", "roots"),
];

impl FromStr for ServerRequest {
    type Err = UnknownMethod;

    fn from_str(s: &str) -> Result<ServerRequest, UnknownMethod> {
        SERVER_REQUESTS.iter().find(|(_, name, _)| *name == s).map(|(r, _, _)| *r).ok_or(UnknownMethod)
    }
}

impl ServerRequest {
    /// The client capability the request needs.
    pub fn capability(self) -> &'static str {
        SERVER_REQUESTS.iter().find(|(r, _, _)| *r == self).map(|(_, _, c)| *c).expect("in the table")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for m in Method::all() {
            assert_eq!(m.as_str().parse::<Method>(), Ok(m));
        }
        let mut names: Vec<_> = Method::all().map(Method::as_str).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TABLE.len());
        assert_eq!("tools/cal".parse::<Method>(), Err(UnknownMethod));
        assert_eq!("Tools/call".parse::<Method>(), Err(UnknownMethod));
    }

    #[test]
    fn notification_names_round_trip() {
        for (n, name) in NOTIFICATIONS {
            assert_eq!(name.parse::<Notification>(), Ok(n));
            assert_eq!(n.as_str(), name);
        }
        assert_eq!(Notification::list_changed("prompts"), Some(Notification::PromptsListChanged));
        assert_eq!("sampling/createMessage".parse::<ServerRequest>().map(ServerRequest::capability), Ok("sampling"));
    }

    #[test]
    fn kinds() {
        let calls: Vec<_> = Method::all().filter(|m| m.is_call()).map(Method::as_str).collect();
        assert_eq!(
            calls,
            [
                "tools/call",
                "prompts/get",
                "resources/read",
                "resources/subscribe",
                "resources/unsubscribe",
                "completion/complete"
            ]
        );
        assert!(!Method::ResourcesSubscribe.makes_backend_work());
        assert!(Method::ResourcesSubscribe.removed_in_stateless());
        assert!(!Method::Discover.removed_in_stateless());
    }
}
