//! The `test_input_required_result_*` tools (SEP-2322 multi round-trip requests).
//!
//! Each is written as straight-line code that asks for what it needs; on 2026-07-28
//! `Ctx::ask` turns a missing answer into an `InputRequiredResult` and the client's
//! retry replays the tool with more answers, on legacy it is a real request.

use crate::context::{Ask, Ctx, Flow};
use crate::tools::{ToolOutput, elicit, elicitation_summary, sampled_text, sampling, text};
use serde_json::{Value, json};

fn name_question(message: &str) -> Value {
    elicit(message, json!({"name": {"type": "string"}}), &["name"])
}

fn answered_name(answer: &Value) -> String {
    answer.pointer("/content/name").and_then(Value::as_str).unwrap_or("stranger").to_string()
}

fn roots_summary(answer: &Value) -> String {
    let roots = answer.get("roots").and_then(Value::as_array).cloned().unwrap_or_default();
    let uris: Vec<&str> = roots.iter().filter_map(|r| r.get("uri").and_then(Value::as_str)).collect();
    format!("Roots: {}", uris.join(", "))
}

fn ask(key: &'static str, method: &'static str, params: Value) -> Ask {
    Ask { key, method, params }
}

fn confirm() -> Ask {
    let params = elicit("Please confirm", json!({"ok": {"type": "boolean"}}), &["ok"]);
    ask("confirm", "elicitation/create", params)
}

pub async fn call(ctx: &Ctx, name: &str) -> Result<ToolOutput, Flow> {
    match name {
        "test_input_required_result_elicitation" => {
            let answer = ctx.ask("user_name", "elicitation/create", name_question("What is your name?")).await?;
            text(format!("Hello, {}!", answered_name(&answer)))
        }
        "test_input_required_result_sampling" => {
            let params = sampling("What is the capital of France?", 100);
            let answer = ctx.ask("capital_question", "sampling/createMessage", params).await?;
            text(format!("Sampling response: {}", sampled_text(&answer)))
        }
        "test_input_required_result_list_roots" => {
            let answer = ctx.ask("client_roots", "roots/list", json!({})).await?;
            text(roots_summary(&answer))
        }
        "test_input_required_result_request_state" => {
            let answer = ctx.ask_all(vec![confirm()]).await?.remove(0);
            let state = if ctx.state_verified { "state-ok" } else { "state-ok (no state needed on this protocol)" };
            text(format!("{state}: {}", elicitation_summary(&answer)))
        }
        "test_input_required_result_tampered_state" => {
            let answer = ctx.ask_all(vec![confirm()]).await?.remove(0);
            text(format!("state accepted: {}", elicitation_summary(&answer)))
        }
        "test_input_required_result_multiple_inputs" => {
            let answers = ctx
                .ask_all(vec![
                    ask("user_name", "elicitation/create", name_question("What is your name?")),
                    ask("greeting", "sampling/createMessage", sampling("Generate a greeting", 50)),
                    ask("client_roots", "roots/list", json!({})),
                ])
                .await?;
            text(format!(
                "name={}, greeting={}, {}",
                answered_name(&answers[0]),
                sampled_text(&answers[1]),
                roots_summary(&answers[2])
            ))
        }
        "test_input_required_result_multi_round" => {
            let first = ctx.ask("step1", "elicitation/create", name_question("Step 1: What is your name?")).await?;
            let color =
                elicit("Step 2: What is your favorite color?", json!({"color": {"type": "string"}}), &["color"]);
            let second = ctx.ask("step2", "elicitation/create", color).await?;
            let color = second.pointer("/content/color").and_then(Value::as_str).unwrap_or("none");
            text(format!("{} likes {color}", answered_name(&first)))
        }
        "test_input_required_result_capabilities" => {
            let caps = ctx.client_caps();
            let mut asks = Vec::new();
            if caps.get("sampling").is_some() {
                asks.push(ask("capital_question", "sampling/createMessage", sampling("Say hello", 20)));
            }
            if caps.get("elicitation").is_some() {
                asks.push(ask("user_name", "elicitation/create", name_question("What is your name?")));
            }
            let got = asks.len();
            ctx.ask_all(asks).await?;
            text(format!("received {got} input(s) for the declared capabilities"))
        }
        "test_streaming_elicitation" => {
            let params = name_question("Streaming elicitation: what is your name?");
            let answer = ctx.ask("user_input", "elicitation/create", params).await?;
            text(format!("Hello, {}!", answered_name(&answer)))
        }
        _ => Err(crate::rpc::RpcError::invalid_params(format!("Unknown tool: {name}")).into()),
    }
}
