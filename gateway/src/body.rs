//! Reading a request body under a size limit and a deadline, before anything is parsed.
//!
//! axum's extractors read the whole body (up to 2 MB by default) before the handler runs, so a
//! route that must look at a header first (a signature, a bearer token) takes the raw body and
//! reads it here: a `Content-Length` over the limit is refused without reading a byte, a body
//! that grows past the limit is refused as soon as it does (whatever it claimed), and a body that
//! trickles in slower than the deadline is refused then. At most `limit` bytes plus one chunk are
//! ever held.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("request body not received within {0:?}")]
    TooSlow(Duration),
    #[error("reading the request body failed")]
    Read,
}

/// Reads `body` whole if it is at most `limit` bytes and arrives within `deadline`.
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| BodyError::Read)?;
            if buf.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| BodyError::TooSlow(deadline))?
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn chunks(parts: Vec<&'static [u8]>) -> Body {
        Body::from_stream(futures::stream::iter(
            parts
                .into_iter()
                .map(|p| Ok::<_, Infallible>(Bytes::from_static(p))),
        ))
    }

    #[tokio::test]
    async fn small_bodies_are_read_whole() {
        let body = chunks(vec![b"a=1&", b"b=2"]);
        let read = read_limited(&HeaderMap::new(), body, 8, SECOND).await;
        assert_eq!(read, Ok(Bytes::from_static(b"a=1&b=2")));
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_unread() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "1048576".parse().unwrap());
        // A body that would never end: it is not touched.
        let body = Body::from_stream(futures::stream::pending::<Result<Bytes, Infallible>>());
        let read = read_limited(&headers, body, 8192, SECOND).await;
        assert_eq!(read, Err(BodyError::TooLarge(8192)));
    }

    #[tokio::test]
    async fn a_body_growing_past_the_limit_is_refused_at_once() {
        // Nine bytes, then nothing ever again: refused after the ninth, not at the deadline.
        let stream = futures::stream::iter([Ok::<_, Infallible>(Bytes::from_static(b"123456789"))])
            .chain(futures::stream::pending());
        let read = read_limited(&HeaderMap::new(), Body::from_stream(stream), 8, SECOND).await;
        assert_eq!(read, Err(BodyError::TooLarge(8)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_is_refused_at_the_deadline() {
        let stream = futures::stream::iter([Ok::<_, Infallible>(Bytes::from_static(b"a="))])
            .chain(futures::stream::pending());
        let started = tokio::time::Instant::now();
        let read = read_limited(&HeaderMap::new(), Body::from_stream(stream), 8, SECOND).await;
        assert_eq!(read, Err(BodyError::TooSlow(SECOND)));
        assert_eq!(started.elapsed(), SECOND);
    }
}
