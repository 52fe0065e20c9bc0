//! How a call that ends on our side ends: the goodbye, then the hang-up or the transfer.
//!
//! `end_call`, `transfer_call`, the idle timeout and `max_call_seconds` do not cut the caller
//! off: the agent says goodbye first. [`Goodbye`] follows that last response from the request
//! to its last mark echo, and gives up waiting after [`GOODBYE_MAX_WAIT`] (the goodbye never
//! started) or the goodbye's audio length plus [`GOODBYE_GRACE`] (its echoes never came back).

use switchboard_proto::event::EndReason;
use switchboard_proto::outbound_frame;
use tokio::time::{Duration, Instant};

use super::transfer::Destination;

/// How long a goodbye may take to start before the call is hung up anyway.
pub const GOODBYE_MAX_WAIT: Duration = Duration::from_secs(30);
/// Slack after a goodbye's audio length before hanging up without its last mark echo.
pub const GOODBYE_GRACE: Duration = Duration::from_secs(5);

/// How a call that ends on our side ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The agent called `end_call`.
    EndCall,
    /// The agent called `transfer_call`: the caller is connected to this destination, which
    /// rings for `timeout` before the caller comes back to the agent. A warm transfer has the
    /// summary the human hears first (`whisper`) and the line's number to call them from.
    Transfer {
        to: Destination,
        timeout: Duration,
        whisper: String,
        caller_id: String,
    },
    /// The caller stayed silent through the idle prompt.
    Idle,
    /// The agent's `max_call_seconds` passed.
    MaxDuration,
    /// An answering machine picked up: the agent's `voicemail_message` is spoken after the
    /// beep.
    Voicemail,
}

impl Ending {
    /// The end reason recorded for it.
    pub fn reason(&self) -> EndReason {
        match self {
            Self::EndCall => EndReason::EndCall,
            Self::Transfer { .. } => EndReason::Transferred,
            Self::Idle => EndReason::Idle,
            Self::MaxDuration => EndReason::MaxDuration,
            Self::Voicemail => EndReason::VoicemailLeft,
        }
    }

    /// The frame that tells the gateway to carry it out.
    pub fn frame(&self) -> outbound_frame::Frame {
        match self {
            Self::Transfer {
                to,
                timeout,
                whisper,
                caller_id,
            } => outbound_frame::Frame::Transfer(switchboard_proto::Transfer {
                to: to.number.clone(),
                announcement: String::new(),
                timeout_seconds: u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX),
                whisper: whisper.clone(),
                caller_id: caller_id.clone(),
            }),
            other => hangup_frame(other.reason()),
        }
    }
}

/// A hang-up frame carrying `reason`.
pub fn hangup_frame(reason: EndReason) -> outbound_frame::Frame {
    outbound_frame::Frame::Hangup(switchboard_proto::Hangup {
        reason: reason.as_str().to_owned(),
    })
}

/// A goodbye in progress.
#[derive(Debug)]
struct Pending {
    ending: Ending,
    /// The response speaking the goodbye, once it started.
    response_id: Option<String>,
    response_done: bool,
    /// Hang up at this time whatever happened.
    deadline: Instant,
}

/// The goodbye of one call, if one is in progress.
#[derive(Debug, Default)]
pub struct Goodbye {
    pending: Option<Pending>,
}

impl Goodbye {
    /// Starts a goodbye at `now`. Returns false (and changes nothing) if one is in progress.
    pub fn begin(&mut self, ending: Ending, now: Instant) -> bool {
        if self.pending.is_some() {
            return false;
        }
        self.pending = Some(Pending {
            ending,
            response_id: None,
            response_done: false,
            deadline: now + GOODBYE_MAX_WAIT,
        });
        true
    }

    /// Whether the call is ending (a goodbye is in progress).
    pub fn in_progress(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether the goodbye still needs its response (none started yet).
    pub fn awaits_response(&self) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|p| p.response_id.is_none())
    }

    /// Whether the goodbye is being spoken (its response started).
    pub fn speaking(&self) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|p| p.response_id.is_some())
    }

    /// A goodbye response started.
    pub fn on_created(&mut self, response_id: &str) {
        if let Some(p) = &mut self.pending
            && p.response_id.is_none()
        {
            p.response_id = Some(response_id.to_owned());
        }
    }

    /// A response ended. If it was the goodbye, whose audio lasts `audio`, the call is hung up
    /// at the latest `audio` plus [`GOODBYE_GRACE`] from `now`.
    pub fn on_response_done(&mut self, response_id: &str, audio: Duration, now: Instant) {
        if let Some(p) = &mut self.pending
            && p.response_id.as_deref() == Some(response_id)
        {
            p.response_done = true;
            p.deadline = now + audio + GOODBYE_GRACE;
        }
    }

    /// The goodbye response, once it is done (the call hangs up when it has been heard).
    pub fn spoken(&self) -> Option<&str> {
        self.pending
            .as_ref()
            .filter(|p| p.response_done)
            .and_then(|p| p.response_id.as_deref())
    }

    /// The goodbye response, if one started (its outputs tell how long it is).
    pub fn response_id(&self) -> Option<&str> {
        self.pending.as_ref().and_then(|p| p.response_id.as_deref())
    }

    /// When to hang up whatever happened.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.deadline)
    }

    /// Ends the goodbye: how the call ends now.
    pub fn take(&mut self) -> Option<Ending> {
        self.pending.take().map(|p| p.ending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endings_have_their_reason_and_frame() {
        assert_eq!(Ending::Idle.reason(), EndReason::Idle);
        assert_eq!(
            Ending::MaxDuration.frame(),
            hangup_frame(EndReason::MaxDuration)
        );
        let transfer = Ending::Transfer {
            to: Destination {
                department: "sales".into(),
                number: "+1555".into(),
            },
            timeout: Duration::from_secs(20),
            whisper: String::new(),
            caller_id: String::new(),
        };
        assert!(matches!(
            transfer.frame(),
            outbound_frame::Frame::Transfer(t) if t.to == "+1555" && t.timeout_seconds == 20
        ));
    }

    #[test]
    fn a_goodbye_waits_for_its_response_then_its_audio() {
        let now = Instant::now();
        let mut g = Goodbye::default();
        assert!(!g.in_progress());
        assert!(g.begin(Ending::EndCall, now));
        assert!(!g.begin(Ending::Idle, now), "one goodbye at a time");
        assert!(g.awaits_response());
        assert_eq!(g.deadline(), Some(now + GOODBYE_MAX_WAIT));

        g.on_created("resp_1");
        g.on_created("resp_2");
        assert!(g.speaking());
        assert_eq!(g.response_id(), Some("resp_1"));
        assert_eq!(g.spoken(), None);

        g.on_response_done("resp_other", Duration::ZERO, now);
        assert_eq!(g.spoken(), None);
        let later = now + Duration::from_secs(2);
        g.on_response_done("resp_1", Duration::from_millis(1500), later);
        assert_eq!(g.spoken(), Some("resp_1"));
        assert_eq!(
            g.deadline(),
            Some(later + Duration::from_millis(1500) + GOODBYE_GRACE)
        );
        assert_eq!(g.take(), Some(Ending::EndCall));
        assert!(!g.in_progress());
        assert_eq!(g.deadline(), None);
    }
}
