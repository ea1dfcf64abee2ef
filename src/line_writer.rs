//! Newline-delimited JSON-RPC written from a queue: to a stdio backend's stdin, and to the
//! stdout of `sentinel stdio`.

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Most bytes gathered into one write: enough to take every small message queued by many
/// concurrent calls at once, little enough not to hold a large result's copy twice.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// Writes each queued message as one line, until the queue closes (`Ok`) or a write fails
/// (the error: the reader is gone, e.g. EPIPE). Messages that queued up while the last write
/// was in progress go out together in one write: one system call (and one wake-up of the
/// reader) for a burst of concurrent calls, instead of one per call.
pub async fn write_lines<W: AsyncWrite + Unpin>(
    mut out: W,
    mut rx: mpsc::UnboundedReceiver<String>,
) -> std::io::Result<()> {
    let mut batch = Vec::new();
    while let Some(line) = rx.recv().await {
        if line.len() >= WRITE_BATCH_BYTES {
            // A large message goes out from its own buffer: copying it into the batch would
            // hold it twice.
            out.write_all(line.as_bytes()).await?;
            drop(line);
            out.write_all(b"\n").await?;
            out.flush().await?;
            continue;
        }
        batch.clear();
        push_line(&mut batch, &line);
        while batch.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(line) => push_line(&mut batch, &line),
                Err(_) => break,
            }
        }
        out.write_all(&batch).await?;
        out.flush().await?;
        // A large message's buffer is not kept for the small ones after it.
        if batch.capacity() > WRITE_BATCH_BYTES * 2 {
            batch = Vec::new();
        }
    }
    Ok(())
}

fn push_line(batch: &mut Vec<u8>, line: &str) {
    batch.extend_from_slice(line.as_bytes());
    batch.push(b'\n');
}
