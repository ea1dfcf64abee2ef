use std::net::TcpListener;

use serde_json::{Value, json};

use super::*;

/// A tool schema with `$defs`/`$ref`, `oneOf`, formats and patterns, as an MCP server might publish it.
fn contact_schema() -> Value {
    json!({
        "type": "object",
        "$defs": {
            "address": {
                "type": "object",
                "properties": {
                    "city": { "type": "string", "minLength": 1 },
                    "zip": { "type": "string", "pattern": "^[0-9]{5}$" }
                },
                "required": ["city"]
            }
        },
        "properties": {
            "email": { "type": "string", "format": "email" },
            "when": { "type": "string", "format": "date-time" },
            "site": { "type": "string", "format": "uri" },
            "address": { "$ref": "#/$defs/address" },
            "contact": {
                "oneOf": [
                    { "type": "object", "properties": { "phone": { "type": "string" } }, "required": ["phone"] },
                    { "type": "object", "properties": { "pager": { "type": "integer" } }, "required": ["pager"] }
                ]
            }
        },
        "required": ["email"],
        "additionalProperties": false
    })
}

fn validators(tools: &[(&str, Value)]) -> (Validators, Vec<String>) {
    Validators::compile(tools.iter().map(|(n, s)| (*n, s)))
}

fn contacts() -> Validators {
    let (v, problems) = validators(&[("crm__add", contact_schema())]);
    assert!(problems.is_empty(), "{problems:?}");
    v
}

fn paths(violations: &[Violation]) -> Vec<&str> {
    violations.iter().map(|v| v.path.as_str()).collect()
}

#[test]
fn valid_calls_pass() {
    let v = contacts();
    let full = json!({
        "email": "ada@example.com",
        "when": "2025-06-18T10:00:00Z",
        "site": "https://example.com/a?b=c",
        "address": { "city": "London", "zip": "12345" },
        "contact": { "phone": "+44 20 7946 0000" }
    });
    assert_eq!(v.validate("crm__add", &full), Ok(()));
    assert_eq!(v.validate("crm__add", &json!({ "email": "a@b.co", "contact": { "pager": 7 } })), Ok(()));
}

#[test]
fn every_violation_is_named_with_its_path() {
    let v = contacts();
    let bad = json!({
        "email": "not an email",
        "when": "yesterday",
        "site": "no scheme",
        "address": { "zip": "1234x" },
        "contact": { "phone": "1", "pager": 2 },
        "extra": true
    });
    let violations = v.validate("crm__add", &bad).unwrap_err();
    let mut got = paths(&violations);
    got.sort();
    assert_eq!(got, ["", "/address", "/address/zip", "/contact", "/email", "/site", "/when"], "{violations:#?}");
    let message = |path: &str| &violations.iter().find(|v| v.path == path).unwrap().message;
    assert!(message("/email").contains("email"), "{violations:#?}");
    assert!(message("/when").contains("date-time"));
    assert!(message("/site").contains("uri"));
    assert!(message("/address").contains("city"), "missing required city is reported on the object");
    assert!(message("/contact").contains("oneOf"), "{}", message("/contact"));
    assert!(message("").contains("extra"), "additionalProperties names the key");
    // Values are masked: the bad email itself is not echoed.
    assert!(violations.iter().all(|v| !v.message.contains("not an email")), "{violations:#?}");
}

#[test]
fn one_of_matching_none_is_reported() {
    let v = contacts();
    let violations = v.validate("crm__add", &json!({ "email": "a@b.co", "contact": {} })).unwrap_err();
    assert_eq!(paths(&violations), ["/contact"]);
}

#[test]
fn missing_arguments_are_validated_as_an_empty_object() {
    let v = contacts();
    let violations = v.validate_call("crm__add", None).unwrap_err();
    assert_eq!(paths(&violations), [""]);
    assert!(violations[0].message.contains("email"), "{violations:?}");
    let (open, _) = validators(&[("t", json!({ "type": "object" }))]);
    assert_eq!(open.validate_call("t", None), Ok(()));
}

#[test]
fn patterns_run_in_linear_time() {
    let (v, problems) = validators(&[("t", json!({ "properties": { "s": { "pattern": "^(a+)+$" } } }))]);
    assert!(problems.is_empty(), "{problems:?}");
    // Exponential for a backtracking engine; the `regex` engine answers at once.
    let hostile = format!("{}!", "a".repeat(30));
    assert_eq!(paths(&v.validate("t", &json!({ "s": hostile })).unwrap_err()), ["/s"]);
    assert_eq!(v.validate("t", &json!({ "s": "aaaa" })), Ok(()));
}

#[test]
fn backtracking_only_patterns_do_not_compile() {
    let (v, problems) = validators(&[("t", json!({ "properties": { "s": { "pattern": "^(a)\\1$" } } }))]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(v.validate("t", &json!({ "s": "aa" })).is_err());
}

#[test]
fn older_drafts_follow_their_schema_keyword() {
    // Draft 4: `exclusiveMaximum` is a boolean modifier of `maximum`; in 2020-12 it would be a schema error.
    let draft4 = json!({
        "$schema": "http://json-schema.org/draft-04/schema#",
        "properties": { "n": { "type": "number", "maximum": 10, "exclusiveMaximum": true } }
    });
    let draft7 = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": { "n": { "type": "integer" } },
        "properties": { "n": { "$ref": "#/definitions/n" } }
    });
    // Both spellings of a draft's URI are recognized offline, with and without the empty fragment.
    let d7_no_fragment = json!({ "$schema": "http://json-schema.org/draft-07/schema", "type": "object" });
    let d2019 = json!({ "$schema": "https://json-schema.org/draft/2019-09/schema", "type": "object" });
    let (v, problems) = validators(&[("d4", draft4), ("d7", draft7), ("d7b", d7_no_fragment), ("d2019", d2019)]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(paths(&v.validate("d4", &json!({ "n": 10 })).unwrap_err()), ["/n"]);
    assert_eq!(v.validate("d4", &json!({ "n": 9.5 })), Ok(()));
    assert_eq!(paths(&v.validate("d7", &json!({ "n": "x" })).unwrap_err()), ["/n"]);
}

#[test]
fn remote_and_file_refs_are_never_fetched() {
    // A listener the schema points at: compiling must not even connect to it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/schema.json", listener.local_addr().unwrap());
    let tools = [
        ("http", json!({ "type": "object", "properties": { "a": { "$ref": url } } })),
        ("file", json!({ "$ref": "file:///etc/passwd" })),
        ("relative", json!({ "$id": format!("{url}#"), "properties": { "a": { "$ref": "other.json" } } })),
        ("meta", json!({ "$schema": url, "type": "object" })),
        (
            "local",
            json!({ "$id": url, "$defs": { "n": { "type": "integer" } }, "properties": { "a": { "$ref": "#/$defs/n" } } }),
        ),
    ];
    let (v, problems) = validators(&tools);
    assert_eq!(problems.len(), 4, "{problems:#?}");
    for tool in ["http", "file", "relative", "meta"] {
        assert!(problems.iter().any(|p| p.contains(&format!("{tool:?}"))), "{tool}: {problems:#?}");
        let refused = v.validate(tool, &json!({})).unwrap_err();
        assert_eq!(paths(&refused), [""]);
        assert!(refused[0].message.contains("could not be compiled"), "{refused:?}");
    }
    assert!(listener.accept().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock), "nothing connected");
    assert_eq!(
        paths(&v.validate("local", &json!({ "a": "x" })).unwrap_err()),
        ["/a"],
        "a $ref inside the $id'd schema works"
    );
}

#[test]
fn international_formats_are_asserted() {
    let schema = json!({ "properties": { "e": { "format": "idn-email" }, "h": { "format": "idn-hostname" } } });
    let (v, problems) = validators(&[("t", schema)]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(v.validate("t", &json!({ "e": "josé@exämple.de", "h": "bücher.example" })), Ok(()));
    assert_eq!(paths(&v.validate("t", &json!({ "e": "josé", "h": "-bad-.example" })).unwrap_err()), ["/e", "/h"]);
}

#[test]
fn unknown_tools_and_unknown_formats() {
    let (v, problems) = validators(&[("t", json!({ "properties": { "c": { "format": "x-color" } } }))]);
    assert!(problems.is_empty());
    assert_eq!(v.validate("t", &json!({ "c": "anything" })), Ok(()), "unknown formats are annotations");
    assert_eq!(paths(&v.validate("nope", &json!({})).unwrap_err()), [""]);
}

#[test]
fn violations_text_is_one_line_each() {
    let v = [
        Violation { path: String::new(), message: "\"email\" is a required property".into() },
        Violation { path: "/address/zip".into(), message: "value does not match \"^[0-9]{5}$\"".into() },
    ];
    assert_eq!(
        violations_text(&v),
        "(root): \"email\" is a required property\n/address/zip: value does not match \"^[0-9]{5}$\""
    );
}

#[test]
fn shareable_across_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Validators>();
}
