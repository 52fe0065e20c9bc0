//! The people and machines a call's TwiML reaches besides the caller: numbers a `<Dial>` rings
//! (a human who answers, or a line that is busy, fails, or rings out) and the automated menu
//! that hears `<Play digits>`.
//!
//! A `<Dial>` is followed as Twilio documents it: the number rings for `<Dial timeout>` (30 s
//! when absent); an `answered` event in `<Number statusCallbackEvent>` posts the dialed call's
//! status callback (the dialed call's own `CallSid`, `ParentCallSid` = the caller's,
//! `CallStatus=in-progress`, `CallbackSource=call-progress-events`); when the dial ends, Twilio
//! requests `<Dial action>` with `DialCallStatus` (`completed`, `busy`, `no-answer`, `failed`),
//! `DialCallSid` and `DialCallDuration`, and runs the TwiML it answers in place of the rest of
//! the document. Without an action the call ends with the dial. `<Play digits>` tones reach the
//! callee's menu (pauses, `w`, are not tones).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

/// Twilio's `<Dial timeout>` when the attribute is absent.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a busy or failing line takes to say so.
pub const REFUSAL_DELAY: Duration = Duration::from_millis(300);

/// How a dialed number behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callee {
    /// Picks up after `after` (if that is within the ring timeout) and talks for `talk`, then
    /// hangs up.
    Answers { after: Duration, talk: Duration },
    /// Rings until the timeout.
    NoAnswer,
    /// Busy at once.
    Busy,
    /// Cannot be reached.
    Fails,
}

impl Default for Callee {
    /// A colleague who picks up after a second and talks for two.
    fn default() -> Self {
        Self::Answers {
            after: Duration::from_secs(1),
            talk: Duration::from_secs(2),
        }
    }
}

/// The numbers a call may dial, by E.164 number; any other number behaves as
/// [`Callee::default`].
#[derive(Debug, Clone, Default)]
pub struct Callees(Arc<HashMap<String, Callee>>);

impl Callees {
    /// `number` behaves as `callee`.
    pub fn with(mut self, number: &str, callee: Callee) -> Self {
        Arc::make_mut(&mut self.0).insert(number.to_owned(), callee);
        self
    }

    /// How `number` behaves.
    pub fn get(&self, number: &str) -> Callee {
        self.0.get(number).copied().unwrap_or_default()
    }
}

/// A conference's state, as its participants see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Room {
    /// A participant who starts the conference joined (the others stop holding).
    pub started: bool,
    /// A participant with `endConferenceOnExit` left: everyone is disconnected.
    pub ended: bool,
}

/// The account's conferences by name, shared by every call of a fake Twilio.
#[derive(Debug, Clone, Default)]
pub struct Conferences(Arc<tokio::sync::Mutex<HashMap<String, watch::Sender<Room>>>>);

impl Conferences {
    /// Watches conference `name` (created empty when nobody is in it yet).
    pub async fn watch(&self, name: &str) -> watch::Receiver<Room> {
        let mut rooms = self.0.lock().await;
        rooms
            .entry(name.to_owned())
            .or_insert_with(|| watch::channel(Room::default()).0)
            .subscribe()
    }

    async fn update(&self, name: &str, f: impl FnOnce(&mut Room)) {
        let mut rooms = self.0.lock().await;
        rooms
            .entry(name.to_owned())
            .or_insert_with(|| watch::channel(Room::default()).0)
            .send_modify(f);
    }

    /// A participant who starts conference `name` joined.
    pub async fn start(&self, name: &str) {
        self.update(name, |r| r.started = true).await;
    }

    /// A participant with `endConferenceOnExit` left conference `name`.
    pub async fn end(&self, name: &str) {
        self.update(name, |r| r.ended = true).await;
    }
}

/// How one `<Dial>` went, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DialReport {
    pub number: String,
    /// `<Dial timeout>` in seconds (None: absent).
    pub timeout_seconds: Option<u32>,
    /// The `DialCallStatus` Twilio reported.
    pub status: String,
    /// The `answered` status callback was posted (and accepted).
    pub answered_callback: bool,
    /// The action URL was requested.
    pub action_requested: bool,
}

/// What a dial comes to: after `wait`, `DialCallStatus` = `status`; `answered_at` is when the
/// human picked up (from the start of the dial), if they did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialPlan {
    pub answered_at: Option<Duration>,
    pub wait: Duration,
    pub status: &'static str,
}

/// How a dial of `callee` ringing for `timeout` goes.
pub fn plan(callee: Callee, timeout: Duration) -> DialPlan {
    match callee {
        Callee::Answers { after, talk } if after <= timeout => DialPlan {
            answered_at: Some(after),
            wait: after + talk,
            status: "completed",
        },
        Callee::Answers { .. } | Callee::NoAnswer => DialPlan {
            answered_at: None,
            wait: timeout,
            status: "no-answer",
        },
        Callee::Busy => DialPlan {
            answered_at: None,
            wait: REFUSAL_DELAY,
            status: "busy",
        },
        Callee::Fails => DialPlan {
            answered_at: None,
            wait: REFUSAL_DELAY,
            status: "failed",
        },
    }
}

/// The tones `<Play digits>` sends (`w` is a half-second pause, not a tone).
pub fn tones(digits: &str) -> String {
    digits.chars().filter(|c| *c != 'w').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dials_end_as_twilio_reports_them() {
        let timeout = Duration::from_secs(10);
        let quick = Callee::Answers {
            after: Duration::from_secs(1),
            talk: Duration::from_secs(3),
        };
        assert_eq!(
            plan(quick, timeout),
            DialPlan {
                answered_at: Some(Duration::from_secs(1)),
                wait: Duration::from_secs(4),
                status: "completed"
            }
        );
        let late = Callee::Answers {
            after: Duration::from_secs(11),
            talk: Duration::from_secs(3),
        };
        assert_eq!(plan(late, timeout).status, "no-answer");
        assert_eq!(plan(late, timeout).wait, timeout);
        assert_eq!(plan(Callee::NoAnswer, timeout).status, "no-answer");
        assert_eq!(plan(Callee::Busy, timeout).status, "busy");
        assert_eq!(plan(Callee::Fails, timeout).status, "failed");
    }

    #[test]
    fn callees_default_to_a_colleague_who_answers() {
        let callees = Callees::default().with("+15550002222", Callee::Busy);
        assert_eq!(callees.get("+15550002222"), Callee::Busy);
        assert_eq!(callees.get("+15550009999"), Callee::default());
        assert_eq!(tones("1w2w#"), "12#");
    }
}
