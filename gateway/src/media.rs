//! `GET /media`: admission of Twilio Media Streams WebSockets.
//!
//! Before upgrading: the upgrade's `X-Twilio-Signature` (over the `wss://` public URL, no
//! parameters) and the `MAX_STREAMS` limit. The per-call token is only known once `start`
//! arrives, so the stream actor ([`crate::stream`]) checks it.
//!
//! Nothing before the upgrade allocates in proportion to the request: hyper reads the request
//! head into a buffer it bounds itself (about 400 KiB, at most 100 headers, else 431) and axum's
//! `WebSocketUpgrade` only compares a few fixed headers; the route parses no query; the one
//! header the gateway decodes, the signature, is refused unread above
//! [`crate::webhook::MAX_SIGNATURE_BYTES`]. Once upgraded, messages and frames are capped at
//! [`MAX_MESSAGE_BYTES`].

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::metrics as m;
use crate::shared::Shared;
use crate::webhook::{MAX_SIGNATURE_BYTES, MEDIA_PATH, SIGNATURE_HEADER};

/// Largest WebSocket message (and frame) accepted from Twilio. Media frames are ~300 bytes of
/// JSON; anything near this is not Twilio and closes the socket with 1009.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The socket's read buffer. The WebSocket library's default (128 KiB) is meant for bulk
/// transfer, costs 128 KiB per stream and is zeroed on every read. Twilio sends one ~300-byte
/// `media` frame every 20 ms, so 4 KiB holds a dozen frames, more than a stream ever has
/// unread; a larger message (up to [`MAX_MESSAGE_BYTES`]) grows the buffer for itself.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Written bytes are held back until this many are pending or the writer flushes. The writer
/// flushes after each batch of queued messages ([`crate::outbox`]), so this only lets a batch
/// go out in one write; most batches are one 20 ms frame (~300 bytes), the largest message is
/// one second of audio (~11 KB). The library's default is 128 KiB.
pub const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// `ws` with the message limits and buffer sizes of every media socket (Twilio's and the
/// console's web calls).
pub fn sized(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
}

/// The upgrade handler.
pub async fn upgrade(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let signed = headers
        .get(SIGNATURE_HEADER)
        .filter(|v| v.len() <= MAX_SIGNATURE_BYTES)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|sig| shared.validator.validate_ws(MEDIA_PATH, sig));
    if !signed {
        metrics::counter!(m::BAD_SIGNATURES, "route" => MEDIA_PATH).increment(1);
        tracing::warn!("media upgrade with a missing or invalid X-Twilio-Signature");
        return (StatusCode::FORBIDDEN, "invalid X-Twilio-Signature").into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    if shared.closing.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    // Streams are still accepted while draining: their calls were offered before the drain and
    // the worker is waiting for them.
    let Ok(permit) = shared.streams.clone().try_acquire_owned() else {
        metrics::counter!(m::STREAMS_REFUSED, "reason" => "max_streams").increment(1);
        tracing::warn!("MAX_STREAMS reached; refusing a media socket");
        return (StatusCode::SERVICE_UNAVAILABLE, "too many streams").into_response();
    };
    // Counted by the tracker from now on, so a drain cannot finish between the 101 and the
    // actor starting.
    let tracked = shared.tracker.token();
    sized(ws)
        .on_failed_upgrade(|error| tracing::warn!(%error, "media upgrade failed"))
        .on_upgrade(move |socket| async move {
            crate::stream::run(socket, shared, None).await;
            drop(permit);
            drop(tracked);
        })
}
