//! The close codes and reasons the gateway ends media sockets with, typed once: tests, dashboards
//! and anyone reading a Twilio debugger entry see exactly these.
//!
//! Standard codes (RFC 6455 section 7.4.1) where one fits; the refusal of a second stream for a
//! call that already has a newer one uses the application range (4000-4999), so it cannot be
//! mistaken for a bad token.

use axum::extract::ws::{CloseFrame, Utf8Bytes, close_code};

/// A close code and its reason text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: &'static str,
}

impl Close {
    /// The close frame.
    pub fn frame(self) -> CloseFrame {
        CloseFrame {
            code: self.code,
            reason: Utf8Bytes::from_static(self.reason),
        }
    }
}

/// The application close code of [`CALL_LIVE`].
pub const CALL_LIVE_CODE: u16 = 4409;

/// `start` did not arrive within `START_TIMEOUT_SECONDS`.
pub const NO_START: Close = Close {
    code: close_code::POLICY,
    reason: "no start",
};
/// The `token` parameter is missing, forged, for another call, or expired.
pub const INVALID_TOKEN: Close = Close {
    code: close_code::POLICY,
    reason: "invalid stream token",
};
/// The token already opened a stream (a stream token is single-use).
pub const TOKEN_REUSED: Close = Close {
    code: close_code::POLICY,
    reason: "stream token already used",
};
/// The call already has a newer stream than the one this token was issued for.
pub const CALL_LIVE: Close = Close {
    code: CALL_LIVE_CODE,
    reason: "call already has a stream",
};
/// A web call's `start` names a streamSid that is not a short id of letters, digits, `_`, `-`.
pub const BAD_STREAM_SID: Close = Close {
    code: close_code::POLICY,
    reason: "invalid streamSid",
};
/// The gateway cannot serve the stream (NATS or the claim bucket is unreachable).
pub const UNAVAILABLE: Close = Close {
    code: close_code::ERROR,
    reason: "unavailable",
};
/// Twilio sends text frames only.
pub const BINARY: Close = Close {
    code: close_code::UNSUPPORTED,
    reason: "binary frames are not supported",
};
/// A message over [`crate::media::MAX_MESSAGE_BYTES`].
pub const TOO_BIG: Close = Close {
    code: close_code::SIZE,
    reason: "message too big",
};
/// The drain deadline passed.
pub const SHUTDOWN: Close = Close {
    code: close_code::AWAY,
    reason: "gateway shutting down",
};
/// The call's `.out` subscription ended.
pub const WORKER_LINK_LOST: Close = Close {
    code: close_code::ERROR,
    reason: "worker link lost",
};
/// The call's owner was lost and no worker took the call over within `TAKEOVER_TIMEOUT_MS`
/// (a web call; a phone call is updated with the apology instead).
pub const WORKER_SILENT: Close = Close {
    code: close_code::ERROR,
    reason: "worker silent",
};
/// The call ended normally (hang-up, transfer).
pub const NORMAL: Close = Close {
    code: close_code::NORMAL,
    reason: "",
};
