//! Stage 5 of the pipeline, resolve: which backend serves the name or URI policy judged,
//! and what the call is called there (the request rewritten to the backend's own name).

use super::Gateway;
use crate::error::Refusal;
use crate::method::Method;
use crate::param_headers;
use crate::protocol::Params;

/// Where a call goes: the backend, the name or URI it is about, and the `Mcp-Param-*`
/// headers its arguments call for.
pub struct Route {
    pub backend: usize,
    /// The name policy is about: the exposed tool or prompt name, or the resource URI.
    pub exposed: String,
    /// The name or URI at the backend.
    pub name: String,
    pub param_headers: Vec<(String, String)>,
}

impl Gateway {
    /// Finds the backend that serves `exposed` (the name or URI the pipeline judged) and
    /// rewrites it to the backend's own name. `params` were checked strictly already;
    /// `arguments` is the parsed form of a tool's arguments.
    pub(super) fn route(
        &self,
        method: Method,
        params: &mut Params,
        exposed: String,
        arguments: Option<&serde_json::Value>,
    ) -> Result<Route, Refusal> {
        let catalog = self.catalog();
        let simple = |backend, exposed: String, name| Route { backend, exposed, name, param_headers: Vec::new() };
        match method {
            Method::ToolsCall => {
                let e = catalog.tool(&exposed).ok_or_else(|| Refusal::UnknownTool(exposed.clone()))?;
                let param_headers = match arguments {
                    Some(args) if !e.param_headers.is_empty() => param_headers::headers_for(&e.param_headers, args),
                    _ => Vec::new(),
                };
                params.set_str("name", &e.original);
                Ok(Route { backend: e.backend, exposed, name: e.original.clone(), param_headers })
            }
            Method::PromptsGet => {
                let e = catalog.prompt(&exposed).ok_or_else(|| Refusal::UnknownPrompt(exposed.clone()))?;
                params.set_str("name", &e.original);
                Ok(simple(e.backend, exposed, e.original.clone()))
            }
            Method::ResourcesRead | Method::ResourcesSubscribe | Method::ResourcesUnsubscribe => {
                let b = catalog.resource_backend(&exposed).ok_or(Refusal::UnknownResource(exposed.clone()))?;
                Ok(simple(b, exposed.clone(), exposed))
            }
            Method::Complete => {
                let r = params.0.get("ref").ok_or_else(|| Refusal::InvalidParams("`ref` is required".into()))?;
                let mut r: serde_json::Map<String, serde_json::Value> = serde_json::from_str(r.get())
                    .map_err(|_| Refusal::InvalidParams("`ref` must be an object".into()))?;
                let route = if r.get("type").and_then(|t| t.as_str()) == Some("ref/prompt") {
                    let e = catalog.prompt(&exposed).ok_or_else(|| Refusal::UnknownPrompt(exposed.clone()))?;
                    r.insert("name".into(), e.original.clone().into());
                    simple(e.backend, exposed, e.original.clone())
                } else {
                    let b = catalog.resource_backend(&exposed).ok_or(Refusal::UnknownResource(exposed.clone()))?;
                    simple(b, exposed.clone(), exposed)
                };
                params.0.insert("ref".into(), serde_json::value::to_raw_value(&r).expect("map serializes"));
                Ok(route)
            }
            _ => Err(Refusal::MethodNotFound(method.as_str().to_string())),
        }
    }
}
