//! Caps the size of a single Server-Sent Event in a backend's byte stream, before the SSE parser sees it.
//!
//! The SSE parser buffers a whole event before handing it to the gateway, so a backend streaming one endless event
//! (no blank line, ever) would grow that buffer without bound. This adapter sits under the parser: it passes chunks
//! through untouched, counts the bytes since the last event boundary, and ends the stream with
//! [`LimitError::TooLarge`] as soon as one event outgrows the cap. A total body limit would not do: a long-lived
//! stream of many small events is legitimate.
//!
//! Hand-written because the SSE crates limit nothing and a byte-counting adapter is small; it has to track line
//! endings itself since a boundary (`\n\n`, `\r\n\r\n`, `\r\r`, or any mix) may be split across chunks.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};

/// Why a size-limited event stream ended.
#[derive(Debug, thiserror::Error)]
pub enum LimitError<E> {
    /// One event grew past the limit.
    #[error("a server-sent event exceeded the size limit")]
    TooLarge,
    /// The underlying stream's own error.
    #[error(transparent)]
    Inner(E),
}

/// Passes `stream` through unchanged, but yields `Err(LimitError::TooLarge)` and ends as soon as one event exceeds
/// `max_event_bytes` (counting its field lines and line endings, up to and including the blank line that ends it).
/// Complete events in the offending chunk are still delivered first. Errors of `stream` pass through as
/// [`LimitError::Inner`].
pub fn limit_events<S, E>(stream: S, max_event_bytes: usize) -> impl Stream<Item = Result<Bytes, LimitError<E>>>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    LimitEvents { inner: Some(Box::pin(stream)), scanner: Scanner::new(max_event_bytes), failed: false }
}

struct LimitEvents<S> {
    /// Dropped once the limit is hit, so the backend's connection is released rather than left half-read.
    /// Boxed so this adapter is `Unpin` without unsafe projection; one allocation per stream.
    inner: Option<Pin<Box<S>>>,
    scanner: Scanner,
    /// The limit was hit after the chunk's complete events were yielded; the error comes next.
    failed: bool,
}

impl<S, E> Stream for LimitEvents<S>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    type Item = Result<Bytes, LimitError<E>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            self.failed = false;
            return Poll::Ready(Some(Err(LimitError::TooLarge)));
        }
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        let chunk = match futures::ready!(inner.poll_next_unpin(cx)) {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return Poll::Ready(Some(Err(LimitError::Inner(e)))),
            None => {
                self.inner = None;
                return Poll::Ready(None);
            }
        };
        match self.scanner.scan(&chunk) {
            Ok(()) => Poll::Ready(Some(Ok(chunk))),
            Err(Overflow { complete }) => {
                self.inner = None;
                if complete == 0 {
                    return Poll::Ready(Some(Err(LimitError::TooLarge)));
                }
                self.failed = true;
                Poll::Ready(Some(Ok(chunk.slice(..complete))))
            }
        }
    }
}

/// The limit was exceeded; the first `complete` bytes of the chunk hold only whole events (and may be forwarded).
#[derive(Debug, PartialEq)]
struct Overflow {
    complete: usize,
}

/// Line-ending state carried across chunks, per the SSE spec: a line ends at CRLF, LF or CR, and an empty line
/// ends the event.
struct Scanner {
    max_event_bytes: usize,
    /// Bytes of the current (unfinished) event seen so far.
    event_bytes: usize,
    /// No byte of the current line seen yet: a line ending here makes it empty, ending the event.
    line_empty: bool,
    /// The previous byte was a CR, so an LF now completes that CRLF rather than ending another (empty) line.
    after_cr: bool,
}

impl Scanner {
    fn new(max_event_bytes: usize) -> Self {
        Scanner { max_event_bytes, event_bytes: 0, line_empty: true, after_cr: false }
    }

    fn scan(&mut self, chunk: &[u8]) -> Result<(), Overflow> {
        let mut complete = 0;
        for (i, &byte) in chunk.iter().enumerate() {
            self.event_bytes += 1;
            if self.event_bytes > self.max_event_bytes {
                return Err(Overflow { complete });
            }
            let ends_line = match byte {
                b'\n' if self.after_cr => false,
                b'\r' | b'\n' => true,
                _ => {
                    self.line_empty = false;
                    false
                }
            };
            self.after_cr = byte == b'\r';
            if ends_line {
                if self.line_empty {
                    // A blank line: the event is done. The LF of a trailing CRLF, if it follows, is
                    // counted against the next event; one byte either way does not matter for a cap.
                    self.event_bytes = 0;
                    complete = i + 1;
                }
                self.line_empty = true;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    type Item = Result<Bytes, LimitError<&'static str>>;

    async fn run(chunks: &[&str], max: usize) -> Vec<Item> {
        let input = stream::iter(chunks.iter().map(|c| Ok::<_, &'static str>(Bytes::copy_from_slice(c.as_bytes()))));
        limit_events(input, max).collect().await
    }

    fn text(item: &Item) -> &str {
        match item {
            Ok(bytes) => std::str::from_utf8(bytes).unwrap(),
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }

    #[tokio::test]
    async fn many_small_events_pass_unchanged() {
        let event = "data: {\"jsonrpc\":\"2.0\"}\n\n";
        let chunks = vec![event; 1000];
        let out = run(&chunks, event.len()).await;
        assert_eq!(out.len(), 1000);
        assert!(out.iter().all(|item| text(item) == event));
    }

    #[tokio::test]
    async fn boundary_split_across_chunks_resets_the_count() {
        // Each event is 10 bytes, the limit 10; the blank line arrives in two halves.
        let out = run(&["data: ab\n", "\ndata: xy", "\n", "\n"], 10).await;
        assert_eq!(out.iter().map(text).collect::<String>(), "data: ab\n\ndata: xy\n\n");
    }

    #[tokio::test]
    async fn one_big_event_errors_and_ends() {
        let out = run(&["data: 0123", "456789", "abcdef\n\n", "data: never read\n\n"], 16).await;
        assert_eq!(out.len(), 3);
        assert_eq!(text(&out[0]), "data: 0123");
        assert_eq!(text(&out[1]), "456789");
        assert!(matches!(out[2], Err(LimitError::TooLarge)));
    }

    #[tokio::test]
    async fn endless_event_without_boundary_errors() {
        let out = run(&["data: x\n"; 100], 64).await;
        assert!(matches!(out.last(), Some(Err(LimitError::TooLarge))));
        assert_eq!(out.iter().filter(|item| item.is_ok()).count(), 8);
    }

    #[tokio::test]
    async fn complete_events_before_the_overflow_are_delivered() {
        let out = run(&["data: a\n\ndata: b\n\ndata: far too long\n\n"], 12).await;
        assert_eq!(out.len(), 2);
        assert_eq!(text(&out[0]), "data: a\n\ndata: b\n\n");
        assert!(matches!(out[1], Err(LimitError::TooLarge)));
    }

    #[tokio::test]
    async fn crlf_boundaries_split_anywhere() {
        let event = "data: 12345\r\n\r\n"; // 15 bytes
        let whole = event.repeat(4);
        for split in 0..=whole.len() {
            let (a, b) = whole.split_at(split);
            let out = run(&[a, b], event.len()).await;
            assert!(out.iter().all(Result::is_ok), "split at {split}");
        }
        // A CRLF alone is one line ending, not a blank line: without the second one the event keeps growing.
        let out = run(&["data: 12345\r\n", "data: 12345\r\n"], event.len()).await;
        assert!(matches!(out.last(), Some(Err(LimitError::TooLarge))));
    }

    #[tokio::test]
    async fn cr_only_and_mixed_boundaries() {
        assert!(run(&["data: 1234\r\r"; 50], 12).await.iter().all(Result::is_ok));
        assert!(run(&["data: 123\r\n\n", "data: 123\n\r\n", "data: 12\n\r"], 12).await.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn inner_errors_pass_through() {
        let input = stream::iter(vec![Ok(Bytes::from_static(b"data: a\n\n")), Err("reset"), Ok(Bytes::new())]);
        let out: Vec<Item> = limit_events(input, 100).collect().await;
        assert_eq!(out.len(), 3);
        assert!(matches!(out[1], Err(LimitError::Inner("reset"))));
    }

    #[test]
    fn scanner_counts_line_endings_not_pairs_of_bytes() {
        let mut s = Scanner::new(usize::MAX);
        assert_eq!(s.scan(b"data: x\r"), Ok(()));
        assert_eq!((s.event_bytes, s.after_cr), (8, true));
        assert_eq!(s.scan(b"\n"), Ok(()));
        assert_eq!(s.event_bytes, 9, "a CR then LF across chunks is one line ending");
        assert_eq!(s.scan(b"\r"), Ok(()));
        assert_eq!(s.event_bytes, 0, "an empty line ends the event");
    }
}
