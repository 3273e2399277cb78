//! Reading a message body as it arrives, with a hard size limit: the read stops, and the
//! message is refused, as soon as the limit is passed; nothing beyond it is ever held.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body over the limit")]
    TooLarge,
    #[error("body read failed: {0}")]
    Read(String),
}

/// Reads `body` to its end, refusing it once more than `limit` bytes have arrived.
pub async fn read_limited(mut body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
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
