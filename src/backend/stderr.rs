//! Draining a stdio backend's stderr into the gateway's log.
//!
//! The pipe must be read for as long as the process lives: a child whose stderr fills up
//! blocks on its next write, and one whose stderr is closed dies of SIGPIPE. So the bytes are
//! read as bytes (a backend's output is not promised to be UTF-8), each line is bounded (a
//! backend that never writes a newline must not grow a buffer), logged lossily, and nothing
//! that arrives ends the loop but the end of the pipe.
//!
//! Hand-written rather than `FramedRead` + a lines codec: a codec error (invalid UTF-8, a line
//! over the limit) ends a `FramedRead` stream for good (tokio-rs/tokio#3976), which is the
//! very failure this module exists to prevent.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest stderr line logged; the rest of a longer line is counted, not kept.
pub const MAX_LINE: usize = 8 * 1024;

/// Reads `stderr` until it ends, logging each line as `backend`'s.
pub async fn drain(backend: String, stderr: impl AsyncRead + Unpin) {
    let mut lines = Lines::default();
    lines.read_all(stderr, |line, cut| match cut {
        0 => tracing::info!(backend = %backend, "stderr: {}", String::from_utf8_lossy(line)),
        n => tracing::info!(backend = %backend, "stderr: {} [{n} more bytes of this line dropped]", String::from_utf8_lossy(line)),
    })
    .await;
}

/// The line being gathered: at most `MAX_LINE` bytes of it, and how many more were cut.
#[derive(Default)]
struct Lines {
    line: Vec<u8>,
    cut: usize,
}

impl Lines {
    async fn read_all(&mut self, mut from: impl AsyncRead + Unpin, mut emit: impl FnMut(&[u8], usize)) {
        let mut buf = vec![0u8; 8 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // A pipe read fails only when the pipe is gone.
                Err(_) => break,
            };
            self.push(&buf[..n], &mut emit);
        }
        if !self.line.is_empty() || self.cut > 0 {
            self.flush(&mut emit);
        }
    }

    fn push(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(&[u8], usize)) {
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            self.keep(&bytes[..nl]);
            self.flush(emit);
            bytes = &bytes[nl + 1..];
        }
        self.keep(bytes);
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_LINE - self.line.len();
        let take = bytes.len().min(room);
        self.line.extend_from_slice(&bytes[..take]);
        self.cut += bytes.len() - take;
    }

    fn flush(&mut self, emit: &mut impl FnMut(&[u8], usize)) {
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        emit(line, self.cut);
        self.line.clear();
        self.cut = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::{Lines, MAX_LINE};

    async fn lines_of(input: &[u8]) -> Vec<(Vec<u8>, usize)> {
        let mut out = Vec::new();
        Lines::default().read_all(input, |l, cut| out.push((l.to_vec(), cut))).await;
        out
    }

    #[tokio::test]
    async fn invalid_utf8_is_a_line_like_any_other() {
        let out = lines_of(b"caf\xe9\nnext\r\n").await;
        assert_eq!(out, vec![(b"caf\xe9".to_vec(), 0), (b"next".to_vec(), 0)]);
    }

    #[tokio::test]
    async fn a_long_line_is_cut_and_the_rest_counted() {
        let mut input = vec![b'x'; MAX_LINE + 100];
        input.extend_from_slice(b"\nafter");
        let out = lines_of(&input).await;
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].0.len(), out[0].1), (MAX_LINE, 100));
        assert_eq!(out[1], (b"after".to_vec(), 0), "a last line without newline is logged at the end");
    }
}
