//! The console's words for the contract's codes: `caller_hung_up` is shown as "Caller hung up".
//!
//! The keys are the contract's own word lists ([`EndReason`], [`DeclineReason`],
//! [`OwnerReason`], [`ToolErrorCode`], [`AnsweredBy`], [`Direction`]), so a code is typed once, in
//! `switchboard_proto`, and a new one does not compile until it has a label here. The console
//! reads them as `/assets/labels.js` (a `LABELS` object by list and code); a code it has no
//! label for (a tool's own error code, the gateway's `no_workers`) is shown with its
//! underscores as spaces.

use std::sync::LazyLock;

use serde_json::{Map, Value, json};
use switchboard_proto::Direction;
use switchboard_proto::event::{AnsweredBy, DeclineReason, EndReason, OwnerReason, ToolErrorCode};

/// Why a call ended, in words.
pub fn end_reason(reason: EndReason) -> &'static str {
    match reason {
        EndReason::CallerHungUp => "Caller hung up",
        EndReason::EndCall => "Agent ended the call",
        EndReason::Idle => "Caller stayed silent",
        EndReason::MaxDuration => "Reached the time limit",
        EndReason::Transferred => "Transferred",
        EndReason::ModelError => "Model error",
        EndReason::ModelConfigRejected => "Model refused the call's setup",
        EndReason::WorkerShutdown => "Worker shut down",
        EndReason::StreamLost => "Audio stream lost",
        EndReason::GatewayShutdown => "Gateway shut down",
        EndReason::WorkerSilent => "Worker stopped answering",
        EndReason::StreamError => "Audio stream error",
        EndReason::WorkerLost => "Worker lost, not taken over",
        EndReason::VoicemailLeft => "Left a voicemail",
        EndReason::AnsweringMachine => "Answering machine, hung up",
        EndReason::Fax => "Fax machine, hung up",
    }
}

/// Twilio's answering-machine verdict, in words.
pub fn answered_by(verdict: AnsweredBy) -> &'static str {
    match verdict {
        AnsweredBy::Human => "A person",
        AnsweredBy::MachineStart => "Answering machine",
        AnsweredBy::MachineEndBeep => "Answering machine (beep)",
        AnsweredBy::MachineEndSilence => "Answering machine (silence)",
        AnsweredBy::MachineEndOther => "Answering machine",
        AnsweredBy::Fax => "Fax machine",
        AnsweredBy::Unknown => "Unknown",
    }
}

/// Why no worker took a call, in words (the `rejected` reasons a worker gives).
pub fn decline_reason(reason: DeclineReason) -> &'static str {
    match reason {
        DeclineReason::BadOffer => "Invalid call",
        DeclineReason::Draining => "Workers shutting down",
        DeclineReason::AtCapacity => "All workers busy",
        DeclineReason::NoAgent => "No agent for the number",
        DeclineReason::Error => "Error",
        DeclineReason::ClaimLost => "Another worker took it",
    }
}

/// Why a worker owns a call, in words.
pub fn owner_reason(reason: OwnerReason) -> &'static str {
    match reason {
        OwnerReason::Offer => "took the call",
        OwnerReason::WorkerLost => "taken over",
        OwnerReason::HandOver => "handed over",
    }
}

/// A tool failure's code, in words.
pub fn tool_error(code: ToolErrorCode) -> &'static str {
    match code {
        ToolErrorCode::InvalidRequest => "Invalid request",
        ToolErrorCode::InvalidArguments => "Invalid arguments",
        ToolErrorCode::NotFound => "Not found",
        ToolErrorCode::Failed => "Failed",
        ToolErrorCode::Timeout => "Timed out",
        ToolErrorCode::Unavailable => "Unavailable",
        ToolErrorCode::Panicked => "Crashed",
        ToolErrorCode::UnknownTool => "Unknown tool",
        ToolErrorCode::UnknownAgent => "Unknown agent",
        ToolErrorCode::Busy => "Busy",
    }
}

/// A call's direction, in words.
pub fn direction(direction: Direction) -> Option<&'static str> {
    match direction {
        Direction::Inbound => Some("Inbound"),
        Direction::Outbound => Some("Outbound"),
        Direction::Web => Some("Test call (web)"),
        Direction::Unspecified => None,
    }
}

fn table<T: Copy>(
    all: &[T],
    word: impl Fn(T) -> Option<&'static str>,
    label: impl Fn(T) -> Option<&'static str>,
) -> Value {
    let mut map = Map::new();
    for &value in all {
        if let (Some(word), Some(label)) = (word(value), label(value)) {
            map.insert(word.to_owned(), json!(label));
        }
    }
    Value::Object(map)
}

/// Every label, by list and code.
pub fn all() -> Value {
    json!({
        "end_reason": table(EndReason::ALL, |r| Some(r.as_str()), |r| Some(end_reason(r))),
        "rejected_reason": table(DeclineReason::ALL, |r| Some(r.as_str()),
            |r| Some(decline_reason(r))),
        "owner_reason": table(OwnerReason::ALL, |r| Some(r.as_str()), |r| Some(owner_reason(r))),
        "tool_error": table(ToolErrorCode::ALL, |r| Some(r.as_str()), |r| Some(tool_error(r))),
        "answered_by": table(AnsweredBy::ALL, |r| Some(r.as_str()), |r| Some(answered_by(r))),
        "direction": table(&[Direction::Inbound, Direction::Outbound, Direction::Web],
            Direction::label, direction),
    })
}

/// `/assets/labels.js`: the labels as the script the console's pages load before `app.js`.
pub static SCRIPT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "\"use strict\";\n// The console's words for the contract's codes (persister/src/labels.rs).\n\
         const LABELS = {};\n",
        all()
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_word_has_a_label() {
        let all = all();
        for r in EndReason::ALL {
            assert_eq!(all["end_reason"][r.as_str()], end_reason(*r));
        }
        for r in DeclineReason::ALL {
            assert_eq!(all["rejected_reason"][r.as_str()], decline_reason(*r));
        }
        for r in ToolErrorCode::ALL {
            assert_eq!(all["tool_error"][r.as_str()], tool_error(*r));
        }
        for r in OwnerReason::ALL {
            assert_eq!(all["owner_reason"][r.as_str()], owner_reason(*r));
        }
        for r in AnsweredBy::ALL {
            assert_eq!(all["answered_by"][r.as_str()], answered_by(*r));
        }
        assert_eq!(all["direction"]["outbound"], "Outbound");
        assert_eq!(all["end_reason"]["caller_hung_up"], "Caller hung up");
        assert!(SCRIPT.contains("\"caller_hung_up\":\"Caller hung up\""));
    }
}
