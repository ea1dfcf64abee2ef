//! Newline-delimited frames of bounded length, as bytes: the client's lines in `sentinel
//! stdio` and a stdio backend's stdout.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, Decoder};

/// One line from the client: a message's bytes (not yet known to be UTF-8 or JSON: both are
/// the parser's to refuse, with -32700), or the notice that a line was over the limit.
pub enum Line {
    /// A whole line, without its newline.
    Message(Bytes),
    /// A line longer than the limit (its bytes skipped).
    TooLong,
}

/// Newline-delimited frames of at most `max` bytes. An over-long line is a frame, not a
/// decoder error, because `FramedRead` ends the stream after any decoder error
/// (tokio-rs/tokio#3976), which would end the client's session; its bytes are skipped up
/// to the next newline.
pub struct LineCodec(AnyDelimiterCodec);

impl LineCodec {
    /// A codec refusing lines longer than `max` bytes.
    pub fn new(max: usize) -> LineCodec {
        LineCodec(AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), max))
    }

    fn frame(r: Result<Option<Bytes>, AnyDelimiterCodecError>) -> std::io::Result<Option<Line>> {
        match r {
            Ok(line) => Ok(line.map(Line::Message)),
            Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => Ok(Some(Line::TooLong)),
            Err(AnyDelimiterCodecError::Io(e)) => Err(e),
        }
    }
}

impl Decoder for LineCodec {
    type Item = Line;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<Line>> {
        LineCodec::frame(self.0.decode(buf))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<Line>> {
        LineCodec::frame(self.0.decode_eof(buf))
    }
}
