//! What one attempt came to, learned from Twilio's call status and answering-machine verdict,
//! and what the campaign's retry policy makes of it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_proto::event::AnsweredBy;

/// An attempt's result, as stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallResult {
    /// A person answered (or no verdict said otherwise).
    Answered,
    /// Twilio's `busy`.
    Busy,
    /// Twilio's `no-answer`.
    NoAnswer,
    /// Answered by a machine or a fax (`AnsweredBy` `machine_*`, `fax`).
    Voicemail,
    /// Twilio's `failed` or `canceled`, or the create request refused.
    Failed,
}

impl CallResult {
    pub const ALL: [CallResult; 5] = [
        Self::Answered,
        Self::Busy,
        Self::NoAnswer,
        Self::Voicemail,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Busy => "busy",
            Self::NoAnswer => "no_answer",
            Self::Voicemail => "voicemail",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The result of a call whose final Twilio `CallStatus` is `status`, given the
    /// answering-machine verdict (`AnsweredBy`) if one came; `None` while the call is not over.
    pub fn from_twilio(status: &str, answered_by: Option<&str>) -> Option<Self> {
        Some(match status {
            "busy" => Self::Busy,
            "no-answer" => Self::NoAnswer,
            "failed" | "canceled" => Self::Failed,
            "completed" => match answered_by {
                Some(by) if is_machine(by) => Self::Voicemail,
                _ => Self::Answered,
            },
            _ => return None,
        })
    }
}

/// Twilio's `AnsweredBy` values that mean nobody to talk to.
pub fn is_machine(answered_by: &str) -> bool {
    AnsweredBy::parse(answered_by).is_some_and(|by| by.is_machine() || by == AnsweredBy::Fax)
}

/// How often and how soon one result is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRule {
    /// Attempts in all (the first included) before the contact is left with this result.
    pub max_attempts: u32,
    /// Seconds from this result to the next attempt.
    pub delay_seconds: u64,
}

/// A campaign's retry policy: a rule per retryable result; a result without one is final.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<RetryRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_answer: Option<RetryRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voicemail: Option<RetryRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<RetryRule>,
}

/// What becomes of a contact after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Dial again after this long.
    RetryIn(Duration),
    /// The contact is done with this result.
    Done,
}

impl RetryPolicy {
    /// Longest delay accepted between two attempts (a week).
    pub const MAX_DELAY_SECONDS: u64 = 7 * 24 * 3600;
    /// Most attempts a rule may ask for.
    pub const MAX_ATTEMPTS: u32 = 20;

    fn rule(&self, result: CallResult) -> Option<RetryRule> {
        match result {
            CallResult::Answered => None,
            CallResult::Busy => self.busy,
            CallResult::NoAnswer => self.no_answer,
            CallResult::Voicemail => self.voicemail,
            CallResult::Failed => self.failed,
        }
    }

    /// After the `attempts`-th attempt came to `result`.
    pub fn next(&self, result: CallResult, attempts: u32) -> Next {
        match self.rule(result) {
            Some(rule) if attempts < rule.max_attempts => {
                Next::RetryIn(Duration::from_secs(rule.delay_seconds))
            }
            _ => Next::Done,
        }
    }

    /// Why the policy cannot be used, if it cannot.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rule) in [
            ("busy", self.busy),
            ("no_answer", self.no_answer),
            ("voicemail", self.voicemail),
            ("failed", self.failed),
        ] {
            let Some(rule) = rule else { continue };
            if rule.max_attempts == 0 || rule.max_attempts > Self::MAX_ATTEMPTS {
                return Err(format!(
                    "retry.{name}.max_attempts must be 1..={}",
                    Self::MAX_ATTEMPTS
                ));
            }
            if rule.delay_seconds > Self::MAX_DELAY_SECONDS {
                return Err(format!(
                    "retry.{name}.delay_seconds must be at most {}",
                    Self::MAX_DELAY_SECONDS
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_statuses_map_to_results() {
        use CallResult::*;
        assert_eq!(CallResult::from_twilio("busy", None), Some(Busy));
        assert_eq!(CallResult::from_twilio("no-answer", None), Some(NoAnswer));
        assert_eq!(CallResult::from_twilio("failed", None), Some(Failed));
        assert_eq!(CallResult::from_twilio("canceled", None), Some(Failed));
        assert_eq!(CallResult::from_twilio("completed", None), Some(Answered));
        assert_eq!(
            CallResult::from_twilio("completed", Some("human")),
            Some(Answered)
        );
        for machine in [
            "machine_start",
            "machine_end_beep",
            "machine_end_silence",
            "machine_end_other",
            "fax",
        ] {
            assert_eq!(
                CallResult::from_twilio("completed", Some(machine)),
                Some(Voicemail)
            );
        }
        assert_eq!(
            CallResult::from_twilio("completed", Some("unknown")),
            Some(Answered)
        );
        for live in ["queued", "initiated", "ringing", "in-progress"] {
            assert_eq!(CallResult::from_twilio(live, None), None);
        }
        for r in CallResult::ALL {
            assert_eq!(CallResult::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn retries_stop_at_max_attempts() {
        let policy = RetryPolicy {
            busy: Some(RetryRule {
                max_attempts: 3,
                delay_seconds: 60,
            }),
            ..Default::default()
        };
        assert_eq!(
            policy.next(CallResult::Busy, 1),
            Next::RetryIn(Duration::from_secs(60))
        );
        assert_eq!(
            policy.next(CallResult::Busy, 2),
            Next::RetryIn(Duration::from_secs(60))
        );
        assert_eq!(policy.next(CallResult::Busy, 3), Next::Done);
        assert_eq!(policy.next(CallResult::NoAnswer, 1), Next::Done);
        assert_eq!(policy.next(CallResult::Answered, 1), Next::Done);
    }

    #[test]
    fn bad_rules_are_refused() {
        let mut policy = RetryPolicy::default();
        assert!(policy.validate().is_ok());
        policy.failed = Some(RetryRule {
            max_attempts: 0,
            delay_seconds: 1,
        });
        assert!(
            policy
                .validate()
                .unwrap_err()
                .contains("failed.max_attempts")
        );
        policy.failed = Some(RetryRule {
            max_attempts: 2,
            delay_seconds: RetryPolicy::MAX_DELAY_SECONDS + 1,
        });
        assert!(policy.validate().is_err());
    }
}
