//! Twilio call status callbacks as `status` call events.
//!
//! Twilio numbers its callbacks per call (`SequenceNumber`, from 0) and retries a callback it
//! could not deliver, so the event's seq is derived from that number: a retry becomes the same
//! `Nats-Msg-Id` and JetStream drops the duplicate.

use switchboard_proto::event::GATEWAY_SEQ_BASE;
use switchboard_proto::{CallEvent, CallStatus, call_event};
use switchboard_twilio::webhook::CallForm;

/// The `SequenceNumber` a callback without one most likely had: Twilio's callbacks come in this
/// order, so the event still gets a stable, distinct seq per status.
fn implied_sequence(status: &str) -> u32 {
    match status {
        "queued" | "initiated" => 0,
        "ringing" => 1,
        "in-progress" | "answered" => 2,
        _ => 3,
    }
}

/// The `status` event for one callback. `sip_response_code` is Twilio's `SipResponseCode`
/// field, when sent.
pub fn status_event(form: &CallForm, sip_response_code: Option<u32>, at_ms: i64) -> CallEvent {
    let sequence_number = form
        .sequence_number
        .unwrap_or_else(|| implied_sequence(&form.call_status));
    CallEvent {
        call_sid: form.call_sid.clone(),
        seq: GATEWAY_SEQ_BASE + 1 + u64::from(sequence_number),
        at_ms,
        body: Some(call_event::Body::Status(CallStatus {
            status: form.call_status.clone(),
            sequence_number,
            duration_seconds: form.call_duration.unwrap_or(0),
            sip_response_code: sip_response_code.unwrap_or(0),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(status: &str, seq: Option<u32>) -> CallForm {
        CallForm {
            call_sid: "CA1".into(),
            call_status: status.into(),
            sequence_number: seq,
            call_duration: Some(12),
            ..Default::default()
        }
    }

    #[test]
    fn seq_follows_twilios_sequence_number() {
        let ev = status_event(&form("completed", Some(3)), Some(200), 9);
        assert_eq!(ev.seq, GATEWAY_SEQ_BASE + 4);
        assert_eq!(ev.kind(), "status");
        assert_eq!(ev.msg_id(), format!("CA1:{}", GATEWAY_SEQ_BASE + 4));
        assert_eq!(ev.at_ms, 9);
        let Some(call_event::Body::Status(s)) = ev.body else {
            panic!()
        };
        assert_eq!(
            (s.status.as_str(), s.sequence_number, s.duration_seconds),
            ("completed", 3, 12)
        );
        assert_eq!(s.sip_response_code, 200);
    }

    #[test]
    fn never_collides_with_the_rejected_event_and_tolerates_a_missing_number() {
        for (status, seq) in [("initiated", 0), ("ringing", 1), ("in-progress", 2)] {
            let ev = status_event(&form(status, None), None, 0);
            assert_eq!(ev.seq, GATEWAY_SEQ_BASE + 1 + seq);
        }
        assert!(status_event(&form("initiated", Some(0)), None, 0).seq > GATEWAY_SEQ_BASE);
    }
}
