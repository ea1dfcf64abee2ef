//! `[tool_overrides]` applied to a tool's listed object: what clients see instead of what its
//! backend listed. Only the exposed object changes; routing keeps the backend's own name and
//! pinning judges the backend's own definition.

use indexmap::IndexMap;
use serde_json::value::{RawValue, to_raw_value};

use crate::config::ToolOverride;

/// Replaces `title` and `description`, and each overridden annotation (the backend's other
/// annotations stay), in `fields`. `name` is the caller's to set.
pub fn apply(o: &ToolOverride, fields: &mut IndexMap<String, Box<RawValue>>) {
    if let Some(t) = &o.title {
        fields.insert("title".into(), raw(t));
    }
    if let Some(d) = &o.description {
        fields.insert("description".into(), raw(d));
    }
    if let Some(overridden) = &o.annotations {
        let mut annotations: serde_json::Map<String, serde_json::Value> =
            fields.get("annotations").and_then(|a| serde_json::from_str(a.get()).ok()).unwrap_or_default();
        for (k, v) in overridden {
            annotations.insert(k.clone(), v.clone());
        }
        fields.insert("annotations".into(), raw(&annotations));
    }
}

fn raw(v: &impl serde::Serialize) -> Box<RawValue> {
    to_raw_value(v).expect("strings and JSON maps serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_description_and_annotations_are_replaced_others_kept() {
        let mut fields: IndexMap<String, Box<RawValue>> = serde_json::from_str(
            r#"{"name":"x","description":"old","annotations":{"readOnlyHint":false,"openWorldHint":true},"inputSchema":{}}"#,
        )
        .unwrap();
        let o = ToolOverride {
            description: Some("new".into()),
            title: Some("T".into()),
            annotations: Some(serde_json::json!({"readOnlyHint": true}).as_object().unwrap().clone()),
            name: None,
        };
        apply(&o, &mut fields);
        assert_eq!(
            serde_json::to_string(&fields).unwrap(),
            r#"{"name":"x","description":"new","annotations":{"readOnlyHint":true,"openWorldHint":true},"inputSchema":{},"title":"T"}"#
        );
    }
}
