//! The Streamable HTTP front door, both generations, against the real binaries on loopback.

mod common;

use common::governance::audit_records;
use common::*;
use serde_json::{Value, json};

fn mock_gateway(args: &[&str]) -> Gateway {
    Gateway::start(&mock_stdio_backend("mock", None, args))
}

#[tokio::test]
async fn legacy_session_lifecycle() {
    let gw = mock_gateway(&["--generation", "legacy"]);
    let c = HttpClient::legacy(&gw.url, json!({})).await;
    let names = c.tool_names().await;
    assert!(names.contains(&"mock__echo".to_string()), "{names:?}");
    assert_eq!(names, c.tool_names().await, "the order is deterministic");
    assert_eq!(c.request("ping", json!({})).await.json()["result"], json!({}));
    assert_eq!(c.request("logging/setLevel", json!({"level": "warning"})).await.json()["result"], json!({}));
    assert_eq!(c.request("logging/setLevel", json!({"level": "loud"})).await.error_code(), Some(-32602));

    // DELETE ends the session; it is then unknown (404), as is a made-up one.
    let del = c.http.delete(&gw.url).header("mcp-session-id", c.session.as_ref().unwrap()).send().await.unwrap();
    assert_eq!(del.status(), 200);
    assert_eq!(c.request("tools/list", json!({})).await.status, 404);
    let mut other = c.clone();
    other.session = Some("no-such-session".into());
    assert_eq!(other.request("tools/list", json!({})).await.status, 404);
    let get = c.http.get(&gw.url).header("mcp-session-id", "no-such-session").header("accept", "text/event-stream");
    assert_eq!(get.send().await.unwrap().status(), 404);

    // Neither a session nor stateless _meta: refused with a hint.
    let bare = HttpClient::new(&gw.url);
    let r = bare.request("tools/list", json!({})).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("initialize"), "{}", r.body);
}

#[tokio::test]
async fn modern_discover_lists_and_header_checks() {
    let gw = mock_gateway(&[]);
    let c = HttpClient::modern(&gw.url);
    let d = c.request("server/discover", json!({})).await.json();
    assert_eq!(d["result"]["resultType"], "complete");
    assert!(d["result"]["supportedVersions"].as_array().unwrap().contains(&json!(MODERN)));
    assert!(d["result"]["supportedVersions"].as_array().unwrap().contains(&json!(LEGACY)));
    let l = c.request("tools/list", json!({})).await.json();
    assert_eq!(l["result"]["resultType"], "complete");
    assert!(l["result"]["ttlMs"].as_u64().is_some() && l["result"]["cacheScope"].is_string(), "{l}");

    let body = c.request_body(json!(7), "tools/call", json!({"name": "mock__echo", "arguments": {}}));
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("mcp-method", "tools/call")], "Mcp-Name"),
        (&[("mcp-method", "tools/list"), ("mcp-name", "mock__echo")], "Mcp-Method"),
        (&[("mcp-method", "tools/call"), ("mcp-name", "mock__other")], "does not match"),
        (&[("mcp-name", "mock__echo")], "Mcp-Method"),
        (&[("mcp-method", "tools/call"), ("mcp-name", "=?base64?bm9wZQ==?=")], "nope"),
    ];
    for (headers, why) in cases {
        let r = c.post_raw(&body, headers).await;
        assert_eq!(r.status, 400, "{headers:?}: {r:?}");
        assert_eq!(r.error_code(), Some(-32020), "{headers:?}");
        assert!(r.body.contains(why), "{headers:?}: {}", r.body);
    }
    // The base64 form of the right name is accepted.
    let ok = c.post_raw(&body, &[("mcp-method", "tools/call"), ("mcp-name", "=?base64?bW9ja19fZWNobw==?=")]).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["result"]["structuredContent"], json!({}));

    // The version header must match _meta; an unknown version is refused with the list.
    let mut wrong = c.clone();
    wrong.version = "2025-06-18".into();
    let r = wrong.post_raw(&body, &[("mcp-method", "tools/call"), ("mcp-name", "mock__echo")]).await;
    assert_eq!((r.status, r.error_code()), (400, Some(-32020)), "{r:?}");
    let bad = json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{
        "io.modelcontextprotocol/protocolVersion":"1999-01-01","io.modelcontextprotocol/clientCapabilities":{}}}});
    let mut future = c.clone();
    future.version = "1999-01-01".into();
    let r = future.post_raw(&bad.to_string(), &[("mcp-method", "tools/list")]).await;
    assert_eq!((r.status, r.error_code()), (400, Some(-32022)), "{r:?}");
    assert_eq!(r.json()["error"]["data"]["requested"], "1999-01-01");
    assert!(r.json()["error"]["data"]["supported"].as_array().unwrap().contains(&json!(MODERN)));
    let no_caps = json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{
        "io.modelcontextprotocol/protocolVersion":MODERN}}});
    let r = c.post_raw(&no_caps.to_string(), &[("mcp-method", "tools/list")]).await;
    assert_eq!((r.status, r.error_code()), (400, Some(-32602)), "{r:?}");
    // Methods the stateless revision removed, and unknown ones, are 404 with -32601.
    for m in ["ping", "initialize", "no/such"] {
        let r = c.post_raw(&c.request_body(json!(3), m, json!({})), &[("mcp-method", m)]).await;
        assert_eq!((r.status, r.error_code()), (404, Some(-32601)), "{m}: {r:?}");
        assert_eq!(r.json()["id"], 3);
    }

    // x-mcp-header arguments must be mirrored in Mcp-Param-* headers that match the body.
    let args =
        json!({"name": "mock__test_custom_header", "arguments": {"region": "eu-west-1", "priority": 5, "query": "q"}});
    let body = c.request_body(json!(4), "tools/call", args);
    let base = [("mcp-method", "tools/call"), ("mcp-name", "mock__test_custom_header")];
    let with = |extra: &[(&'static str, &'static str)]| base.iter().chain(extra).copied().collect::<Vec<_>>();
    let r = c.post_raw(&body, &with(&[("mcp-param-region", "eu-west-1"), ("mcp-param-priority", "5")])).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.json()["result"]["content"][0]["text"].as_str().unwrap().contains("eu-west-1"));
    for bad in [
        vec![("mcp-param-region", "eu-west-1")],
        vec![("mcp-param-region", "us-east-1"), ("mcp-param-priority", "5")],
        vec![("mcp-param-region", "=?base64?%%%?="), ("mcp-param-priority", "5")],
    ] {
        let r = c.post_raw(&body, &with(&bad)).await;
        assert_eq!((r.status, r.error_code()), (400, Some(-32020)), "{bad:?}: {r:?}");
    }

    // No session exists in the stateless generation: GET has nothing to offer.
    assert_eq!(c.http.get(&gw.url).header("accept", "text/event-stream").send().await.unwrap().status(), 405);
}

#[tokio::test]
async fn host_and_origin_are_validated() {
    let gw = mock_gateway(&[]);
    let c = HttpClient::modern(&gw.url);
    let body = c.request_body(json!(1), "tools/list", json!({}));
    for (k, v) in [("host", "evil.example"), ("origin", "http://evil.example"), ("origin", "null")] {
        let r = c.post_raw(&body, &[("mcp-method", "tools/list"), (k, v)]).await;
        assert_eq!(r.status, 403, "{k}: {v}");
    }
    for (k, v) in [
        ("host", "localhost"),
        ("origin", "http://localhost:3000"),
        ("origin", "http://127.0.0.1"),
        ("host", "[::1]:1"),
    ] {
        let r = c.post_raw(&body, &[("mcp-method", "tools/list"), (k, v)]).await;
        assert_eq!(r.status, 200, "{k}: {v}: {}", r.body);
    }
}

/// The backend's `result` reaches the client byte for byte, for each backend transport and
/// generation, compared with the same call made directly.
#[tokio::test]
async fn results_are_spliced_byte_for_byte() {
    for generation in ["legacy", "modern"] {
        // Direct over stdio.
        let mut direct = StdioClient::spawn(&mock_bin(), &["--generation", generation], None);
        let call = json!({"name": "exact_bytes", "arguments": {}});
        let direct_raw = if generation == "legacy" {
            direct.initialize().await;
            raw_member(&direct.request(json!(2), "tools/call", call).await, "result")
        } else {
            let mut p = call.clone();
            p["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}});
            raw_member(&direct.request(json!(2), "tools/call", p).await, "result")
        };
        assert!(direct_raw.contains("1e3") && direct_raw.contains("\\u00e9"), "mock's exact bytes: {direct_raw}");

        let http = MockHttp::start(&["--generation", generation]);
        let config = mock_stdio_backend("s", None, &["--generation", generation]) + &http_backend("h", None, &http.url);
        let gw = Gateway::start(&config);
        let same_gen = if generation == "legacy" {
            HttpClient::legacy(&gw.url, json!({})).await
        } else {
            HttpClient::modern(&gw.url)
        };
        for tool in ["s__exact_bytes", "h__exact_bytes"] {
            let r = same_gen.call(tool, json!({})).await;
            assert_eq!(r.raw_result(), direct_raw, "{generation} backend via {tool}");
        }
        // A stateless client of a session-based backend gets the same bytes with
        // `resultType` added (2026-07-28 requires it) before the closing brace, as the result
        // streams through, nothing else changed.
        if generation == "legacy" {
            for tool in ["s__exact_bytes", "h__exact_bytes"] {
                let r = HttpClient::modern(&gw.url).call(tool, json!({})).await;
                let without_brace = &direct_raw[..direct_raw.len() - 1];
                assert_eq!(r.raw_result(), format!("{without_brace},\"resultType\":\"complete\"}}"), "{tool}");
            }
        }
    }
}

#[tokio::test]
async fn sse_or_json_as_accepted_with_progress_mapped_back() {
    let gw = mock_gateway(&[]);
    for mut c in [HttpClient::legacy(&gw.url, json!({})).await, HttpClient::modern(&gw.url)] {
        for token in [json!("tok-1"), json!(42)] {
            let args = json!({"name": "mock__progress", "arguments": {"steps": 3, "delay_ms": 5}, "_meta": {"progressToken": token}});
            let r = c.request("tools/call", args.clone()).await;
            assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
            assert_eq!(r.messages.len(), 4, "3 progress notifications then the result: {:?}", r.messages);
            for m in &r.messages[..3] {
                let v: Value = serde_json::from_str(m).unwrap();
                assert_eq!(v["method"], "notifications/progress");
                assert_eq!(v["params"]["progressToken"], token, "the client's own token comes back");
            }
            let text = r.json()["result"]["content"][0]["text"].as_str().unwrap().to_string();
            assert!(text.contains("sentinel-"), "the backend saw a gateway-minted token, not the client's: {text}");
            c.accept = "application/json";
            let r = c.request("tools/call", args).await;
            assert!(r.headers["content-type"].to_str().unwrap().starts_with("application/json"));
            assert!(r.json()["result"]["content"].is_array());
            c.accept = "text/event-stream";
            for (method, params) in
                [("tools/list", json!({})), ("tools/call", json!({"name": "mock__echo", "arguments": {}}))]
            {
                let r = c.request(method, params).await;
                assert!(
                    r.headers["content-type"].to_str().unwrap().starts_with("text/event-stream"),
                    "SSE-only client: {r:?}"
                );
                assert!(r.json()["result"].is_object());
            }
            c.accept = "application/json, text/event-stream";
        }
    }
}

#[tokio::test]
async fn refusals_have_their_codes() {
    let gw = mock_gateway(&[]);
    let c = HttpClient::legacy(&gw.url, json!({})).await;
    let r = c.call("mock__nope", json!({})).await;
    assert_eq!(r.error_code(), Some(-32602));
    assert_eq!(r.json()["error"]["data"]["tool"], "mock__nope");
    // Duplicate keys and case variants of known keys could make the gateway and the backend
    // read different tool names; both are refused before anything is forwarded.
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"mock__echo","name":"mock__crash"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"mock__crash","name":"mock__echo"}}"#,
    ] {
        let r = c.post_raw(body, &[]).await;
        assert_eq!(r.error_code(), Some(-32602), "{body} must be refused: {r:?}");
    }
    assert_eq!(
        c.call("mock__echo", json!({})).await.json()["result"]["structuredContent"],
        json!({}),
        "backend still up"
    );
    assert_eq!(c.request("no/such/method", json!({})).await.error_code(), Some(-32601));
    let r = c.post_raw("{not json", &[]).await;
    assert_eq!((r.status, r.error_code()), (400, Some(-32700)));
    let r = c.post_raw(r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, &[]).await;
    assert_eq!(r.error_code(), Some(-32600));
}

#[tokio::test]
async fn crash_and_timeout_answer_at_once() {
    let config = mock_stdio_backend("mock", None, &[]) + "timeout = \"400ms\"\n";
    let gw = Gateway::start(&config);
    let c = HttpClient::modern(&gw.url);
    let t = std::time::Instant::now();
    let r = c.call("mock__slow", json!({"ms": 20000})).await;
    assert_eq!(r.error_code(), Some(-32015), "{r:?}");
    assert_eq!(r.json()["error"]["data"]["timeout_ms"], 400);
    assert!(t.elapsed() < std::time::Duration::from_secs(15));
    let r = c.call("mock__crash", json!({})).await;
    assert_eq!(r.error_code(), Some(-32014), "{r:?}");
    assert_eq!(r.json()["error"]["data"]["backend"], "mock");
    // Until the backend is restarted (after a backoff of at least a quarter second), calls are
    // refused at once, not left hanging.
    assert_eq!(c.call("mock__echo", json!({})).await.error_code(), Some(-32014));
}

#[tokio::test]
async fn resources_prompts_and_completions_route_to_their_backend() {
    let gw = mock_gateway(&[]);
    for c in [HttpClient::legacy(&gw.url, json!({})).await, HttpClient::modern(&gw.url)] {
        let r = c.request("resources/read", json!({"uri": "test://static-text"})).await.json();
        assert_eq!(r["result"]["contents"][0]["text"], "This is the content of the static text resource.");
        let r = c.request("resources/read", json!({"uri": "test://template/123/data"})).await.json();
        assert!(r["result"]["contents"][0]["text"].as_str().unwrap().contains("123"), "{r}");
        let r = c
            .request(
                "prompts/get",
                json!({"name": "mock__test_prompt_with_arguments", "arguments": {"arg1": "a", "arg2": "b"}}),
            )
            .await
            .json();
        assert!(r["result"]["messages"][0]["content"]["text"].as_str().unwrap().contains("arg1='a'"), "{r}");
        let r = c.request("prompts/list", json!({})).await.json();
        assert!(r["result"]["prompts"].as_array().unwrap().iter().any(|p| p["name"] == "mock__test_simple_prompt"));
        let r = c.request("resources/templates/list", json!({})).await.json();
        assert!(
            r["result"]["resourceTemplates"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["uriTemplate"] == "test://template/{id}/data")
        );
        let r = c
            .request("completion/complete", json!({"ref": {"type": "ref/prompt", "name": "mock__test_prompt_with_arguments"}, "argument": {"name": "arg1", "value": "x"}}))
            .await
            .json();
        assert!(r["result"]["completion"]["values"].is_array(), "{r}");
        assert_eq!(c.request("resources/read", json!({"uri": "nowhere://x"})).await.error_code(), Some(-32602));
    }
}

/// A large result is streamed: the client starts receiving it before the backend's answer
/// has been read whole, and a client that goes away mid-result closes the call (its audit
/// record says how many bytes had gone by) while the gateway goes on serving. Through an
/// HTTP backend (JSON answers) and a stdio backend.
#[tokio::test]
async fn a_client_gone_mid_result_is_audited_and_the_gateway_serves_on() {
    const BYTES: u64 = 50_000_000;
    let http = MockHttp::start(&[]);
    let config = mock_stdio_backend("s", None, &[]) + &http_backend("h", None, &http.url);
    let gw = Gateway::start(&config);
    for tool in ["h__huge", "s__huge"] {
        let c = HttpClient::modern(&gw.url);
        let body = c.request_body(json!(1), "tools/call", json!({"name": tool, "arguments": {"bytes": BYTES}}));
        let mut resp = c.post(&body, &[("mcp-method", "tools/call"), ("mcp-name", tool)]).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let first = resp.chunk().await.unwrap().expect("the result's first bytes");
        assert!(first.starts_with(br#"{"jsonrpc":"2.0","id":1,"result":"#), "{:?}", &first[..first.len().min(80)]);
        drop(resp);
        eventually("the call is audited with the bytes that had gone by", || async {
            audit_records(&gw.log())
                .iter()
                .any(|r| r["tool"] == tool && r["response_bytes"].parse::<u64>().is_ok_and(|n| n > 0 && n < BYTES))
        })
        .await;
        let r = c.call(tool.replace("huge", "echo").as_str(), json!({"after": tool})).await;
        assert_eq!(r.json()["result"]["structuredContent"], json!({"after": tool}), "{r:?}");
    }
}
