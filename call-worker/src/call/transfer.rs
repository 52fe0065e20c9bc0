//! A transfer that may come back: from the `Transfer` frame to the human answering, or to the
//! caller returning to the agent on a new stream.
//!
//! Twilio dials the human with `<Dial timeout action>`. The stream ends at once (Twilio leaves
//! `<Connect>` for the new TwiML), but the call is not over for the agent until the gateway
//! reports the result ([`DialStatus`]): `answered` / `completed` end the call as transferred;
//! `busy`, `no-answer`, `failed` or `canceled` mean the caller comes back on a new stream of
//! the same call (the gateway answers the `<Dial>` action with a new `<Connect><Stream>`), and
//! the agent tells them. With no result within the ring timeout plus [`RESULT_GRACE`], the call
//! ends as transferred (the caller's line is no longer ours either way).

use switchboard_proto::CallTransfer;
use switchboard_proto::event::DialStatus;
use tokio::time::{Duration, Instant};

/// Slack after the ring timeout for Twilio's callback and the new stream.
pub const RESULT_GRACE: Duration = Duration::from_secs(15);

/// Where a transfer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The department the model chose (empty: the agent's single `transfer_to`).
    pub department: String,
    /// The number dialed.
    pub number: String,
}

impl Destination {
    /// How the record and the model name it (never the number).
    pub fn label(&self) -> String {
        if self.department.is_empty() {
            "a colleague".to_owned()
        } else {
            format!("the {} department", self.department)
        }
    }
}

/// A transfer in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// The human's phone rings; the call has no stream.
    Dialing {
        to: Destination,
        /// The outcome `transferred` was recorded by the transfer itself (not by the agent),
        /// so a failed transfer replaces it.
        own_outcome: bool,
        deadline: Instant,
    },
    /// The human did not answer: the caller is on their way back on a new stream.
    Returning {
        to: Destination,
        status: DialStatus,
        own_outcome: bool,
        deadline: Instant,
    },
}

/// What a transfer's result means for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The human has the caller: the call ends as transferred.
    Connected,
    /// The caller comes back to the agent.
    Returning,
    /// Not about this transfer (a late or repeated callback).
    Ignored,
}

impl Transfer {
    /// The `Transfer` frame is out at `now`; the number rings for `timeout`.
    pub fn dialing(to: Destination, own_outcome: bool, timeout: Duration, now: Instant) -> Self {
        Self::Dialing {
            to,
            own_outcome,
            deadline: now + timeout + RESULT_GRACE,
        }
    }

    /// When the transfer is given up on.
    pub fn deadline(&self) -> Instant {
        match self {
            Self::Dialing { deadline, .. } | Self::Returning { deadline, .. } => *deadline,
        }
    }

    /// Where it goes.
    pub fn destination(&self) -> &Destination {
        match self {
            Self::Dialing { to, .. } | Self::Returning { to, .. } => to,
        }
    }

    /// The gateway reported `status` at `now`.
    pub fn on_result(&mut self, status: DialStatus, now: Instant) -> Resolution {
        let Self::Dialing {
            to, own_outcome, ..
        } = self
        else {
            return Resolution::Ignored;
        };
        if status.connected() {
            return Resolution::Connected;
        }
        *self = Self::Returning {
            to: to.clone(),
            status,
            own_outcome: *own_outcome,
            deadline: now + RESULT_GRACE,
        };
        Resolution::Returning
    }

    /// Why the caller is back (a new stream came): the dial status when the gateway reported
    /// one, `no-answer` when the stream came first.
    pub fn returned_status(&self) -> DialStatus {
        match self {
            Self::Returning { status, .. } => *status,
            Self::Dialing { .. } => DialStatus::NoAnswer,
        }
    }

    /// Whether the transfer recorded the `transferred` outcome itself.
    pub fn own_outcome(&self) -> bool {
        match self {
            Self::Dialing { own_outcome, .. } | Self::Returning { own_outcome, .. } => *own_outcome,
        }
    }
}

/// A transfer that rang when its owner was lost, as the call's `transfer` events tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ringing {
    /// Where it went (the department; the number is not recorded).
    pub to: Destination,
    /// The outcome `transferred` on record is the transfer's own.
    pub sets_outcome: bool,
}

impl Ringing {
    /// The transfer an event says still rings (`None`: the event records its result).
    pub fn from_event(event: &CallTransfer) -> Option<Self> {
        event.status.is_empty().then(|| Self {
            to: Destination {
                department: event.department.clone(),
                number: String::new(),
            },
            sets_outcome: event.sets_outcome,
        })
    }
}

/// The `transfer` event of a transfer to `to`: ringing (`status` `None`), or its result.
pub fn event(to: &Destination, sets_outcome: bool, status: Option<DialStatus>) -> CallTransfer {
    CallTransfer {
        department: to.department.clone(),
        status: status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        sets_outcome,
    }
}

/// What the agent is told when the caller is back, to say in its own words.
pub fn returned_instructions(to: &Destination, status: DialStatus) -> String {
    let what = match status {
        DialStatus::Busy => "the line was busy",
        DialStatus::Failed => "the call could not be placed",
        DialStatus::Canceled => "the call was canceled",
        _ => "nobody answered",
    };
    format!(
        "The transfer to {} did not go through: {what}. The caller is back on the line with \
         you. Tell them briefly, then ask how else you can help.",
        to.label()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sales() -> Destination {
        Destination {
            department: "sales".into(),
            number: "+15550002222".into(),
        }
    }

    #[test]
    fn an_unanswered_transfer_waits_for_the_caller() {
        let now = Instant::now();
        let mut t = Transfer::dialing(sales(), true, Duration::from_secs(20), now);
        assert_eq!(t.deadline(), now + Duration::from_secs(20) + RESULT_GRACE);
        assert_eq!(t.returned_status(), DialStatus::NoAnswer);
        let later = now + Duration::from_secs(21);
        assert_eq!(t.on_result(DialStatus::Busy, later), Resolution::Returning);
        assert_eq!(t.deadline(), later + RESULT_GRACE);
        assert_eq!(t.returned_status(), DialStatus::Busy);
        assert!(t.own_outcome());
        // A repeated callback changes nothing.
        assert_eq!(
            t.on_result(DialStatus::Answered, later),
            Resolution::Ignored
        );
        assert_eq!(t.returned_status(), DialStatus::Busy);
    }

    #[test]
    fn an_answered_transfer_connects() {
        let now = Instant::now();
        let mut t = Transfer::dialing(sales(), false, Duration::from_secs(20), now);
        assert_eq!(
            t.on_result(DialStatus::Answered, now),
            Resolution::Connected
        );
        assert_eq!(
            t.on_result(DialStatus::Completed, now),
            Resolution::Connected
        );
    }

    #[test]
    fn the_agent_is_told_why_without_the_number() {
        let text = returned_instructions(&sales(), DialStatus::Busy);
        assert!(
            text.contains("sales department") && text.contains("busy"),
            "{text}"
        );
        assert!(!text.contains("5550002222"));
    }
}
