//! Stage 5 of the pipeline, resolve: which backend serves the name or URI policy judged,
//! and what the call is called there (the request rewritten to the backend's own name).

use super::Gateway;
use crate::error::Refusal;
use crate::method::Method;
use crate::param_headers;
use crate::request::Call;

/// Where a call goes: the backend, the name or URI it is about, and the `Mcp-Param-*`
/// headers its arguments call for.
pub struct Route {
    /// The slot of the backend that serves the call.
    pub backend: usize,
    /// The name policy is about: the exposed tool or prompt name, or the resource URI.
    pub exposed: String,
    /// The name or URI at the backend.
    pub name: String,
    /// The `Mcp-Param-*` headers the tool's arguments call for (HTTP backends).
    pub param_headers: Vec<(String, String)>,
}

impl Gateway {
    /// Finds the backend that serves `exposed` (the name or URI the pipeline judged) and
    /// rewrites the call to the backend's own name.
    pub(super) fn route(&self, call: &mut Call, exposed: String) -> Result<Route, Refusal> {
        let catalog = self.catalog();
        let simple = |backend, exposed: String, name| Route { backend, exposed, name, param_headers: Vec::new() };
        match call.method {
            Method::ToolsCall => {
                let e = catalog.tool(&exposed).ok_or_else(|| Refusal::UnknownTool(exposed.clone()))?;
                let param_headers = match &call.arguments {
                    Some(args) if !e.param_headers.is_empty() => param_headers::headers_for(&e.param_headers, args),
                    _ => Vec::new(),
                };
                call.params.set_str("name", &e.original);
                Ok(Route { backend: e.backend, exposed, name: e.original.clone(), param_headers })
            }
            Method::PromptsGet => {
                let e = catalog.prompt(&exposed).ok_or_else(|| Refusal::UnknownPrompt(exposed.clone()))?;
                call.params.set_str("name", &e.original);
                Ok(simple(e.backend, exposed, e.original.clone()))
            }
            Method::ResourcesRead | Method::ResourcesSubscribe | Method::ResourcesUnsubscribe => {
                let b = catalog.resource_backend(&exposed).ok_or(Refusal::UnknownResource(exposed.clone()))?;
                Ok(simple(b, exposed.clone(), exposed))
            }
            Method::Complete => {
                let Some(r) = call.reference.as_mut() else {
                    return Err(Refusal::InvalidParams("`ref` is required".into()));
                };
                let route = if r.prompt {
                    let e = catalog.prompt(&exposed).ok_or_else(|| Refusal::UnknownPrompt(exposed.clone()))?;
                    r.fields.insert("name".into(), e.original.clone().into());
                    simple(e.backend, exposed, e.original.clone())
                } else {
                    let b = catalog.resource_backend(&exposed).ok_or(Refusal::UnknownResource(exposed.clone()))?;
                    simple(b, exposed.clone(), exposed)
                };
                let rewritten = serde_json::value::to_raw_value(&r.fields).expect("map serializes");
                call.params.0.insert("ref".into(), rewritten);
                Ok(route)
            }
            method => Err(Refusal::MethodNotFound(method.as_str().to_string())),
        }
    }
}
