//! The lifecycle of a call's Realtime session: the one place that knows whether a session can
//! be talked to, is being replaced, or is gone with the call.
//!
//! A call has one Realtime session at a time. When it is lost (socket closed, network error,
//! `session_expired`) the call asks for a new one, at once the first time and after a growing
//! pause when sessions keep failing, and gives up after [`MAX_RECONNECTS`] within
//! [`RECONNECT_WINDOW`]. Client events written while a session is [`SessionState::Connecting`]
//! are queued by the socket writer until it opens, so only [`SessionState::Reconnecting`] (no
//! session at all) holds requests back.

use std::collections::VecDeque;

use switchboard_proto::event::EndReason;
use tokio::time::{Duration, Instant};

/// At most this many new Realtime sessions per [`RECONNECT_WINDOW`]; one more loss ends the call.
pub const MAX_RECONNECTS: usize = 3;
/// See [`MAX_RECONNECTS`].
pub const RECONNECT_WINDOW: Duration = Duration::from_secs(60);
/// A second (third) reconnect within the window waits this long (twice as long), so a dead
/// endpoint is not hammered; the first one is immediate.
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(250);

/// Where the call's Realtime session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// A session was asked for and is being opened (and configured); events written now are
    /// sent once it is open.
    Connecting,
    /// The session is configured and serving the call.
    Live,
    /// The session was lost; a new one is opened at `at`. Nothing can be sent meanwhile.
    Reconnecting { at: Instant },
    /// The call is over and its session closed.
    Ended(EndReason),
}

/// What to do about a lost session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Already being replaced, or the call is over: nothing to do.
    Ignored,
    /// Open a new session now (attempt `attempt` within the window).
    ReplaceNow { attempt: usize },
    /// Open a new session at the given time (attempt `attempt` within the window).
    ReplaceAt { attempt: usize, at: Instant },
    /// Sessions were lost too often lately: the call cannot go on.
    TooOften,
}

/// The session lifecycle of one call.
#[derive(Debug)]
pub struct Lifecycle {
    state: SessionState,
    /// When each session after the first was asked for (within [`RECONNECT_WINDOW`]).
    reconnects: VecDeque<Instant>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            state: SessionState::Connecting,
            reconnects: VecDeque::new(),
        }
    }
}

impl Lifecycle {
    /// The state now.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The end reason once the call is over.
    pub fn ended(&self) -> Option<EndReason> {
        match self.state {
            SessionState::Ended(reason) => Some(reason),
            _ => None,
        }
    }

    /// Whether the call is over.
    pub fn is_ended(&self) -> bool {
        matches!(self.state, SessionState::Ended(_))
    }

    /// Whether a lost session waits to be replaced (no session to send anything to).
    pub fn reconnecting(&self) -> bool {
        matches!(self.state, SessionState::Reconnecting { .. })
    }

    /// Whether client events can be written now (sent at once, or once the socket opens).
    pub fn can_send(&self) -> bool {
        matches!(self.state, SessionState::Connecting | SessionState::Live)
    }

    /// When a lost session is replaced, if one waits.
    pub fn reconnect_at(&self) -> Option<Instant> {
        match self.state {
            SessionState::Reconnecting { at } => Some(at),
            _ => None,
        }
    }

    /// The session was configured: it serves the call.
    pub fn configured(&mut self) {
        if self.state == SessionState::Connecting {
            self.state = SessionState::Live;
        }
    }

    /// The session is gone: decide whether and when to replace it.
    pub fn lost(&mut self, now: Instant) -> Loss {
        if !self.can_send() {
            return Loss::Ignored;
        }
        while self
            .reconnects
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= RECONNECT_WINDOW)
        {
            self.reconnects.pop_front();
        }
        if self.reconnects.len() >= MAX_RECONNECTS {
            return Loss::TooOften;
        }
        let attempt = self.reconnects.len() + 1;
        let backoff = RECONNECT_BACKOFF * u32::try_from(self.reconnects.len()).unwrap_or(1);
        self.reconnects.push_back(now);
        if backoff.is_zero() {
            self.state = SessionState::Connecting;
            Loss::ReplaceNow { attempt }
        } else {
            let at = now + backoff;
            self.state = SessionState::Reconnecting { at };
            Loss::ReplaceAt { attempt, at }
        }
    }

    /// Whether the replacement of a lost session is due at `now`; if so the new session is
    /// being opened from here on.
    pub fn reconnect_due(&mut self, now: Instant) -> bool {
        match self.state {
            SessionState::Reconnecting { at } if at <= now => {
                self.state = SessionState::Connecting;
                true
            }
            _ => false,
        }
    }

    /// The call ended. Returns false if it had already.
    pub fn end(&mut self, reason: EndReason) -> bool {
        if self.is_ended() {
            return false;
        }
        self.state = SessionState::Ended(reason);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_starts_connecting_and_goes_live_once_configured() {
        let mut l = Lifecycle::default();
        assert_eq!(l.state(), SessionState::Connecting);
        assert!(l.can_send());
        l.configured();
        assert_eq!(l.state(), SessionState::Live);
    }

    #[test]
    fn losses_back_off_then_give_up_within_the_window() {
        let mut l = Lifecycle::default();
        l.configured();
        let t0 = Instant::now();
        assert_eq!(l.lost(t0), Loss::ReplaceNow { attempt: 1 });
        assert_eq!(l.state(), SessionState::Connecting);
        l.configured();
        let at = t0 + RECONNECT_BACKOFF;
        assert_eq!(l.lost(t0), Loss::ReplaceAt { attempt: 2, at });
        assert!(l.reconnecting());
        assert!(!l.can_send());
        // A second loss report while waiting changes nothing.
        assert_eq!(l.lost(t0), Loss::Ignored);
        assert!(!l.reconnect_due(at - Duration::from_millis(1)));
        assert!(l.reconnect_due(at));
        assert_eq!(l.state(), SessionState::Connecting);
        l.configured();
        assert_eq!(
            l.lost(at),
            Loss::ReplaceAt {
                attempt: 3,
                at: at + RECONNECT_BACKOFF * 2
            }
        );
        assert!(l.reconnect_due(at + RECONNECT_BACKOFF * 2));
        assert_eq!(l.lost(at), Loss::TooOften);
    }

    #[test]
    fn old_losses_leave_the_window() {
        let mut l = Lifecycle::default();
        let t0 = Instant::now();
        for _ in 0..MAX_RECONNECTS {
            assert!(matches!(
                l.lost(t0),
                Loss::ReplaceNow { .. } | Loss::ReplaceAt { .. }
            ));
            l.reconnect_due(t0 + RECONNECT_WINDOW);
        }
        assert_eq!(
            l.lost(t0 + RECONNECT_WINDOW),
            Loss::ReplaceNow { attempt: 1 }
        );
    }

    #[test]
    fn an_ended_call_ignores_losses_and_keeps_its_first_reason() {
        let mut l = Lifecycle::default();
        assert!(l.end(EndReason::Idle));
        assert!(!l.end(EndReason::ModelError));
        assert_eq!(l.ended(), Some(EndReason::Idle));
        assert_eq!(l.lost(Instant::now()), Loss::Ignored);
        assert!(!l.can_send());
    }
}
