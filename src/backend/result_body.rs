//! A backend's `result` handed on as it arrives, instead of held whole.
//!
//! A 1 MB result read whole, parsed into its own allocation and framed again for the client was
//! held three or four times over per call; at 256 clients that was ~440 MB. A `ResultBody`
//! yields the result's raw bytes in the pieces they arrived in (slices of the backend's
//! buffers, never copied), and ends with a [`Summary`] of what the pipeline needs to know about
//! the whole result without holding it: its size (for the audit), whether it is a tool error
//! (`isError: true`, for the audit's outcome), and which of the fields a stateless client
//! must see it has (`resultType`, and for `resources/read` `cacheScope` and `ttlMs`).
//!
//! The result value's closing `}` is not among the bytes: the [`Summary`] carries it, so that a
//! field a stateless client requires can be added before it (the only bytes that can differ
//! from the backend's; a whole result gets them in the same place, see `lists.rs`).
//!
//! [`ValueScan`] and [`EnvelopeScan`] are hand-written: what is needed is the byte positions of
//! one raw value across chunk boundaries, and a few top-level keys, without decoding strings or
//! numbers; the streaming JSON parsers on crates.io decode every token (copying it), which is
//! the work this module exists to avoid. They check structure (nesting, strings, escapes), not
//! every token: a result that ends early is cut off with an error, never completed.

use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use super::BackendError;

/// The largest piece handed on. The HTTP front door queues at most 16 pieces of a response
/// before it stops asking for more (hyper's write queue), so this bounds what a response
/// holds in the gateway while its client reads slowly: 16 × 16 KiB.
const PIECE: usize = 16 * 1024;

/// Why the rest of a streamed answer could not be read: the connection to the backend broke
/// mid-body. Shown as the transport's causes (`net_error::causes`), which is all the client and
/// the audit learn of it.
#[derive(Debug, thiserror::Error)]
#[error("{}", crate::net_error::causes(.0))]
pub struct BrokenBody(pub hyper::Error);

/// What is known about a whole result once its last byte went by.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// The result's size in bytes, closing brace included.
    pub bytes: u64,
    /// The result has `isError: true` at its top level (a tool that failed).
    pub is_error: bool,
    /// The result is an object: its closing `}` was held back (`closing`).
    pub object: bool,
    /// The object has no members (a field added needs no comma).
    pub empty: bool,
    /// It has a top-level `resultType` (a stateless client needs one).
    pub has_result_type: bool,
    /// It has a top-level `cacheScope` (`resources/read` for a stateless client).
    pub has_cache_scope: bool,
    /// It has a top-level `ttlMs` (likewise).
    pub has_ttl_ms: bool,
}

impl Summary {
    /// The bytes that close the result: the held-back `}`, after `fields` (`"key":value`
    /// pairs) the object lacks.
    pub fn closing(&self, fields: &[(&str, &str)]) -> Bytes {
        if !self.object {
            return Bytes::new();
        }
        let mut out = String::new();
        let mut first = self.empty;
        for (k, v) in fields {
            let has = match *k {
                "resultType" => self.has_result_type,
                "cacheScope" => self.has_cache_scope,
                "ttlMs" => self.has_ttl_ms,
                _ => true,
            };
            if has {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            out.push('"');
            out.push_str(k);
            out.push_str("\":");
            out.push_str(v);
        }
        out.push('}');
        Bytes::from(out)
    }
}

/// One piece of a result: raw bytes, or the end.
#[derive(Debug)]
pub enum Piece {
    /// Bytes of the result, in order, as they arrived.
    Data(Bytes),
    /// The result ended; nothing follows.
    End(Summary),
}

type Pieces = Pin<Box<dyn Stream<Item = Result<Piece, BackendError>> + Send>>;

/// A result on its way from a backend: `Piece::Data` until `Piece::End`, or an error (the
/// backend's stream broke, the result grew past `max_message_bytes`, the call's time ran out).
pub struct ResultBody {
    pieces: Pieces,
}

impl std::fmt::Debug for ResultBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResultBody")
    }
}

impl Stream for ResultBody {
    type Item = Result<Piece, BackendError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
        self.pieces.as_mut().poll_next(cx)
    }
}

impl ResultBody {
    /// A result already in memory (a stdio backend's line, sliced): handed on without a copy.
    pub fn whole(value: Bytes) -> ResultBody {
        let mut scan = ValueScan::default();
        // A bare token (`42`) ends with the input rather than at a delimiter.
        let end = scan.feed(&value).or_else(|| (scan.token && !value.is_empty()).then_some(value.len()));
        let (data, summary) = match end {
            Some(n) if value[n..].iter().all(u8::is_ascii_whitespace) => {
                let keep = if scan.summary.object { n - 1 } else { n };
                (value.slice(..keep), scan.summary.clone())
            }
            _ => {
                let e = BackendError::Unavailable("a result that is not one JSON value".into());
                return ResultBody { pieces: Box::pin(futures::stream::once(async { Err(e) })) };
            }
        };
        // Handed on in slices (no copies), so that what has gone by is known as it goes.
        let slices =
            (0..data.len()).step_by(PIECE).map(move |at| Ok(Piece::Data(data.slice(at..(at + PIECE).min(data.len())))));
        let pieces = futures::stream::iter(slices.chain([Ok(Piece::End(summary))]));
        ResultBody { pieces: Box::pin(pieces) }
    }

    /// A result whose first bytes are `head` and whose rest is still coming on `rest` (an HTTP
    /// body). Bytes after the result (the rest of the JSON-RPC envelope) are read and dropped;
    /// at most `max` bytes of result are taken.
    pub fn streaming<S>(name: String, head: Bytes, rest: S, max: usize) -> ResultBody
    where
        S: Stream<Item = Result<Bytes, BrokenBody>> + Send + 'static,
    {
        let state = Streaming {
            name,
            scan: ValueScan::default(),
            pending: Some(head),
            out: Bytes::new(),
            rest: Box::pin(rest),
            max,
            held: None,
            done: false,
        };
        ResultBody { pieces: Box::pin(futures::stream::unfold(state, Streaming::next)) }
    }

    /// A result body made of other pieces (the pipeline wraps one to audit it at its end).
    pub fn from_pieces(pieces: impl Stream<Item = Result<Piece, BackendError>> + Send + 'static) -> ResultBody {
        ResultBody { pieces: Box::pin(pieces) }
    }

    /// The same body, keeping `guard` until it is read to its end or dropped (what a call
    /// holds while its result streams, e.g. its per-user instance's use, so that the instance
    /// is not reaped mid-result).
    pub fn holding<G: Send + 'static>(self, guard: G) -> ResultBody {
        let pieces = self.pieces.map(move |piece| {
            let _held = &guard;
            piece
        });
        ResultBody { pieces: Box::pin(pieces) }
    }

    /// Bounds what is left of the body by `deadline` (the call's timeout).
    pub fn with_deadline(self, deadline: tokio::time::Instant) -> ResultBody {
        let pieces = self.pieces;
        let timed = futures::stream::unfold(Some(pieces), move |p| async move {
            let mut p = p?;
            match tokio::time::timeout_at(deadline, p.next()).await {
                Ok(Some(item)) => Some((item, Some(p))),
                Ok(None) => None,
                Err(_) => Some((Err(BackendError::Timeout), None)),
            }
        });
        ResultBody { pieces: Box::pin(timed) }
    }

    /// The whole result as one raw JSON text (for the few paths that need it whole), with the
    /// closing brace put back.
    pub async fn collect(mut self) -> Result<(String, Summary), BackendError> {
        let mut out = BytesMut::new();
        while let Some(p) = self.next().await {
            match p? {
                Piece::Data(b) => out.extend_from_slice(&b),
                Piece::End(s) => {
                    out.extend_from_slice(&s.closing(&[]));
                    let text = String::from_utf8(out.to_vec())
                        .map_err(|_| BackendError::Unavailable("a result that is not UTF-8".into()))?;
                    return Ok((text, s));
                }
            }
        }
        Err(BackendError::Unavailable("the result ended early".into()))
    }
}

/// The state of a result read from a body stream.
struct Streaming {
    name: String,
    scan: ValueScan,
    /// Bytes read but not yet scanned.
    pending: Option<Bytes>,
    /// Scanned result bytes not yet handed on. They are handed on as copies of at most
    /// `PIECE` bytes: a slice would keep the HTTP client's whole read buffer (up to ~400 KB)
    /// alive until the client has it, and the front door's queue would hold 16 of them.
    out: Bytes,
    rest: Pin<Box<dyn Stream<Item = Result<Bytes, BrokenBody>> + Send>>,
    max: usize,
    /// The summary, once the value ended, until the body has been read to its end.
    held: Option<Summary>,
    done: bool,
}

impl Streaming {
    async fn next(mut self) -> Option<(Result<Piece, BackendError>, Streaming)> {
        if self.done {
            return None;
        }
        loop {
            if !self.out.is_empty() {
                let n = self.out.len().min(PIECE);
                let piece = Bytes::copy_from_slice(&self.out[..n]);
                self.out = self.out.slice(n..);
                return Some((Ok(Piece::Data(piece)), self));
            }
            let chunk = match self.pending.take() {
                Some(c) => c,
                None => match self.rest.next().await {
                    Some(Ok(c)) => c,
                    Some(Err(e)) => return self.fail(format!("broken answer: {e}")),
                    None => match self.held.take() {
                        Some(summary) => {
                            self.done = true;
                            return Some((Ok(Piece::End(summary)), self));
                        }
                        None => return self.fail("the answer ended inside its result".into()),
                    },
                },
            };
            if self.held.is_some() {
                // The envelope's tail (`,"id":..}`): read to the end, not kept.
                continue;
            }
            match self.scan.feed(&chunk) {
                None => {
                    if self.scan.summary.bytes > self.max as u64 {
                        return self.fail("a result larger than max_message_bytes".into());
                    }
                    self.out = chunk;
                }
                Some(n) => {
                    let keep = if self.scan.summary.object { n - 1 } else { n };
                    self.held = Some(self.scan.summary.clone());
                    self.out = chunk.slice(..keep);
                }
            }
        }
    }

    fn fail(mut self, why: String) -> Option<(Result<Piece, BackendError>, Streaming)> {
        self.done = true;
        let e = BackendError::Unavailable(format!("backend `{}`: {why}", self.name));
        Some((Err(e), self))
    }
}

/// Where the `result` of a JSON-RPC response starts, read as its bytes arrive.
#[derive(Default)]
pub struct EnvelopeScan {
    lex: Lex,
    /// Bytes scanned so far.
    pos: usize,
    key: KeyBuf,
    /// After `"result":`, waiting for the value's first byte.
    before_value: bool,
}

/// What `EnvelopeScan::feed` found.
#[derive(Debug, PartialEq)]
pub enum Found {
    /// The result starts at this offset of everything fed.
    Result(usize),
    /// Not yet known: feed more.
    More,
}

impl EnvelopeScan {
    /// Scans `all[self.pos..]` (`all` is everything read so far, growing between calls).
    pub fn feed(&mut self, all: &[u8]) -> Found {
        while self.pos < all.len() {
            let b = all[self.pos];
            if self.before_value {
                if !b.is_ascii_whitespace() {
                    return Found::Result(self.pos);
                }
                self.pos += 1;
                continue;
            }
            let depth_before = self.lex.depth;
            let ev = self.lex.step(b);
            self.pos += 1;
            if depth_before == 1 || self.lex.depth == 1 {
                match ev {
                    Ev::KeyStart => self.key.start(),
                    Ev::StringByte if self.key.open => self.key.push(b),
                    Ev::StringEnd if self.key.open => self.key.open = false,
                    Ev::Colon if depth_before == 1 => {
                        if self.key.is(b"result") {
                            self.before_value = true;
                        }
                        self.key.clear();
                    }
                    _ => {}
                }
            }
        }
        Found::More
    }
}

/// The raw value being scanned: where it ends, and its summary.
#[derive(Default)]
pub struct ValueScan {
    lex: Lex,
    started: bool,
    /// A value that is a bare token (number, true, ...): ends at the first byte not part of it.
    token: bool,
    key: KeyBuf,
    /// The last completed key of the object (for the value that follows it).
    value_of: Option<&'static str>,
    pub summary: Summary,
}

impl ValueScan {
    /// Scans the next bytes of the value; `Some(n)` when it ended at `bytes[n - 1]`.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if !self.started {
                if b.is_ascii_whitespace() {
                    i += 1;
                    self.summary.bytes += 1;
                    continue;
                }
                self.started = true;
                self.summary.object = b == b'{';
                self.summary.empty = true;
                self.token = !matches!(b, b'{' | b'[' | b'"');
            }
            if self.token && (matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace()) {
                return Some(i);
            }
            // Inside a string only the closing quote and escapes matter: skip to them.
            if self.lex.in_string && !self.lex.escaped && !self.key.open {
                match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                    Some(0) => {}
                    Some(k) => {
                        i += k;
                        self.summary.bytes += k as u64;
                        continue;
                    }
                    None => {
                        self.summary.bytes += (bytes.len() - i) as u64;
                        return None;
                    }
                }
            }
            let depth_before = self.lex.depth;
            let ev = self.lex.step(b);
            i += 1;
            self.summary.bytes += 1;
            if self.summary.object && (depth_before == 1 || self.lex.depth == 1) {
                self.member(ev, b, depth_before);
            }
            if !self.token && self.lex.depth == 0 && !self.lex.in_string {
                return Some(i);
            }
        }
        None
    }

    /// Tracks the result object's own members (depth 1): its keys, and `isError`'s value.
    fn member(&mut self, ev: Ev, b: u8, depth_before: u32) {
        match ev {
            Ev::KeyStart => {
                self.summary.empty = false;
                self.key.start();
            }
            Ev::StringByte if self.key.open => self.key.push(b),
            Ev::StringEnd if self.key.open => self.key.open = false,
            Ev::Colon if depth_before == 1 => {
                self.value_of = None;
                if self.key.is(b"isError") {
                    self.value_of = Some("isError");
                } else if self.key.is(b"resultType") {
                    self.summary.has_result_type = true;
                } else if self.key.is(b"cacheScope") {
                    self.summary.has_cache_scope = true;
                } else if self.key.is(b"ttlMs") {
                    self.summary.has_ttl_ms = true;
                }
                self.key.clear();
            }
            Ev::Other if depth_before == 1 && !b.is_ascii_whitespace() => {
                // The last `isError` wins, as a JSON parser keeping the last duplicate would.
                let of = self.value_of.take();
                self.summary.is_error = if of == Some("isError") { b == b't' } else { self.summary.is_error };
            }
            Ev::Open | Ev::StringStart if depth_before == 1 => self.value_of = None,
            _ => {}
        }
    }
}

/// A short key being read (longer keys are none of the ones looked for).
#[derive(Default)]
struct KeyBuf {
    buf: [u8; 16],
    len: usize,
    open: bool,
    too_long: bool,
}

impl KeyBuf {
    fn start(&mut self) {
        self.len = 0;
        self.open = true;
        self.too_long = false;
    }
    fn push(&mut self, b: u8) {
        // An escaped key is not compared (it would have to be decoded first).
        if b == b'\\' {
            self.too_long = true;
        } else if self.len < self.buf.len() {
            self.buf[self.len] = b;
            self.len += 1;
        } else {
            self.too_long = true;
        }
    }
    fn is(&self, key: &[u8]) -> bool {
        !self.too_long && &self.buf[..self.len] == key
    }
    fn clear(&mut self) {
        self.len = 0;
        self.too_long = false;
    }
}

/// What one byte was, structurally.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ev {
    Open,
    Close,
    Comma,
    Colon,
    /// The opening quote of an object's key.
    KeyStart,
    /// The opening quote of a string value.
    StringStart,
    /// A byte of a string's content (escapes included, undecoded).
    StringByte,
    StringEnd,
    Other,
}

/// JSON structure, one byte at a time: nesting depth, strings and escapes, and whether the
/// next string in an object is a key.
#[derive(Default)]
struct Lex {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The innermost container is an object and a key comes next.
    expect_key: bool,
    /// Innermost containers: true for an object (bounded by the depth a u128 can hold; deeper
    /// nesting is tracked by depth alone).
    objects: u128,
}

impl Lex {
    fn step(&mut self, b: u8) -> Ev {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
                return Ev::StringByte;
            }
            return match b {
                b'\\' => {
                    self.escaped = true;
                    Ev::StringByte
                }
                b'"' => {
                    self.in_string = false;
                    Ev::StringEnd
                }
                _ => Ev::StringByte,
            };
        }
        match b {
            b'"' => {
                self.in_string = true;
                if self.expect_key {
                    self.expect_key = false;
                    Ev::KeyStart
                } else {
                    Ev::StringStart
                }
            }
            b'{' | b'[' => {
                self.depth += 1;
                self.objects = (self.objects << 1) | u128::from(b == b'{');
                self.expect_key = b == b'{';
                Ev::Open
            }
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                self.objects >>= 1;
                self.expect_key = false;
                Ev::Close
            }
            b',' => {
                self.expect_key = self.objects & 1 == 1;
                Ev::Comma
            }
            b':' => Ev::Colon,
            _ => Ev::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` in pieces of `n` bytes; returns the bytes handed on and the summary.
    async fn stream_in_pieces(text: &str, n: usize) -> (String, Summary) {
        let bytes = Bytes::from(text.to_string());
        let mut env = EnvelopeScan::default();
        let mut fed = 0;
        let start = loop {
            fed = (fed + n).min(bytes.len());
            if let Found::Result(at) = env.feed(&bytes[..fed]) {
                break at;
            }
            assert!(fed < bytes.len(), "no result in {text}");
        };
        let head = bytes.slice(start..fed);
        let rest: Vec<Result<Bytes, BrokenBody>> =
            (fed..bytes.len()).step_by(n).map(|i| Ok(bytes.slice(i..(i + n).min(bytes.len())))).collect();
        let mut body = ResultBody::streaming("b".into(), head, futures::stream::iter(rest), 1 << 20);
        let mut out = Vec::new();
        while let Some(p) = body.next().await {
            match p.unwrap() {
                Piece::Data(d) => out.extend_from_slice(&d),
                Piece::End(s) => return (String::from_utf8(out).unwrap(), s),
            }
        }
        panic!("no end");
    }

    #[tokio::test]
    async fn the_result_is_handed_on_byte_for_byte_in_any_pieces() {
        let result = r#"{"content":[{"type":"text","text":"a \"quoted\" } brace, \\ and é"}],"isError":true,"x":{"isError":false}}"#;
        for text in [
            format!(r#"{{"jsonrpc":"2.0","id":7,"result":{result}}}"#),
            format!(r#"{{"result" : {result} ,"id":7,"jsonrpc":"2.0"}}"#),
            format!(r#"{{"id":{{"result":1}},"jsonrpc":"2.0","result":{result}}}"#),
        ] {
            for n in [1, 2, 3, 7, 64, 4096] {
                let (out, s) = stream_in_pieces(&text, n).await;
                assert_eq!(format!("{out}}}"), result, "pieces of {n}");
                assert!(s.is_error && s.object && !s.empty && !s.has_result_type, "{s:?}");
                assert_eq!(s.bytes, result.len() as u64);
            }
        }
    }

    #[tokio::test]
    async fn missing_fields_are_added_before_the_closing_brace() {
        let (out, s) = stream_in_pieces(r#"{"id":1,"result":{"resultType":"complete","a":1}}"#, 5).await;
        assert_eq!(
            format!("{out}{}", std::str::from_utf8(&s.closing(&[("resultType", "\"complete\"")])).unwrap()),
            r#"{"resultType":"complete","a":1}"#
        );
        let (out, s) = stream_in_pieces(r#"{"id":1,"result":{ }}"#, 5).await;
        let fields = [("resultType", "\"complete\""), ("ttlMs", "0")];
        assert_eq!(
            format!("{out}{}", std::str::from_utf8(&s.closing(&fields)).unwrap()),
            r#"{ "resultType":"complete","ttlMs":0}"#
        );
    }

    /// Whether a result streamed from `head` then `rest` (with a limit of `max`) ends in an error.
    async fn ends_in_error(head: Bytes, rest: Bytes, max: usize) -> bool {
        let mut body = ResultBody::streaming("b".into(), head, futures::stream::iter([Ok(rest)]), max);
        let mut saw_error = false;
        while let Some(p) = body.next().await {
            saw_error |= p.is_err();
        }
        saw_error
    }

    #[tokio::test]
    async fn an_answer_that_ends_inside_its_result_is_an_error() {
        assert!(ends_in_error(Bytes::from_static(br#"{"a":"#), Bytes::from_static(b"[1,2"), 1 << 20).await);
    }

    #[tokio::test]
    async fn a_result_over_the_limit_is_an_error() {
        let head = Bytes::from(format!("\"{}", "x".repeat(100)));
        assert!(ends_in_error(head, Bytes::from("x".repeat(100)), 150).await);
    }

    #[tokio::test]
    async fn a_whole_result_is_summarized() {
        let (text, s) =
            ResultBody::whole(Bytes::from_static(br#"{"isError":false,"content":[]}"#)).collect().await.unwrap();
        assert_eq!(text, r#"{"isError":false,"content":[]}"#);
        assert!(!s.is_error);
        let (text, _) = ResultBody::whole(Bytes::from_static(b"42")).collect().await.unwrap();
        assert_eq!(text, "42");
    }
}
