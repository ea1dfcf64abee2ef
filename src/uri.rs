//! Resource URIs in RFC 3986 normal form, so that policy judges the resource a URI names and
//! not one spelling of it: `test://a/b/../c` and `test://a/%62/../c` are `test://a/c`.
//!
//! Hand-written rather than with the `url` crate: MCP URIs use any scheme (`test://`,
//! `file://`, custom ones), and `url` parses "special" schemes (`file`, `http`...) by the WHATWG
//! rules — re-encoding characters, rewriting hosts and Windows drive letters — so what it
//! prints is not only the URI normalised. What is needed here is exactly RFC 3986 §6.2.2:
//! the scheme in lower case (§3.1: it is case-insensitive), percent-escapes of unreserved
//! characters decoded and the others in upper-case hex (§6.2.2.1–2), and dot-segments removed
//! from the path (§5.2.4). Host case is left alone: custom schemes often put a case-significant
//! name there.

use std::borrow::Cow;

/// `uri` in normal form; borrowed when it already is.
pub fn normalize(uri: &str) -> Cow<'_, str> {
    let (scheme, rest) = match scheme_end(uri) {
        Some(i) => (&uri[..i], &uri[i..]),
        None => ("", uri),
    };
    let rest = percent_normalized(rest);
    // After the scheme: `//authority`, then the path, up to the query or fragment.
    let path_start = match rest.strip_prefix("//") {
        Some(after) => 2 + after.find(['/', '?', '#']).unwrap_or(after.len()),
        None => 0,
    };
    let path_end = path_start + rest[path_start..].find(['?', '#']).unwrap_or(rest.len() - path_start);
    let path = &rest[path_start..path_end];
    let clean_path = remove_dot_segments(path);
    let lower_scheme = scheme.bytes().any(|b| b.is_ascii_uppercase());
    if !lower_scheme && matches!(rest, Cow::Borrowed(_)) && clean_path.len() == path.len() {
        return Cow::Borrowed(uri);
    }
    let mut out = String::with_capacity(uri.len());
    out.push_str(&scheme.to_ascii_lowercase());
    out.push_str(&rest[..path_start]);
    out.push_str(&clean_path);
    out.push_str(&rest[path_end..]);
    Cow::Owned(out)
}

/// Whether `uri` is already in normal form.
pub fn is_normal(uri: &str) -> bool {
    matches!(normalize(uri), Cow::Borrowed(_))
}

/// The index just past `scheme:`, when the URI starts with a valid scheme (§3.1).
fn scheme_end(uri: &str) -> Option<usize> {
    let colon = uri.find(':')?;
    let scheme = &uri[..colon];
    let mut bytes = scheme.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    (first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))).then_some(colon + 1)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes `%XX` of unreserved characters and upper-cases the hex of the others; a `%` not
/// followed by two hex digits is left as it is.
fn percent_normalized(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut changed = false;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() {
            let hex = |c: u8| (c as char).to_digit(16).expect("a hex digit") as u8;
            let byte = hex(b[i + 1]) << 4 | hex(b[i + 2]);
            if is_unreserved(byte) {
                out.push(byte);
                changed = true;
            } else {
                let upper = [b'%', b[i + 1].to_ascii_uppercase(), b[i + 2].to_ascii_uppercase()];
                changed |= upper[1] != b[i + 1] || upper[2] != b[i + 2];
                out.extend_from_slice(&upper);
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    if !changed {
        return Cow::Borrowed(s);
    }
    // Only ASCII escapes were replaced by ASCII bytes: still UTF-8.
    Cow::Owned(String::from_utf8(out).expect("still UTF-8"))
}

/// RFC 3986 §5.2.4, step by step (A to E).
fn remove_dot_segments(path: &str) -> Cow<'_, str> {
    let has_dot_segment = path == "." || path == ".." || path.split('/').any(|seg| seg == "." || seg == "..");
    if !has_dot_segment {
        return Cow::Borrowed(path);
    }
    let mut input = path;
    let mut output = String::with_capacity(path.len());
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../").or_else(|| input.strip_prefix("./")) {
            input = rest; // A
        } else if input.starts_with("/./") {
            input = &input[2..]; // B
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") || input == "/.." {
            // C: the last segment of the output goes, with the `/` before it.
            input = if input == "/.." { "/" } else { &input[3..] };
            let cut = output.rfind('/').unwrap_or(0);
            output.truncate(cut);
        } else if input == "." || input == ".." {
            input = ""; // D
        } else {
            // E: the first segment, with its leading `/` if any, moves to the output.
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    Cow::Owned(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_3986_examples_and_ours() {
        let cases = [
            // §5.2.4's own examples, as whole URIs.
            ("test://a/b/c/./../../g", "test://a/g".to_string()),
            ("test://a/mid/content=5/../6", "test://a/mid/6".into()),
            ("test://template/../data", "test://template/data".into()),
            ("test://template/%2E%2E/data", "test://template/data".into()),
            ("test://template/%2e%2E/%2e/data", "test://template/data".into()),
            ("test://template/x/..", "test://template/".into()),
            ("file:///srv/public/../secret", "file:///srv/secret".into()),
            ("file:///srv/public/%2e%2e/secret", "file:///srv/secret".into()),
            ("TEST://Host/A", "test://Host/A".into()),
            ("test://h/%7Euser/%61", "test://h/~user/a".into()),
            ("test://h/a%2fb", "test://h/a%2Fb".into()),
            ("test://h/a?x=/../y#/../z", "test://h/a?x=/../y#/../z".into()),
            ("urn:a/../b", "urn:/b".into()),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), want, "{input}");
            assert!(is_normal(&want), "{want} is a fixed point");
        }
    }

    #[test]
    fn normal_uris_are_borrowed_untouched() {
        for uri in [
            "test://static/resource/1",
            "file:///home/me/My%20Docs/a.txt",
            "test://h/a%2Fb",
            "custom:opaque-thing",
            "test://h/..a/b..",
            "no scheme at all",
            "test://h/%zz/%",
            "",
        ] {
            assert!(matches!(normalize(uri), Cow::Borrowed(_)), "{uri}");
        }
    }
}
