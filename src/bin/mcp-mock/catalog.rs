//! What the mock advertises: tools, prompts, resources and templates, in a fixed
//! order so every `*/list` is deterministic (the 2026-07-28 suite checks this).
//!
//! `test_simple_text` must stay first: the header-validation scenario calls the
//! first listed tool with `{}` arguments and expects success.

use serde_json::{Value, json};

fn tool(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "description": description, "inputSchema": schema})
}

fn no_args() -> Value {
    json!({"type": "object", "properties": {}})
}

fn props(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required})
}

/// The fixed tools, in list order.
pub fn static_tools() -> Vec<Value> {
    let mut tools = vec![
        tool("test_simple_text", "Returns simple text content", no_args()),
        tool("test_image_content", "Returns image content", no_args()),
        tool("test_audio_content", "Returns audio content", no_args()),
        tool("test_embedded_resource", "Returns an embedded resource", no_args()),
        tool("test_multiple_content_types", "Returns text, image and resource content", no_args()),
        tool("test_tool_with_logging", "Sends three log messages while running", no_args()),
        tool("test_error_handling", "Always returns an error result", no_args()),
        tool("test_tool_with_progress", "Reports progress 0, 50, 100", no_args()),
        tool(
            "test_sampling",
            "Asks the client for an LLM completion",
            props(json!({"prompt": {"type": "string", "description": "The prompt to send"}}), &["prompt"]),
        ),
        tool(
            "test_elicitation",
            "Asks the user for input",
            props(json!({"message": {"type": "string", "description": "The message to show"}}), &["message"]),
        ),
        tool("test_elicitation_sep1034_defaults", "Elicitation with defaults (SEP-1034)", no_args()),
        tool("test_elicitation_sep1330_enums", "Elicitation with enum variants (SEP-1330)", no_args()),
        json!({
            "name": "json_schema_2020_12_tool",
            "description": "Tool with JSON Schema 2020-12 features",
            "inputSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {"address": {"$anchor": "addressDef", "type": "object",
                    "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
                "properties": {
                    "name": {"type": "string"},
                    "address": {"$ref": "#/$defs/address"},
                    "contactMethod": {"type": "string", "enum": ["phone", "email"]},
                    "phone": {"type": "string"},
                    "email": {"type": "string"}
                },
                "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
                "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
                "then": {"required": ["phone"]},
                "else": {"required": ["email"]},
                "additionalProperties": false
            }
        }),
        tool(
            "test_custom_header",
            "Parameters mirrored into Mcp-Param-* headers (x-mcp-header)",
            json!({"type": "object", "properties": {
                "region": {"type": "string", "description": "Mirrored as Mcp-Param-Region", "x-mcp-header": "Region"},
                "priority": {"type": "integer", "description": "Mirrored as Mcp-Param-Priority", "x-mcp-header": "Priority"},
                "verbose": {"type": "boolean", "description": "Mirrored as Mcp-Param-Verbose", "x-mcp-header": "Verbose"},
                "query": {"type": "string", "description": "Not mirrored"}
            }, "required": ["region"]}),
        ),
    ];
    for (name, description) in [
        ("test_input_required_result_elicitation", "MRTR: one elicitation input"),
        ("test_input_required_result_sampling", "MRTR: one sampling input"),
        ("test_input_required_result_list_roots", "MRTR: one roots/list input"),
        ("test_input_required_result_request_state", "MRTR: input plus requestState"),
        ("test_input_required_result_multiple_inputs", "MRTR: elicitation, sampling and roots at once"),
        ("test_input_required_result_multi_round", "MRTR: two rounds of input"),
        ("test_input_required_result_tampered_state", "MRTR: integrity-protected requestState"),
        ("test_input_required_result_capabilities", "MRTR: only asks for declared capabilities"),
        ("test_streaming_elicitation", "Needs elicitation (MRTR on modern, a request on legacy)"),
        ("test_missing_capability", "Requires the client's sampling capability"),
        ("test_logging_tool", "Logs one message (only when the request asked for logs)"),
        ("test_trigger_tool_change", "Emits notifications/tools/list_changed"),
        ("test_trigger_prompt_change", "Emits notifications/prompts/list_changed"),
    ] {
        tools.push(tool(name, description, no_args()));
    }
    tools.extend(gateway_tools());
    tools
}

/// Tools for Sentinel's own tests.
fn gateway_tools() -> Vec<Value> {
    let open = json!({"type": "object", "additionalProperties": true});
    vec![
        tool("echo", "Returns its arguments as text and, byte for byte, as structuredContent", open),
        tool("exact_bytes", "Returns a fixed result whose exact bytes tests compare", no_args()),
        tool(
            "slow",
            "Sleeps then answers; cancellable",
            json!({"type": "object", "properties": {"ms": {"type": "integer", "minimum": 0}}}),
        ),
        tool(
            "progress",
            "Sends progress notifications then answers",
            json!({"type": "object", "properties": {
                "steps": {"type": "integer", "minimum": 0}, "delay_ms": {"type": "integer", "minimum": 0}}}),
        ),
        tool("crash", "Exits the process (code 3) without answering", no_args()),
        tool("ping_and_roots", "Session-based: pings the client, then asks roots/list, mid-call", no_args()),
        tool(
            "roots_later",
            "Session-based: answers at once, then asks roots/list outside any call after `ms`",
            json!({"type": "object", "properties": {"ms": {"type": "integer", "minimum": 0}}}),
        ),
        tool("garbage", "Writes a non-JSON line, then answers", no_args()),
        tool(
            "stderr",
            "Writes the given bytes (hex) to stderr, `repeat` times, then answers",
            json!({"type": "object", "properties": {
                "hex": {"type": "string"}, "repeat": {"type": "integer", "minimum": 1}}}),
        ),
        tool(
            "huge",
            "Returns a text result of the given size",
            json!({"type": "object", "properties": {"bytes": {"type": "integer", "minimum": 0}}}),
        ),
        tool("whoami", "Reports what the server knows about this call", no_args()),
        tool(
            "bench",
            "sentinel-bench's call: `bytes` x's of text (or a short one) and {client, seq} back",
            json!({"type": "object", "properties": {
                "client": {"type": "integer", "minimum": 0},
                "seq": {"type": "integer", "minimum": 0},
                "bytes": {"type": "integer", "minimum": 0, "maximum": 67108864}
            }, "required": ["client", "seq"], "additionalProperties": false}),
        ),
        tool(
            "validated",
            "Echoes its arguments; a strict inputSchema for the gateway's validation",
            validated_schema(),
        ),
        tool(
            "add_tool",
            "Adds a tool at runtime and announces list_changed",
            props(json!({"name": {"type": "string"}}), &["name"]),
        ),
        tool(
            "update_resource",
            "Announces notifications/resources/updated for `uri` to whoever subscribed to it",
            props(json!({"uri": {"type": "string"}}), &["uri"]),
        ),
        tool(
            "redescribe",
            "Changes a tool's description from now on and announces list_changed (a rug pull)",
            props(json!({"name": {"type": "string"}, "description": {"type": "string"}}), &["name", "description"]),
        ),
        tool(
            "log",
            "Emits one notifications/message",
            props(json!({"level": {"type": "string"}, "message": {"type": "string"}}), &["message"]),
        ),
    ]
}

/// The schema of `validated`: one of each kind of rule the gateway must check (`$defs`/`$ref`,
/// `oneOf`, `format`, `pattern`, `required`, `additionalProperties: false`).
fn validated_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "contact": {"oneOf": [
                {"type": "object", "properties": {"email": {"type": "string", "format": "email"}},
                 "required": ["email"], "additionalProperties": false},
                {"type": "object", "properties": {"phone": {"type": "string", "pattern": "^\\+[0-9]{6,15}$"}},
                 "required": ["phone"], "additionalProperties": false}
            ]}
        },
        "properties": {
            "name": {"type": "string"},
            "count": {"type": "integer"},
            "email": {"type": "string", "format": "email"},
            "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"},
            "contact": {"$ref": "#/$defs/contact"}
        },
        "required": ["name", "count"],
        "additionalProperties": false
    })
}

/// A tool added at runtime by `add_tool`.
pub fn dynamic_tool(name: &str) -> Value {
    tool(name, "Added at runtime by add_tool", no_args())
}

pub fn prompts() -> Value {
    json!([
        {"name": "test_simple_prompt", "description": "A simple prompt without arguments"},
        {"name": "test_prompt_with_arguments", "description": "A prompt with two required arguments",
         "arguments": [
            {"name": "arg1", "description": "First test argument", "required": true},
            {"name": "arg2", "description": "Second test argument", "required": true}]},
        {"name": "test_prompt_with_embedded_resource", "description": "A prompt embedding a resource",
         "arguments": [{"name": "resourceUri", "description": "URI of the resource to embed", "required": true}]},
        {"name": "test_prompt_with_image", "description": "A prompt with image content"},
        {"name": "test_input_required_result_prompt", "description": "A prompt that needs elicitation input"}
    ])
}

pub fn resources() -> Value {
    json!([
        {"uri": "test://static-text", "name": "static-text", "description": "A static text resource",
         "mimeType": "text/plain"},
        {"uri": "test://static-binary", "name": "static-binary", "description": "A static binary resource",
         "mimeType": "image/png"},
        {"uri": "test://watched-resource", "name": "watched-resource",
         "description": "A resource clients may subscribe to", "mimeType": "text/plain"}
    ])
}

pub fn resource_templates() -> Value {
    json!([{"uriTemplate": "test://template/{id}/data", "name": "template-data",
            "description": "Data for an id", "mimeType": "application/json"}])
}
