//! How a request ended (`Answer`) and the response made of it (`Framed`), whole or with a
//! backend's result still streaming in.

use serde_json::value::RawValue;

/// A response ready to send: whole, or with a backend's result still streaming in.
pub enum Framed {
    /// A result known whole.
    Whole(String),
    /// The response's bytes as they come; an error cuts the response off (the result broke,
    /// or its audit record could not be stored under a fail-closed policy).
    Streamed(std::pin::Pin<Box<dyn futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send>>),
    /// A `subscriptions/listen` stream: messages until the client ends it.
    Listen(Listening),
}

/// A stateless client's `subscriptions/listen` stream, opened: the acknowledgment goes first,
/// then each notification as it comes. It ends when the client cancels the request (`call`)
/// or goes away, or when the gateway shuts down.
pub struct Listening {
    /// The `notifications/subscriptions/acknowledged` sent first.
    pub ack: String,
    /// The stream's notifications, as they come.
    pub notifications: std::pin::Pin<Box<dyn futures::Stream<Item = String> + Send>>,
    /// The request, registered in its session so that `notifications/cancelled` ends it.
    pub call: crate::session::RegisteredCall,
}

impl From<String> for Framed {
    fn from(s: String) -> Framed {
        Framed::Whole(s)
    }
}

impl Framed {
    /// `{"jsonrpc":"2.0","id":ID,"result":` + the result as it arrives + `fields` it lacks + `}`.
    pub(super) fn result(
        id: &RawValue,
        body: crate::backend::ResultBody,
        fields: &'static [(&'static str, &'static str)],
    ) -> Framed {
        use crate::backend::Piece;
        use futures::StreamExt;
        let head = bytes::Bytes::from(format!(r#"{{"jsonrpc":"2.0","id":{},"result":"#, id.get()));
        let rest = body.map(move |p| match p {
            Ok(Piece::Data(d)) => Ok(d),
            Ok(Piece::End(summary)) => {
                let mut tail = summary.closing(fields).to_vec();
                tail.push(b'}');
                Ok(bytes::Bytes::from(tail))
            }
            Err(e) => Err(std::io::Error::other(e.to_string())),
        });
        Framed::Streamed(Box::pin(futures::stream::once(async move { Ok(head) }).chain(rest)))
    }

    /// The whole response as text (for the paths that write whole messages); `None` when a
    /// streamed result broke off. Of a listen stream, only its acknowledgment: the front doors
    /// relay the stream itself before they come here.
    pub async fn into_string(self) -> Option<String> {
        use futures::StreamExt;
        match self {
            Framed::Whole(s) => Some(s),
            Framed::Listen(l) => Some(l.ack),
            Framed::Streamed(mut s) => {
                let mut out = Vec::new();
                while let Some(chunk) = s.next().await {
                    out.extend_from_slice(&chunk.ok()?);
                }
                String::from_utf8(out).ok()
            }
        }
    }
}

/// How a request ended, before it is framed as a response.
pub enum Answer {
    /// A result, to be sent as the response's `result`.
    Result(String),
    /// A backend's result on its way (see `backend::ResultBody`); audited when it ends.
    Stream(crate::backend::ResultBody),
    /// A backend's error object, passed on verbatim.
    Error(String),
    /// A `subscriptions/listen` stream, opened.
    Listen(Listening),
    /// Cancelled by the client: nothing is sent.
    Cancelled,
}
