//! A client message read once, into what it is: a request with its params parsed strictly
//! for its method, an answer to a request the gateway relayed, or a notification. Both front
//! doors turn each message into an [`Incoming`] here (and nowhere else), before anything
//! else looks at it; the gateway's dispatch is then one `match` over the result.
//!
//! A request whose params cannot be read is not refused here: the refusal travels with it
//! ([`BadRequest`]) and the pipeline answers it after authentication, so that a caller
//! without valid credentials learns nothing about what it sent.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::backend::Reply;
use crate::error::Refusal;
use crate::jsonrpc::{Kind, Message};
use crate::method::{Method, Notification};
use crate::protocol::{self, Params};

/// A client message, read.
pub enum Incoming {
    /// A request: its id and what it asks (or why that cannot be read).
    Request {
        /// The request's id, raw (echoed in the answer byte for byte).
        id: Box<RawValue>,
        /// What it asks, or why that cannot be read (answered after authentication).
        request: Result<Request, Box<BadRequest>>,
    },
    /// The client's answer to a request the gateway relayed to it (`sampling/createMessage`,
    /// `elicitation/create`, `roots/list`), for the call that waits for it.
    Response {
        /// The id the gateway gave the relayed request, raw.
        id: String,
        /// The client's `result` or `error`.
        reply: Reply,
    },
    /// A notification from the client.
    Notification(ClientNotification),
    /// Not a valid JSON-RPC 2.0 message: answered at once with this refusal.
    Invalid {
        /// The message's id, if it had one to answer to.
        id: Option<Box<RawValue>>,
        /// What to answer.
        refusal: Refusal,
    },
    /// A response carrying neither `result` nor `error`: nothing to do.
    Nothing,
}

impl Incoming {
    /// Reads a message: the one place a client's message becomes typed.
    pub fn parse(msg: Message) -> Incoming {
        Incoming::read(msg, true)
    }

    /// Reads only the envelope of a message from a caller whose credentials were refused: it
    /// is answered -32010 whatever its params say, so they are not parsed (nor paid for).
    pub fn envelope(msg: Message) -> Incoming {
        Incoming::read(msg, false)
    }

    fn read(mut msg: Message, with_params: bool) -> Incoming {
        if !with_params {
            msg.params = None;
        }
        let invalid = |id, why: &str| Incoming::Invalid { id, refusal: Refusal::InvalidRequest(why.into()) };
        match msg.kind() {
            None => invalid(msg.id, "not a JSON-RPC 2.0 request, notification or response"),
            Some(Kind::Response) => {
                let id = msg.id.as_ref().map(|i| i.get().to_string()).unwrap_or_default();
                match (msg.result, msg.error) {
                    (Some(r), _) => Incoming::Response { id, reply: Reply::Result(r) },
                    (_, Some(e)) => Incoming::Response { id, reply: Reply::Error(e) },
                    _ => Incoming::Nothing,
                }
            }
            Some(Kind::Notification) => Incoming::Notification(ClientNotification::parse(
                msg.method.as_deref().unwrap_or_default(),
                msg.params.as_deref(),
            )),
            Some(Kind::Request) => {
                if !msg.id_is_valid() {
                    return invalid(msg.id, "the id must be a string or an integer");
                }
                if msg.jsonrpc.as_deref() != Some("2.0") {
                    return invalid(msg.id, "`jsonrpc` must be \"2.0\"");
                }
                let id = msg.id.expect("a request has an id");
                Incoming::Request { id, request: Request::parse(msg.method.unwrap_or_default(), msg.params) }
            }
        }
    }

    /// The method of a request the gateway serves (`None` for anything else).
    pub fn method(&self) -> Option<Method> {
        match self {
            Incoming::Request { request, .. } => method_of(request),
            _ => None,
        }
    }

    /// Whether this is a request (the only kind of message that is answered).
    pub fn is_request(&self) -> bool {
        matches!(self, Incoming::Request { .. })
    }
}

/// The method of a request as read, whether or not its params could be.
pub fn method_of(request: &Result<Request, Box<BadRequest>>) -> Option<Method> {
    match request {
        Ok(r) => r.method(),
        Err(bad) => Some(bad.method),
    }
}

/// A request the gateway serves, with its params read for its method. The own methods read
/// their params as leniently as before (the lists ignore theirs); calls strictly.
#[derive(Debug)]
pub enum Request {
    /// The session-based handshake.
    Initialize {
        /// The version the client asked for, if any (negotiated down to one we speak).
        version: Option<String>,
        /// The client's capabilities (`{}` when absent or unreadable).
        capabilities: Value,
        /// The client's `clientInfo` (`null` when absent or unreadable).
        client_info: Value,
    },
    /// `ping`.
    Ping,
    /// `logging/setLevel`, as the level's rank (see [`protocol::log_level_rank`]).
    SetLogLevel(u8),
    /// `server/discover` (stateless).
    Discover,
    /// One of the catalog lists, filtered by the caller's access.
    List(Listing),
    /// A stateless client's `subscriptions/listen`, with the notifications it asks for.
    Listen(ListenFilter),
    /// A governed call that reaches a backend.
    Call(Call),
    /// `tasks/get`, `tasks/result`, `tasks/cancel` or `tasks/update` of a task (the gateway's
    /// id), or `tasks/list` (`None`), with the rest of the params (`inputResponses`).
    Task(Method, Option<String>, Params),
    /// A method the gateway does not serve (answered -32601: nothing is passed through).
    Other(String),
}

impl Request {
    /// Reads a request's params for its method. Unknown methods are [`Request::Other`].
    pub fn parse(name: String, params: Option<Box<RawValue>>) -> Result<Request, Box<BadRequest>> {
        let Ok(method) = name.parse::<Method>() else { return Ok(Request::Other(name)) };
        let bad = |refusal: Refusal| Box::new(BadRequest { method, refusal, arguments: None, asked: None });
        Ok(match method {
            Method::Initialize => {
                let p = Params::parse(params.as_deref()).map_err(|e| bad(e.into()))?;
                let version = p.str("protocolVersion").map_err(|e| bad(e.into()))?;
                let capabilities =
                    p.0.get("capabilities")
                        .and_then(|c| serde_json::from_str(c.get()).ok())
                        .unwrap_or_else(|| serde_json::json!({}));
                let client_info =
                    p.0.get("clientInfo").and_then(|c| serde_json::from_str(c.get()).ok()).unwrap_or_default();
                Request::Initialize { version, capabilities, client_info }
            }
            Method::Ping => Request::Ping,
            Method::SetLogLevel => {
                let p = Params::parse(params.as_deref()).map_err(|e| bad(e.into()))?;
                let level = p.str("level").map_err(|e| bad(e.into()))?.unwrap_or_default();
                let rank = protocol::log_level_rank(&level)
                    .ok_or_else(|| bad(Refusal::InvalidParams(format!("unknown log level `{level}`"))))?;
                Request::SetLogLevel(rank)
            }
            Method::Discover => Request::Discover,
            Method::ToolsList => Request::List(Listing::Tools),
            Method::PromptsList => Request::List(Listing::Prompts),
            Method::ResourcesList => Request::List(Listing::Resources),
            Method::TemplatesList => Request::List(Listing::Templates),
            Method::Listen => Request::Listen(ListenFilter::parse(params.as_deref())),
            Method::ToolsCall
            | Method::PromptsGet
            | Method::ResourcesRead
            | Method::ResourcesSubscribe
            | Method::ResourcesUnsubscribe
            | Method::Complete => Request::Call(Call::parse(method, params.as_deref())?),
            Method::TasksList => Request::Task(method, None, Params::default()),
            Method::TasksGet | Method::TasksResult | Method::TasksCancel | Method::TasksUpdate => {
                let mut p = Params::parse(params.as_deref()).map_err(|e| bad(e.into()))?;
                let id = p.str("taskId").map_err(|e| bad(e.into()))?;
                let id = id.ok_or_else(|| bad(Refusal::InvalidParams("`taskId` is required".into())))?;
                p.0.shift_remove("taskId");
                Request::Task(method, Some(id), p)
            }
        })
    }

    /// The method, unless the gateway does not serve it.
    pub fn method(&self) -> Option<Method> {
        Some(match self {
            Request::Initialize { .. } => Method::Initialize,
            Request::Ping => Method::Ping,
            Request::SetLogLevel(_) => Method::SetLogLevel,
            Request::Discover => Method::Discover,
            Request::List(l) => l.method(),
            Request::Listen(_) => Method::Listen,
            Request::Call(c) => c.method,
            Request::Task(m, ..) => *m,
            Request::Other(_) => return None,
        })
    }
}

/// A request of a method the gateway serves whose params cannot be read, with what could be
/// (boxed where returned: the rare path pays for its size, not every request).
#[derive(Debug)]
pub struct BadRequest {
    /// The method, which the gateway serves.
    pub method: Method,
    /// The answer, given after authentication.
    pub refusal: Refusal,
    /// A call's arguments, when they were read before another param failed (for the audit).
    pub arguments: Option<Value>,
    /// The name or URI as sent, read leniently (for the stateless `Mcp-Name` header check).
    pub asked: Option<String>,
}

/// The four catalog lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// `tools/list`.
    Tools,
    /// `prompts/list`.
    Prompts,
    /// `resources/list`.
    Resources,
    /// `resources/templates/list`.
    Templates,
}

impl Listing {
    fn method(self) -> Method {
        match self {
            Listing::Tools => Method::ToolsList,
            Listing::Prompts => Method::PromptsList,
            Listing::Resources => Method::ResourcesList,
            Listing::Templates => Method::TemplatesList,
        }
    }
}

/// What a `subscriptions/listen` asks to be told. Read leniently: what cannot be read is not
/// asked for (the acknowledgement says what is honoured).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenFilter {
    /// Tell of changes to the tool list.
    #[serde(default)]
    pub tools_list_changed: bool,
    /// Tell of changes to the prompt list.
    #[serde(default)]
    pub prompts_list_changed: bool,
    /// Tell of changes to the resource list.
    #[serde(default)]
    pub resources_list_changed: bool,
    /// Tell of updates to these resources (those the caller may read).
    #[serde(default)]
    pub resource_subscriptions: Vec<String>,
}

impl ListenFilter {
    fn parse(params: Option<&RawValue>) -> ListenFilter {
        #[derive(serde::Deserialize, Default)]
        struct P {
            #[serde(default)]
            notifications: ListenFilter,
        }
        params.and_then(|p| serde_json::from_str::<P>(p.get()).ok()).unwrap_or_default().notifications
    }
}

/// A governed call (`tools/call`, `prompts/get`, `resources/read`, `resources/subscribe`,
/// `resources/unsubscribe`, `completion/complete`), its params checked strictly: no
/// duplicate keys at any depth, no case variants of known keys, `arguments` an object and
/// re-serialized, so that the backend gets exactly what policy judged.
#[derive(Debug)]
pub struct Call {
    /// One of the call methods ([`Method::is_call`]).
    pub method: Method,
    /// The params as they will be forwarded (the route rewrites the name).
    pub params: Params,
    /// The name policy judges, exactly as asked: a tool or prompt name, or a resource URI in
    /// normal form (for a completion, what its `ref` points at).
    pub target: String,
    /// A tool's or prompt's arguments, parsed.
    pub arguments: Option<Value>,
    /// A completion's `ref`, rewritten with the backend's own name when routed.
    pub reference: Option<Reference>,
}

/// A completion's `ref`: a prompt by name, or a resource by URI.
#[derive(Debug)]
pub struct Reference {
    /// `ref/prompt` (else `ref/resource`).
    pub prompt: bool,
    /// The `ref` object as sent.
    pub fields: Map<String, Value>,
}

impl Call {
    fn parse(method: Method, raw: Option<&RawValue>) -> Result<Call, Box<BadRequest>> {
        let mut params = Params::parse(raw)
            .map_err(|e| Box::new(BadRequest { method, refusal: e.into(), arguments: None, asked: None }))?;
        // The name or URI as sent, read leniently, only for a refusal: on the way of every
        // call `target` reads it strictly, once.
        let asked = |params: &Params| match method {
            Method::ToolsCall | Method::PromptsGet => params.str("name").ok().flatten(),
            Method::ResourcesRead => params.str("uri").ok().flatten(),
            _ => None,
        };
        let arguments = match strict_arguments(method, &mut params) {
            Ok(a) => a,
            Err(refusal) => {
                return Err(Box::new(BadRequest { method, refusal, arguments: None, asked: asked(&params) }));
            }
        };
        match target(method, &params) {
            Ok((target, reference)) => Ok(Call { method, params, target, arguments, reference }),
            Err(refusal) => Err(Box::new(BadRequest { method, refusal, arguments, asked: asked(&params) })),
        }
    }
}

/// Checks params strictly for a call's method and puts `arguments` back re-serialized, so the
/// backend gets exactly what was checked, never the client's raw bytes.
fn strict_arguments(method: Method, params: &mut Params) -> Result<Option<Value>, Refusal> {
    let known: &[&'static str] = match method {
        Method::ToolsCall | Method::PromptsGet => &["name", "arguments", "_meta"],
        Method::ResourcesRead | Method::ResourcesSubscribe | Method::ResourcesUnsubscribe => &["uri", "_meta"],
        _ => &["ref", "argument", "context", "_meta"],
    };
    params.check_case_variants(known)?;
    for raw in params.0.values() {
        crate::strict_json::check_unique_keys(raw.get()).map_err(|e| Refusal::InvalidParams(e.to_string()))?;
    }
    if !matches!(method, Method::ToolsCall | Method::PromptsGet) {
        return Ok(None);
    }
    let Some(raw) = params.0.get("arguments") else { return Ok(None) };
    let value: Value =
        serde_json::from_str(raw.get()).map_err(|e| Refusal::InvalidParams(format!("`arguments`: {e}")))?;
    if !value.is_object() {
        return Err(Refusal::InvalidParams("`arguments` must be an object".into()));
    }
    params.0.insert("arguments".into(), serde_json::value::to_raw_value(&value).expect("a value serializes"));
    Ok(Some(value))
}

/// The name policy judges for a call, exactly as the client asked for it: `name` of a tool or
/// prompt, a resource's `uri`, or the prompt name or URI a completion's `ref` points at.
/// Resource URIs that RFC 3986 normalisation would change are refused (with the normal form
/// in the message): a glob written for `test://docs/*` must not be met by `test://docs/../x`,
/// and refusing keeps "what is authorized is what is forwarded" without the gateway choosing
/// a spelling the backend never saw.
fn target(method: Method, params: &Params) -> Result<(String, Option<Reference>), Refusal> {
    let required = |k: &str| -> Result<String, Refusal> {
        params.str(k)?.ok_or_else(|| Refusal::InvalidParams(format!("`{k}` is required")))
    };
    let normal = |uri: String| -> Result<String, Refusal> {
        match crate::uri::normalize(&uri) {
            std::borrow::Cow::Borrowed(_) => Ok(uri),
            std::borrow::Cow::Owned(n) => Err(Refusal::InvalidParams(format!(
                "the resource URI is not in normal form (RFC 3986: dot-segments, percent-escapes, scheme case); send `{}`",
                crate::audit::bounded(&n, crate::audit::MAX_URI_BYTES)
            ))),
        }
    };
    match method {
        Method::ToolsCall | Method::PromptsGet => Ok((required("name")?, None)),
        Method::ResourcesRead | Method::ResourcesSubscribe | Method::ResourcesUnsubscribe => {
            Ok((normal(required("uri")?)?, None))
        }
        Method::Complete => {
            let not_an_object = || Refusal::InvalidParams("`ref` must be an object".into());
            let r = params.0.get("ref").ok_or_else(|| Refusal::InvalidParams("`ref` is required".into()))?;
            let fields: Map<String, Value> = serde_json::from_str(r.get()).map_err(|_| not_an_object())?;
            // Each of these, when present and not null, must be a string.
            let field = |k: &str| match fields.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(not_an_object()),
            };
            let (kind, name, uri) = (field("type")?, field("name")?, field("uri")?);
            let (target, prompt) = match kind.as_deref() {
                Some("ref/prompt") => (name.unwrap_or_default(), true),
                Some("ref/resource") => (normal(uri.unwrap_or_default())?, false),
                _ => {
                    return Err(Refusal::InvalidParams("`ref.type` must be \"ref/prompt\" or \"ref/resource\"".into()));
                }
            };
            Ok((target, Some(Reference { prompt, fields })))
        }
        _ => Err(Refusal::MethodNotFound(method.as_str().to_string())),
    }
}

/// A notification from a client.
#[derive(Debug)]
pub enum ClientNotification {
    /// `notifications/cancelled`, with the id of the request it cancels (if readable).
    Cancelled(Option<Box<RawValue>>),
    /// Acknowledged and otherwise ignored (`notifications/initialized`, roots changed).
    Known(Notification),
    /// Anything else: ignored.
    Other(String),
}

impl ClientNotification {
    fn parse(method: &str, params: Option<&RawValue>) -> ClientNotification {
        match method.parse::<Notification>() {
            Ok(Notification::Cancelled) => {
                #[derive(serde::Deserialize)]
                struct P {
                    #[serde(rename = "requestId")]
                    request_id: Box<RawValue>,
                }
                let p = params.and_then(|p| serde_json::from_str::<P>(p.get()).ok());
                ClientNotification::Cancelled(p.map(|p| p.request_id))
            }
            Ok(n) => ClientNotification::Known(n),
            Err(_) => ClientNotification::Other(method.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Incoming {
        Incoming::parse(Message::parse(text.as_bytes()).expect("JSON"))
    }

    fn request(text: &str) -> Result<Request, Box<BadRequest>> {
        match parse(text) {
            Incoming::Request { request, .. } => request,
            _ => panic!("not a request: {text}"),
        }
    }

    fn refusal(text: &str) -> String {
        request(text).expect_err("refused").refusal.to_string()
    }

    #[test]
    fn envelopes() {
        assert!(matches!(parse(r#"{"jsonrpc":"2.0","id":1}"#), Incoming::Invalid { .. }));
        assert!(matches!(parse(r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#), Incoming::Invalid { .. }));
        assert!(matches!(parse(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#), Incoming::Invalid { .. }));
        assert!(matches!(parse(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#), Incoming::Response { .. }));
        match parse(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"x"}}"#) {
            Incoming::Notification(ClientNotification::Cancelled(Some(id))) => assert_eq!(id.get(), r#""x""#),
            _ => panic!("a cancellation"),
        }
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","method":"notifications/whatever"}"#),
            Incoming::Notification(ClientNotification::Other(_))
        ));
    }

    #[test]
    fn each_method_is_one_variant() {
        let ping = request(r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#).expect("lenient");
        assert!(matches!(ping, Request::Ping));
        let list = request(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":"x"}"#).expect("lenient");
        assert_eq!(list.method(), Some(Method::ToolsList));
        let other = request(r#"{"jsonrpc":"2.0","id":1,"method":"tools/cal"}"#).expect("unknown");
        assert!(matches!(other, Request::Other(ref n) if n == "tools/cal"));
        assert_eq!(other.method(), None);
        let level = r#"{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"warning"}}"#;
        assert!(matches!(request(level), Ok(Request::SetLogLevel(3))));
        assert_eq!(
            refusal(r#"{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"loud"}}"#),
            "Invalid params: unknown log level `loud`"
        );
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#;
        match request(init) {
            Ok(Request::Initialize { version, capabilities, client_info }) => {
                assert_eq!(version.as_deref(), Some("2025-06-18"));
                assert_eq!(capabilities, serde_json::json!({}));
                assert_eq!(client_info, serde_json::Value::Null);
            }
            other => panic!("{other:?}"),
        }
        let init =
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"clientInfo":{"name":"c","version":"1"}}}"#;
        assert!(matches!(request(init), Ok(Request::Initialize { client_info, .. }) if client_info["name"] == "c"));
        let listen = r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true}}}"#;
        assert!(matches!(request(listen), Ok(Request::Listen(ListenFilter { tools_list_changed: true, .. }))));
        for name in Method::all().map(Method::as_str) {
            let text = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{name}"}}"#);
            let m = match request(&text) {
                Ok(r) => r.method(),
                Err(bad) => Some(bad.method),
            };
            assert_eq!(m.map(Method::as_str), Some(name), "every method in the table reads as itself");
        }
    }

    #[test]
    fn calls_are_strict() {
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":1}}}"#;
        match request(call) {
            Ok(Request::Call(c)) => {
                assert_eq!((c.method, c.target.as_str()), (Method::ToolsCall, "t"));
                assert_eq!(c.arguments, Some(serde_json::json!({"a":1})));
            }
            other => panic!("{other:?}"),
        }
        let dup = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":1,"a":2}}}"#;
        assert!(refusal(dup).contains("duplicate"), "{}", refusal(dup));
        let case = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","Name":"u"}}"#;
        let bad = request(case).expect_err("case variant");
        assert_eq!(bad.asked.as_deref(), Some("t"), "the name as sent is kept for the header check");
        let nameless = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"a":1}}}"#;
        let bad = request(nameless).expect_err("no name");
        assert_eq!(bad.refusal.to_string(), "Invalid params: `name` is required");
        assert_eq!(bad.arguments, Some(serde_json::json!({"a":1})), "arguments read are kept for the audit");
        let dotted = r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"test://a/../b"}}"#;
        let bad = request(dotted).expect_err("not normal");
        assert!(bad.refusal.to_string().contains("send `test://a/b`"), "{}", bad.refusal);
        assert_eq!(bad.asked.as_deref(), Some("test://a/../b"));
    }

    #[test]
    fn completion_refs() {
        let prompt = r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"},"argument":{"name":"a","value":"b"}}}"#;
        match request(prompt) {
            Ok(Request::Call(c)) => {
                assert_eq!(c.target, "p");
                assert!(c.reference.is_some_and(|r| r.prompt));
            }
            other => panic!("{other:?}"),
        }
        let wrong = r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":7}}}"#;
        assert_eq!(refusal(wrong), "Invalid params: `ref` must be an object");
        let kind = r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/tool"}}}"#;
        assert!(refusal(kind).contains("ref.type"));
    }
}
