//! Taking a call over: reading its events back from `VOICE_EVENTS` and rebuilding what the new
//! owner needs to go on with it.
//!
//! The events are read message by message (`STREAM.MSG.GET` with `next_by_subj` on
//! `voice.events.<sid>.>`), so the worker needs no consumer on the call log. Reads decide
//! nothing about ownership: the claim after them is a conditional write naming the stream
//! sequence of the last `owner` event read here, so a claim based on a stale read is refused.

use std::time::Duration;

use switchboard_proto::call_event::Body;
use switchboard_proto::subject::Subjects;
use switchboard_proto::{
    CallEvent, CallOwner, CallStarted, EVENTS_STREAM, Message as _, Role, ToolDispatched, Usage,
    now_ms,
};

use crate::agents::HANDOFF;
use crate::call::machine::{Resumed, Ringing};

/// Why a call could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// JetStream did not answer as expected.
    #[error("reading the call's events: {0}")]
    Stream(#[source] async_nats::Error),
    /// A stored event could not be decoded.
    #[error("a stored event of the call (stream sequence {sequence}) is undecodable: {reason}")]
    Decode { sequence: u64, reason: String },
}

/// A call's events as stored, in stream order, and the stream sequence of its last `owner`.
#[derive(Debug, Clone, Default)]
pub struct CallLog {
    pub events: Vec<CallEvent>,
    /// The stream sequence and body of the last `owner` event.
    pub last_owner: Option<(u64, CallOwner)>,
}

/// Reads every stored event of `call_sid`.
pub async fn read(
    js: &async_nats::jetstream::Context,
    subjects: &Subjects,
    call_sid: &str,
) -> Result<CallLog, ReadError> {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    let stream = js
        .get_stream_no_info(EVENTS_STREAM)
        .await
        .map_err(|e| ReadError::Stream(e.into()))?;
    let filter = subjects.call_events(call_sid);
    let owner_subject = subjects.event(call_sid, "owner");
    let mut log = CallLog::default();
    let mut next = 1;
    loop {
        let message = match stream
            .raw_message_builder()
            .sequence(next)
            .next_by_subject(filter.clone())
            .send()
            .await
        {
            Ok(message) => message,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
            Err(e) => return Err(ReadError::Stream(e.into())),
        };
        next = message.sequence + 1;
        let event = CallEvent::decode(message.payload).map_err(|e| ReadError::Decode {
            sequence: message.sequence,
            reason: e.to_string(),
        })?;
        if let (true, Some(Body::Owner(owner))) =
            (message.subject.as_str() == owner_subject, &event.body)
        {
            log.last_owner = Some((message.sequence, owner.clone()));
        }
        log.events.push(event);
    }
    Ok(log)
}

/// What the events of a call say about it, for the worker taking it over.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rebuilt {
    /// The call's `started` event.
    pub started: Option<CallStarted>,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: i64,
    /// The agent serving the call now (after any handoff).
    pub agent_id: String,
    /// The conversation events (transcripts and tool invocations) in `seq` order.
    pub history: Vec<CallEvent>,
    /// What the new owner's call machine resumes from.
    pub resumed: Resumed,
}

/// Rebuilds a call from its events (in any order; `seq` decides).
pub fn rebuild(events: &[CallEvent], now_ms: i64) -> Rebuilt {
    let mut ordered: Vec<&CallEvent> = events.iter().collect();
    ordered.sort_by_key(|e| e.seq);
    ordered.dedup_by_key(|e| e.seq);
    let mut r = Rebuilt::default();
    let mut dispatched: Vec<ToolDispatched> = Vec::new();
    let mut answered = std::collections::HashSet::new();
    let mut owner_agent = String::new();
    for e in ordered {
        let Some(body) = &e.body else { continue };
        match body {
            Body::Started(s) => {
                r.started = Some(s.clone());
                r.started_at_ms = e.at_ms;
                r.agent_id = s.agent_id.clone();
            }
            Body::Owner(o) if !o.agent_id.is_empty() => owner_agent = o.agent_id.clone(),
            Body::Usage(u) => add(&mut r.resumed.usage, u),
            Body::Outcome(_) => r.resumed.outcome_set = true,
            Body::Transfer(t) => r.resumed.transfer = Ringing::from_event(t),
            Body::Dispatched(d) => {
                // The model acted on the caller's speech up to here: a new owner must not hear
                // that question again from the gateway's replay (it would ask the tool twice).
                r.resumed.heard_until_ms = r.resumed.heard_until_ms.max(d.audio_end_ms);
                dispatched.push(d.clone());
            }
            Body::Tool(t) => {
                answered.insert(t.call_id.clone());
                if t.name == HANDOFF
                    && let Some(switchboard_proto::tool_invocation::Result::Output(out)) = &t.result
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(out)
                    && let Some(agent) = v["agent"].as_str()
                {
                    r.agent_id = agent.to_owned();
                }
                r.history.push(e.clone());
            }
            Body::Transcript(t) => {
                if t.role == Role::User as i32 {
                    r.resumed.heard_until_ms = r.resumed.heard_until_ms.max(t.audio_end_ms);
                }
                r.history.push(e.clone());
            }
            _ => {}
        }
    }
    if r.agent_id.is_empty() {
        r.agent_id = owner_agent;
    }
    r.resumed.pending_tools = dispatched
        .into_iter()
        .filter(|d| !answered.contains(&d.call_id))
        .collect();
    // Waiting: the last conversation line is the caller's, or a tool output nobody answered.
    r.resumed.waiting = match r.history.last().and_then(|e| e.body.as_ref()) {
        Some(Body::Transcript(t)) => t.role == Role::User as i32,
        Some(Body::Tool(_)) => true,
        _ => false,
    };
    let elapsed = if r.started_at_ms > 0 {
        u64::try_from(now_ms.saturating_sub(r.started_at_ms)).unwrap_or(0)
    } else {
        0
    };
    r.resumed.elapsed = Duration::from_millis(elapsed);
    r
}

/// Rebuilds a call read now.
pub fn rebuild_now(events: &[CallEvent]) -> Rebuilt {
    rebuild(events, now_ms())
}

fn add(total: &mut Usage, u: &Usage) {
    total.input_tokens += u.input_tokens;
    total.output_tokens += u.output_tokens;
    total.input_audio_tokens += u.input_audio_tokens;
    total.input_text_tokens += u.input_text_tokens;
    total.cached_tokens += u.cached_tokens;
    total.cached_audio_tokens += u.cached_audio_tokens;
    total.cached_text_tokens += u.cached_text_tokens;
    total.output_audio_tokens += u.output_audio_tokens;
    total.output_text_tokens += u.output_text_tokens;
    total.transcription_input_audio_tokens += u.transcription_input_audio_tokens;
    total.transcription_input_text_tokens += u.transcription_input_text_tokens;
    total.transcription_output_tokens += u.transcription_output_tokens;
    total.transcription_seconds += u.transcription_seconds;
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::event::owner_seq;
    use switchboard_proto::{ToolInvocation, TranscriptEntry, tool_invocation};

    fn ev(seq: u64, at_ms: i64, body: Body) -> CallEvent {
        CallEvent {
            call_sid: "CA1".into(),
            seq,
            at_ms,
            body: Some(body),
        }
    }

    fn said(role: Role, text: &str) -> Body {
        Body::Transcript(TranscriptEntry {
            role: role as i32,
            text: text.into(),
            ..Default::default()
        })
    }

    fn tool(call_id: &str, name: &str, output: &str) -> Body {
        Body::Tool(ToolInvocation {
            redacted: Vec::new(),
            call_id: call_id.into(),
            name: name.into(),
            arguments: "{}".into(),
            result: Some(tool_invocation::Result::Output(output.into())),
            latency_ms: 1,
        })
    }

    fn dispatched(call_id: &str) -> Body {
        Body::Dispatched(ToolDispatched {
            audio_end_ms: 0,
            redacted: Vec::new(),
            call_id: call_id.into(),
            name: "book".into(),
            arguments: "{}".into(),
        })
    }

    #[test]
    fn rebuilds_agent_history_usage_and_unanswered_tools() {
        let usage = |n| {
            Body::Usage(Usage {
                input_tokens: n,
                output_tokens: 1,
                ..Default::default()
            })
        };
        let events = vec![
            ev(
                1,
                1_000,
                Body::Owner(CallOwner {
                    agent_id: "desk".into(),
                    ..Default::default()
                }),
            ),
            ev(
                2,
                1_000,
                Body::Started(CallStarted {
                    agent_id: "desk".into(),
                    ..Default::default()
                }),
            ),
            ev(3, 1_100, said(Role::Assistant, "Hello.")),
            ev(4, 1_200, usage(10)),
            ev(5, 1_300, dispatched("h1")),
            ev(
                6,
                1_300,
                tool("h1", HANDOFF, r#"{"ok":true,"agent":"billing"}"#),
            ),
            ev(7, 1_400, said(Role::System, "Handed off to billing.")),
            ev(
                8,
                1_500,
                Body::Transcript(TranscriptEntry {
                    role: Role::User as i32,
                    text: "Book me in.".into(),
                    audio_end_ms: 4_200,
                    ..Default::default()
                }),
            ),
            ev(9, 1_600, usage(5)),
            ev(10, 1_700, dispatched("c2")),
        ];
        let r = rebuild(&events, 4_000);
        assert_eq!(r.agent_id, "billing");
        assert_eq!(r.started_at_ms, 1_000);
        assert_eq!(r.resumed.elapsed, Duration::from_millis(3_000));
        assert_eq!(
            (r.resumed.usage.input_tokens, r.resumed.usage.output_tokens),
            (15, 2)
        );
        assert_eq!(r.resumed.pending_tools.len(), 1);
        assert_eq!(r.resumed.pending_tools[0].call_id, "c2");
        assert_eq!(r.history.len(), 4);
        assert!(r.resumed.waiting, "the caller spoke last");
        assert_eq!(r.resumed.heard_until_ms, 4_200);
        assert!(!r.resumed.outcome_set);
    }

    #[test]
    fn a_question_the_model_already_acted_on_is_not_replayed() {
        // The caller's question is not transcribed yet, but the model called a tool for it:
        // the replay must not ask it again.
        let events = vec![
            ev(
                1,
                1_000,
                Body::Owner(CallOwner {
                    agent_id: "desk".into(),
                    ..Default::default()
                }),
            ),
            ev(
                2,
                1_100,
                Body::Transcript(TranscriptEntry {
                    role: Role::User as i32,
                    text: "Hi.".into(),
                    audio_end_ms: 2_000,
                    ..Default::default()
                }),
            ),
            ev(
                3,
                1_900,
                Body::Dispatched(ToolDispatched {
                    audio_end_ms: 6_400,
                    call_id: "c1".into(),
                    name: "book".into(),
                    arguments: "{}".into(),
                    redacted: Vec::new(),
                }),
            ),
        ];
        let r = rebuild(&events, 2_000);
        assert_eq!(r.resumed.heard_until_ms, 6_400);
        assert_eq!(r.resumed.pending_tools.len(), 1);
    }

    #[test]
    fn an_answered_call_is_not_waiting_and_owners_interleave_by_seq() {
        let events = vec![
            ev(owner_seq(1, 2), 2, said(Role::Assistant, "Anything else?")),
            ev(
                2,
                1,
                Body::Started(CallStarted {
                    agent_id: "desk".into(),
                    ..Default::default()
                }),
            ),
            ev(3, 1, said(Role::User, "What time is it?")),
        ];
        let r = rebuild(&events, 10);
        assert!(!r.resumed.waiting);
        assert_eq!(r.history.len(), 2);
        let r = rebuild(&events[1..], 10);
        assert!(r.resumed.waiting);
    }
}
