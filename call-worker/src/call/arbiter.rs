//! Which response answers which of our requests.
//!
//! A Realtime session runs one response at a time, and two writers start them: the call (a
//! greeting, a goodbye, a filler line, the answer to a keypress or a tool round) and the server
//! itself (server VAD at the end of the caller's turn). Their events race: the server can send a
//! VAD response's `response.created` *before* the `conversation_already_has_active_response`
//! error that refuses our own `response.create`, or after it. Crediting a response to a request by
//! arrival order would then hand the VAD response our greeting or goodbye, and the request would
//! be lost.
//!
//! So every `response.create` carries `response.metadata = {"switchboard_request": <event id>}`,
//! which the server echoes in `response.created` / `response.done`. A response is ours exactly when
//! its metadata names our pending request; anything else was started by the server. A request the
//! server refused because another response was running goes back to the front of the queue and is
//! sent again after that response's `response.done`, whichever order the two events came in.

use std::collections::VecDeque;

use switchboard_realtime::ClientEvent;
use switchboard_realtime::client::ResponseParams;
use switchboard_realtime::server::{ErrorDetail, Metadata, Response};

/// The metadata key that ties a response to the request that asked for it.
pub const REQUEST_KEY: &str = "switchboard_request";
/// The error that refuses a `response.create` while another response runs.
pub const ACTIVE_RESPONSE: &str = "conversation_already_has_active_response";

/// Why a `response.create` was sent, so its response can be recognised when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The answer to something the model must react to (a keypress, a tool round).
    Plain,
    /// The agent's greeting.
    Greeting,
    /// "Are you still there?"
    Prompt,
    /// The last words before a hangup or transfer.
    Goodbye,
    /// A short line while a slow tool runs.
    Filler,
}

/// What besides the responses decides whether the assistant is silent (see
/// [`Arbiter::silent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Floor {
    /// There is a Realtime session to send a request to.
    pub session_ready: bool,
    /// Assistant audio is still playing to the caller.
    pub playing: bool,
    /// The call is saying goodbye.
    pub ending: bool,
}

/// A `response.create` sent and not yet answered.
#[derive(Debug, Clone)]
struct Request {
    purpose: Purpose,
    event_id: String,
    params: Option<ResponseParams>,
}

/// What an `error` event means for our pending request.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The error is about some other client event.
    NotOurs,
    /// Another response (most likely a VAD response) is running: the request was put back at
    /// the front of the queue (a filler line, only worth saying on time, was dropped).
    Busy(Purpose),
    /// The request failed for good.
    Failed(Purpose),
}

/// The response bookkeeping of one Realtime session.
#[derive(Debug, Default)]
pub struct Arbiter {
    active: Option<String>,
    requested: Option<Request>,
    deferred: VecDeque<(Purpose, Option<ResponseParams>)>,
    next_id: u64,
}

impl Arbiter {
    /// Whether a response runs or a request is unanswered (a new `response.create` would be
    /// refused or would race).
    pub fn busy(&self) -> bool {
        self.active.is_some() || self.requested.is_some()
    }

    /// Whether a `response.create` may be sent now: no response runs or is asked for, and
    /// there is a session to send it to (`session_ready`, from
    /// [`super::lifecycle::Lifecycle::can_send`]). Anything asked for otherwise waits in the
    /// queue.
    pub fn may_request(&self, session_ready: bool) -> bool {
        session_ready && !self.busy()
    }

    /// Whether the assistant is silent, so a line of the call's own (the idle prompt, a filler
    /// line) may start: a response may be requested, nothing of an earlier one still plays,
    /// and the call is not saying goodbye.
    pub fn silent(&self, floor: Floor) -> bool {
        self.may_request(floor.session_ready) && !floor.playing && !floor.ending
    }

    /// The response running now, if any.
    pub fn active(&self) -> Option<&str> {
        self.active.as_deref()
    }

    /// The metadata of the request awaiting its `response.created`, if any.
    pub fn pending_metadata(&self) -> Option<Metadata> {
        self.requested.as_ref().map(|r| metadata(&r.event_id))
    }

    /// The purpose of the request awaiting its `response.created`, if any.
    pub fn pending(&self) -> Option<Purpose> {
        self.requested.as_ref().map(|r| r.purpose)
    }

    /// Queues a request behind whatever is running.
    pub fn defer(&mut self, purpose: Purpose, params: Option<ResponseParams>) {
        self.deferred.push_back((purpose, params));
    }

    /// Queues a request ahead of every other waiting one.
    pub fn defer_first(&mut self, purpose: Purpose, params: Option<ResponseParams>) {
        self.deferred.push_front((purpose, params));
    }

    /// Forgets every waiting request (the call stopped talking to whoever answered).
    pub fn drop_deferred(&mut self) {
        self.deferred.clear();
    }

    /// The next waiting request.
    pub fn next_deferred(&mut self) -> Option<(Purpose, Option<ResponseParams>)> {
        self.deferred.pop_front()
    }

    /// The `response.create` of a new request. A plain request waiting in the queue is answered
    /// by this one too (except by a filler line, which answers nothing).
    pub fn create(&mut self, purpose: Purpose, params: Option<ResponseParams>) -> ClientEvent {
        self.next_id += 1;
        let event_id = format!("sb_resp_{}", self.next_id);
        if purpose != Purpose::Filler {
            self.deferred
                .retain(|(p, params)| !(*p == Purpose::Plain && params.is_none()));
        }
        let mut sent = params.clone().unwrap_or_default();
        sent.metadata = Some(metadata(&event_id));
        self.requested = Some(Request {
            purpose,
            event_id: event_id.clone(),
            params,
        });
        ClientEvent::ResponseCreate {
            event_id: Some(event_id),
            response: Some(sent),
        }
    }

    /// A response started. Returns the purpose of our request when the response answers it;
    /// `None` for a response the server started by itself (our request, if any, stays pending:
    /// its refusal is on its way).
    pub fn on_created(&mut self, response: &Response) -> Option<Purpose> {
        self.active = Some(response.id.clone());
        let ours = self
            .requested
            .as_ref()
            .is_some_and(|r| answers(response, &r.event_id));
        if ours {
            self.requested.take().map(|r| r.purpose)
        } else {
            None
        }
    }

    /// A response ended. Only one runs at a time, so none is active now.
    pub fn on_done(&mut self, response: &Response) {
        self.active = None;
        // A response whose `response.created` was never seen still answers its request.
        if self
            .requested
            .as_ref()
            .is_some_and(|r| answers(response, &r.event_id))
        {
            self.requested = None;
        }
    }

    /// Judges an `error` event against our pending request. The server echoes our `event_id`
    /// in `error.event_id` when it can; without one, only codes that can answer a
    /// `response.create` are taken as its answer.
    pub fn on_error(&mut self, error: &ErrorDetail) -> Refusal {
        let Some(request) = &self.requested else {
            return Refusal::NotOurs;
        };
        let code = error.code.as_deref().unwrap_or_default();
        let ours = match &error.event_id {
            Some(id) => *id == request.event_id,
            // Only `response.create` is refused for an active response, whatever else runs.
            None if code == ACTIVE_RESPONSE => true,
            None => self.active.is_none() && error_answers_response_create(code),
        };
        if !ours {
            return Refusal::NotOurs;
        }
        let Some(request) = self.requested.take() else {
            return Refusal::NotOurs;
        };
        if code == ACTIVE_RESPONSE {
            if request.purpose != Purpose::Filler {
                self.deferred.push_front((request.purpose, request.params));
            }
            Refusal::Busy(request.purpose)
        } else {
            Refusal::Failed(request.purpose)
        }
    }

    /// The session is gone: forgets the running response and returns whether one ran, and the
    /// unanswered request (purpose and params), to be asked of the next session.
    pub fn reset(&mut self) -> (bool, Option<(Purpose, Option<ResponseParams>)>) {
        let was_active = self.active.take().is_some();
        let requested = self.requested.take().map(|r| (r.purpose, r.params));
        (was_active, requested)
    }
}

fn metadata(event_id: &str) -> Metadata {
    Metadata::from([(REQUEST_KEY.to_owned(), event_id.to_owned())])
}

/// Whether `response` carries the metadata of request `event_id`.
fn answers(response: &Response, event_id: &str) -> bool {
    response
        .metadata
        .as_ref()
        .and_then(|m| m.get(REQUEST_KEY))
        .is_some_and(|id| id == event_id)
}

/// Whether an error (without an `event_id`) plausibly answers our pending `response.create`,
/// rather than some other client event.
fn error_answers_response_create(code: &str) -> bool {
    !(code.starts_with("item_truncate")
        || code.starts_with("item_delete")
        || code.starts_with("input_audio_buffer")
        || matches!(
            code,
            "response_cancel_not_active"
                | "unsupported_content_type"
                | "invalid_value"
                | "cannot_update_voice"
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(id: &str, metadata: Option<Metadata>) -> Response {
        Response {
            id: id.into(),
            status: "in_progress".into(),
            metadata,
            ..Default::default()
        }
    }

    fn sent_metadata(ev: &ClientEvent) -> Metadata {
        let ClientEvent::ResponseCreate {
            response: Some(p), ..
        } = ev
        else {
            panic!("not a response.create: {ev:?}");
        };
        p.metadata.clone().expect("metadata")
    }

    fn busy_error(event_id: Option<&str>) -> ErrorDetail {
        ErrorDetail {
            kind: "invalid_request_error".into(),
            code: Some(ACTIVE_RESPONSE.into()),
            message: "Conversation already has an active response in progress".into(),
            param: None,
            event_id: event_id.map(str::to_owned),
        }
    }

    #[test]
    fn a_request_carries_its_event_id_in_the_metadata() {
        let mut a = Arbiter::default();
        let ev = a.create(Purpose::Greeting, None);
        let ClientEvent::ResponseCreate { event_id, .. } = &ev else {
            panic!()
        };
        assert_eq!(
            sent_metadata(&ev).get(REQUEST_KEY),
            event_id.as_ref(),
            "{ev:?}"
        );
        assert_eq!(a.pending(), Some(Purpose::Greeting));
    }

    #[test]
    fn vad_response_created_before_the_refusal_is_not_credited() {
        let mut a = Arbiter::default();
        let ev = a.create(Purpose::Goodbye, None);
        let ClientEvent::ResponseCreate { event_id, .. } = &ev else {
            panic!()
        };
        // The server's own response starts first...
        assert_eq!(a.on_created(&response("resp_vad", None)), None);
        assert_eq!(a.pending(), Some(Purpose::Goodbye), "still ours to place");
        // ...then our request is refused, with or without its event id.
        assert_eq!(
            a.on_error(&busy_error(event_id.as_deref())),
            Refusal::Busy(Purpose::Goodbye)
        );
        assert!(a.busy(), "the VAD response runs");
        a.on_done(&response("resp_vad", None));
        assert!(!a.busy());
        assert_eq!(a.next_deferred().map(|(p, _)| p), Some(Purpose::Goodbye));
    }

    #[test]
    fn refusal_before_the_vad_response_created() {
        for event_id in [true, false] {
            let mut a = Arbiter::default();
            let ev = a.create(Purpose::Greeting, None);
            let ClientEvent::ResponseCreate { event_id: id, .. } = &ev else {
                panic!()
            };
            let err = busy_error(if event_id { id.as_deref() } else { None });
            assert_eq!(a.on_error(&err), Refusal::Busy(Purpose::Greeting));
            assert_eq!(a.on_created(&response("resp_vad", None)), None);
            a.on_done(&response("resp_vad", None));
            // Sent again: the new request's response is recognised by its own metadata.
            let (p, params) = a.next_deferred().expect("requeued");
            let again = a.create(p, params);
            let md = sent_metadata(&again);
            assert_eq!(
                a.on_created(&response("resp_2", Some(md))),
                Some(Purpose::Greeting)
            );
        }
    }

    #[test]
    fn requests_wait_for_the_response_and_the_session() {
        let mut a = Arbiter::default();
        assert!(a.may_request(true));
        assert!(!a.may_request(false), "no session to send it to");
        let quiet = Floor {
            session_ready: true,
            playing: false,
            ending: false,
        };
        assert!(a.silent(quiet));
        assert!(!a.silent(Floor {
            playing: true,
            ..quiet
        }));
        assert!(!a.silent(Floor {
            ending: true,
            ..quiet
        }));
        assert!(!a.silent(Floor {
            session_ready: false,
            ..quiet
        }));
        let ev = a.create(Purpose::Plain, None);
        assert!(!a.may_request(true), "a request is unanswered");
        a.on_created(&response("resp_1", Some(sent_metadata(&ev))));
        assert!(!a.may_request(true), "a response runs");
        assert!(!a.silent(quiet));
        a.on_done(&response("resp_1", Some(sent_metadata(&ev))));
        assert!(a.may_request(true));
    }

    #[test]
    fn a_refused_filler_line_is_dropped() {
        let mut a = Arbiter::default();
        a.create(Purpose::Filler, None);
        assert_eq!(
            a.on_error(&busy_error(None)),
            Refusal::Busy(Purpose::Filler)
        );
        assert_eq!(a.next_deferred(), None);
    }

    #[test]
    fn another_request_s_metadata_is_not_ours() {
        let mut a = Arbiter::default();
        let first = a.create(Purpose::Plain, None);
        let stale = sent_metadata(&first);
        a.on_error(&busy_error(None));
        let (p, params) = a.next_deferred().unwrap();
        a.create(p, params);
        // A late response for the refused request id would not answer the new one.
        assert_eq!(a.on_created(&response("r", Some(stale))), None);
        assert_eq!(a.pending(), Some(Purpose::Plain));
    }

    #[test]
    fn errors_about_other_events_are_not_ours() {
        let mut a = Arbiter::default();
        let ev = a.create(Purpose::Plain, None);
        let ClientEvent::ResponseCreate { .. } = &ev else {
            panic!()
        };
        let other = ErrorDetail {
            code: Some("item_truncate_invalid_item_id".into()),
            ..Default::default()
        };
        assert_eq!(a.on_error(&other), Refusal::NotOurs);
        let other_id = ErrorDetail {
            code: Some("invalid_value".into()),
            event_id: Some("sb_session_1".into()),
            ..Default::default()
        };
        assert_eq!(a.on_error(&other_id), Refusal::NotOurs);
        let failed = ErrorDetail {
            code: Some("rate_limit_exceeded".into()),
            ..Default::default()
        };
        assert_eq!(a.on_error(&failed), Refusal::Failed(Purpose::Plain));
        assert!(!a.busy());
    }
}
