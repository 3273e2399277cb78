//! Reading a message body as it arrives, with a hard size limit: the read stops, and the
//! message is refused, as soon as the limit is passed; nothing beyond it is ever held.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body over the limit")]
    TooLarge,
    #[error("body read failed: {0}")]
    Read(String),
}

/// A request or reply body as the gateway reads it: hyper's `Incoming` from a connection, or
/// a body in memory (stage tests).
pub trait MessageBody: Body<Data = Bytes, Error: std::fmt::Display> + Send + Unpin + 'static {}

impl<B: Body<Data = Bytes, Error: std::fmt::Display> + Send + Unpin + 'static> MessageBody for B {}

/// Reads `body` to its end, refusing it once more than `limit` bytes have arrived (the rest
/// stays unread in `body`).
///
/// # Errors
/// [`BodyError::TooLarge`] past `limit` (or a declared length over it), [`BodyError::Read`] when
/// the body breaks off.
pub async fn read_limited<B: MessageBody>(body: &mut B, limit: usize) -> Result<Bytes, BodyError> {
    let hint = body.size_hint();
    if hint.lower() > limit as u64 {
        return Err(BodyError::TooLarge);
    }
    // A declared length within the limit sizes the buffer once; otherwise grow as data comes.
    let mut buf = BytesMut::with_capacity(hint.exact().map_or(16 * 1024, |n| n as usize).min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(BodyError::TooLarge);
            }
            if buf.is_empty() && hint.exact() == Some(data.len() as u64) {
                // The whole body in one frame: keep it without copying.
                return Ok(data);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// How much of a refused body is read and discarded after the response, at most, and for how
/// long: enough for a client that sends a body somewhat over a limit to finish and read the
/// refusal; a client sending more, or slower, has its connection closed.
pub const LINGER_BYTES: usize = 4 * 1024 * 1024;
pub const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and discards what is left of `body` in the background, within [`LINGER_BYTES`] and
/// [`LINGER`], then lets it go. Holding the body until then also means HTTP/2 resets the
/// stream only after the response is complete, with NO_ERROR. An HTTP/1.1 body the client
/// holds back for `100 Continue` (`expect_continue`, never asked for) is let go at once.
pub fn linger<B: MessageBody>(mut body: B, expect_continue: bool) {
    if expect_continue {
        return;
    }
    tokio::spawn(async move {
        let mut seen = 0usize;
        let _ = tokio::time::timeout(LINGER, async {
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, |d| d.len());
                if seen > LINGER_BYTES {
                    break;
                }
            }
        })
        .await;
    });
}
