//! Refuses JSON texts in which any object, at any depth, repeats a key.
//!
//! The gateway forwards a client's raw `arguments` bytes to backends. JSON leaves duplicate keys undefined: one parser
//! keeps the first, another the last, so validation and the backend could each see a different value. Refusing
//! duplicates anywhere removes the ambiguity instead of betting on which parser the backend uses.
//!
//! Hand-written because serde_json silently keeps the last duplicate and has no strict mode. It walks the text with a
//! serde `Visitor` rather than building a `serde_json::Value`: nothing is allocated except the keys of the object being
//! checked (and only those that contain escapes), and the JSON path is rendered only when there is an error.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// How many nested objects/arrays we accept. Kept below serde_json's own recursion limit (128) so that our clear
/// message is the one callers see; no tool argument is legitimately this deep.
const MAX_DEPTH: usize = 100;

/// Why a JSON text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotStrictJson {
    /// An object has the same key twice.
    #[error("duplicate key `{key}` at {at}")]
    DuplicateKey {
        /// The key, unescaped.
        key: String,
        /// The JSON Pointer of the object, or "the top level".
        at: String,
    },
    /// More than `MAX_DEPTH` arrays and objects inside one another.
    #[error("nested too deeply at {at} (limit {MAX_DEPTH})")]
    TooDeep {
        /// The JSON Pointer of the value past the limit.
        at: String,
    },
    /// Not JSON at all (the parser's reason).
    #[error("invalid JSON: {0}")]
    Invalid(String),
}

/// Checks that `json` is one valid JSON value in which no object has the same key twice (keys are compared after
/// unescaping, so `"a"` and `"\u0061"` clash). The error names the JSON Pointer of the offending object.
pub fn check_unique_keys(json: &str) -> Result<(), NotStrictJson> {
    // The refusal is passed out of band: serde_json would append " at line L column C" to a custom error, and the
    // path already says where the problem is.
    let refusal = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(json);
    let walked = Walk { path: &Path::Root, depth: 0, refusal: &refusal }.deserialize(&mut de).and_then(|()| de.end());
    match (walked, refusal.take()) {
        (Err(_), Some(refusal)) => Err(refusal),
        (Err(e), None) => Err(NotStrictJson::Invalid(e.to_string())),
        (Ok(()), _) => Ok(()),
    }
}

/// Where a value sits, as a chain of borrowed segments up to the root: walking costs nothing, and the string form is
/// built only for an error.
enum Path<'a> {
    Root,
    Key(&'a str, &'a Path<'a>),
    Index(usize, &'a Path<'a>),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            // JSON Pointer (RFC 6901) escaping, so a key containing `/` cannot be mistaken for two segments.
            Path::Key(key, parent) => write!(f, "{parent}/{}", key.replace('~', "~0").replace('/', "~1")),
            Path::Index(index, parent) => write!(f, "{parent}/{index}"),
        }
    }
}

impl Path<'_> {
    fn describe(&self) -> String {
        match self {
            Path::Root => "the top level".to_owned(),
            _ => self.to_string(),
        }
    }
}

/// The seed (and visitor) for one value: carries where the value is, how deep, and where to put a refusal.
#[derive(Clone, Copy)]
struct Walk<'a> {
    path: &'a Path<'a>,
    /// Number of objects/arrays enclosing this value.
    depth: usize,
    refusal: &'a Cell<Option<NotStrictJson>>,
}

impl Walk<'_> {
    fn refuse<E: de::Error>(&self, refusal: NotStrictJson) -> E {
        let error = E::custom(&refusal);
        self.refusal.set(Some(refusal));
        error
    }

    fn enter_container<E: de::Error>(&self) -> Result<usize, E> {
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            return Err(self.refuse(NotStrictJson::TooDeep { at: self.path.describe() }));
        }
        Ok(depth)
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = self.enter_container()?;
        let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if seen.contains(&key) {
                return Err(
                    self.refuse(NotStrictJson::DuplicateKey { key: key.into_owned(), at: self.path.describe() })
                );
            }
            map.next_value_seed(Walk { path: &Path::Key(&key, self.path), depth, refusal: self.refusal })?;
            seen.insert(key);
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.enter_container()?;
        let mut index = 0;
        while seq
            .next_element_seed(Walk { path: &Path::Index(index, self.path), depth, refusal: self.refusal })?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }

    // Scalars hold no keys. The 128-bit forms only appear if a dependency turns on serde_json's
    // `arbitrary_precision`; accepting them keeps the check independent of feature unification.
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        Ok(())
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

/// Reads an object key, borrowing it from the input when it has no escapes (the common case) and owning the
/// unescaped form otherwise. serde's own `Cow<str>` impl always copies, hence this seed.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_owned()))
    }

    fn visit_string<E: de::Error>(self, key: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check, with its refusal as the text clients see.
    fn checked(json: &str) -> Result<(), String> {
        check_unique_keys(json).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_unique_keys_at_every_depth() {
        assert_eq!(checked(r#"{"a": 1, "b": {"a": 2, "c": [1, {"a": 3}]}, "d": null}"#), Ok(()));
        for scalar in ["1", "-2.5e10", "\"s\"", "true", "null", "[]", "{}", "18446744073709551616"] {
            assert_eq!(checked(scalar), Ok(()), "{scalar}");
        }
    }

    #[test]
    fn refuses_flat_duplicate() {
        assert_eq!(checked(r#"{"a": 1, "b": 2, "a": 3}"#), Err("duplicate key `a` at the top level".into()));
    }

    #[test]
    fn names_the_path_of_a_nested_duplicate() {
        let json = r#"{"arguments": {"items": [{}, {"a": 1}, {"b": [], "a": 1, "a": 2}]}}"#;
        assert_eq!(checked(json), Err("duplicate key `a` at /arguments/items/2".into()));
    }

    #[test]
    fn same_key_in_sibling_objects_is_fine() {
        assert_eq!(checked(r#"[{"a": 1}, {"a": 2}, {"x": {"a": 3}, "a": 4}]"#), Ok(()));
    }

    #[test]
    fn keys_equal_after_unescaping_are_duplicates() {
        assert_eq!(checked(r#"{"a": 1, "\u0061": 2}"#), Err("duplicate key `a` at the top level".into()));
        assert_eq!(checked(r#"{"\u0061": 1, "a": 2}"#), Err("duplicate key `a` at the top level".into()));
        assert_eq!(checked(r#"{"a": 1, "A": 2, "a\u0000": 3}"#), Ok(()));
    }

    #[test]
    fn path_segments_are_json_pointer_escaped() {
        let err = checked(r#"{"a/b": {"~": {"k": 1, "k": 2}}}"#).unwrap_err();
        assert_eq!(err, "duplicate key `k` at /a~1b/~0");
    }

    #[test]
    fn refuses_deep_nesting_cleanly() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(checked(&ok), Ok(()));

        for depth in [MAX_DEPTH + 1, 128, 129, 100_000] {
            let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let err = checked(&deep).unwrap_err();
            assert!(err.starts_with("nested too deeply at /0/0/"), "{depth}: {err}");
        }
        let objects = format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200));
        assert!(checked(&objects).unwrap_err().starts_with("nested too deeply at /a/a/"));
    }

    #[test]
    fn refuses_invalid_json() {
        for bad in ["", "{", r#"{"a" 1}"#, r#"{"a": 1,}"#, "[1, 2", "{} {}", "{\"a\": tru}", "{1: 2}", "'a'"] {
            let err = checked(bad).unwrap_err();
            assert!(err.starts_with("invalid JSON: "), "{bad:?}: {err}");
        }
    }

    #[test]
    fn duplicate_found_before_a_later_syntax_error_is_reported() {
        // Either answer refuses the input; naming the duplicate is the more useful one.
        assert_eq!(checked(r#"{"a": 1, "a": 2, "#), Err("duplicate key `a` at the top level".into()));
    }
}
