//! Ranking tools by words, for `search_tools` in `discovery = "meta"`: each word of the query
//! scores where it occurs — a whole word of the exposed name most, part of the name, then the
//! title, then the description. Hand-written: a catalog is a few hundred short texts, ranked on
//! demand, for which a search index (and its crate) would cost more than the scan.

use super::Entry;

/// A tool's title and description, read from its exposed object.
#[derive(serde::Deserialize, Default)]
struct Texts {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

/// Words too common to tell tools apart: a query written as a sentence would match every
/// description through them.
const STOP: [&str; 16] =
    ["a", "an", "and", "as", "by", "for", "from", "in", "is", "it", "of", "on", "or", "the", "to", "with"];

/// The query's words: lower-case runs of letters and digits, common words left out.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOP.contains(&w.as_str()))
        .collect()
}

/// How well `e` matches `query`'s words; 0: not at all.
pub fn score(e: &Entry, query: &[String]) -> u32 {
    let texts: Texts = serde_json::from_str(&e.json).unwrap_or_default();
    let name = e.exposed.to_lowercase();
    let name_words = words(&e.exposed);
    let title = texts.title.unwrap_or_default().to_lowercase();
    let description = texts.description.unwrap_or_default().to_lowercase();
    let mut total = 0;
    for w in query {
        // "issues" finds "issue" too: a plural's stem is matched inside the texts.
        let w = match w.strip_suffix('s') {
            Some(stem) if stem.len() >= 3 => stem.to_string(),
            _ => w.clone(),
        };
        total += if name_words.contains(&w) {
            8
        } else if name.contains(w.as_str()) {
            5
        } else {
            0
        };
        if title.contains(w.as_str()) {
            total += 3;
        }
        if description.contains(w.as_str()) {
            // A word that recurs in a description counts a little more, up to a point.
            total += 1 + description.matches(w.as_str()).count().min(3) as u32;
        }
    }
    total
}

/// The entries that match `query`, best first (catalog order among equals), at most `limit`.
pub fn rank<'a>(entries: impl Iterator<Item = &'a Entry>, query: &str, limit: usize) -> Vec<&'a Entry> {
    let q = words(query);
    if q.is_empty() {
        return Vec::new();
    }
    let mut scored: Vec<(u32, usize, &Entry)> =
        entries.enumerate().map(|(i, e)| (score(e, &q), i, e)).filter(|(s, _, _)| *s > 0).collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(limit).map(|(_, _, e)| e).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, description: &str) -> Entry {
        Entry {
            exposed: name.into(),
            backend: 0,
            original: name.into(),
            json: serde_json::json!({"name": name, "description": description}).to_string(),
            param_headers: Vec::new(),
            pin: None,
        }
    }

    #[test]
    fn names_rank_above_descriptions_and_misses_are_left_out() {
        let all = [
            entry("github__create_issue", "Open an issue in a repository"),
            entry("jira__search", "Find issues by JQL"),
            entry("fetch__fetch", "Fetch a URL"),
        ];
        let names = |q: &str| rank(all.iter(), q, 10).iter().map(|e| e.exposed.clone()).collect::<Vec<_>>();
        assert_eq!(names("issue"), ["github__create_issue", "jira__search"]);
        assert_eq!(names("issues"), ["github__create_issue", "jira__search"], "a plural finds the singular");
        assert_eq!(names("search url"), ["jira__search", "fetch__fetch"], "a name word above a description word");
        assert_eq!(names("weather"), Vec::<String>::new());
        assert_eq!(names("  "), Vec::<String>::new());
        assert_eq!(rank(all.iter(), "issue", 1).len(), 1);
    }
}
