//! The re-attach path: a live call gets a new media stream, on whichever gateway Twilio reaches.
//!
//! Every `<Connect><Stream>` the gateway answers with names two routes of its own, as absolute
//! public URLs ([`stream_twiml`]):
//!
//! - `<Connect action="/twilio-connect-action?attach=<n>">`: Twilio requests it when `<Connect>`
//!   ends, which it does when the media socket closes or fails, for instance because the gateway
//!   holding it died. Any gateway answers ([`connect_action`]): if the call is still
//!   `in-progress` and the gateway did not end it itself (`<call_sid>.ended` in the `voice-calls`
//!   bucket), with a fresh `<Connect><Stream>` carrying a new one-time stream token bound to the
//!   call's current ownership epoch; otherwise with `<Hangup/>`. `attach` is the number of the
//!   stream whose end is reported; the route re-attaches a stream's call once
//!   (`<call_sid>.action.<n>`), and never for a stream older than the call's current one, so a
//!   replayed action request (Twilio's signatures have no nonce) gets no token.
//! - `<Stream statusCallback="/twilio-stream-status">`: `stream-started`, `stream-stopped` and
//!   `stream-error` are counted and logged ([`stream_status`]). After a `stream-stopped` or
//!   `stream-error`, when no newer stream has attached within [`REATTACH_GRACE`] and the gateway
//!   did not end the call, the gateway that got the callback re-attaches the call itself: a REST
//!   update of the live call with the same TwiML. That covers a Twilio that does not request the
//!   action URL when the gateway vanished (what it does then is not documented).
//!
//! The new stream's `start` opens as any other ([`crate::stream`]); its token says which stream
//! of the call it is and under which owner epoch, and the gateway publishes a `StreamStart` with
//! `resumed: true`, `attach` and `epoch` to the call's owner, which moves the call onto it.
//!
//! The owner epoch is read from the call's last `owner` event in `VOICE_EVENTS` (a direct get of
//! the last message on `voice.events.<call_sid>.owner`; the stream allows direct gets, and the
//! gateway's NATS user may make them on `owner` subjects only); a call without one is still owned
//! by the worker that accepted it (epoch 0).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use switchboard_proto::EVENTS_STREAM;
use switchboard_proto::event::StopReason;
use switchboard_twilio::twiml::{self, ConnectStream};
use tracing::Instrument as _;

use crate::claims::ClaimError;
use crate::frames::{TOKEN_PARAMETER, TRACEPARENT_PARAMETER};
use crate::metrics as m;
use crate::shared::Shared;
use crate::stream_token::{Attach, unix_now};
use crate::twilio_rest::{CallUpdate, Updated};
use crate::webhook::{MEDIA_PATH, twiml_response, verified_form};

/// `<Connect action>`: the route Twilio requests when a call's `<Connect>` ends.
pub const CONNECT_ACTION_PATH: &str = "/twilio-connect-action";
/// `<Stream statusCallback>`: the route Twilio reports a stream's start, stop and failure to.
pub const STREAM_STATUS_PATH: &str = "/twilio-stream-status";
/// The action URL's query parameter naming the stream whose `<Connect>` ended.
pub const ATTACH_QUERY: &str = "attach";

/// How long after a `stream-stopped` / `stream-error` a newer stream may take to attach (through
/// the action URL) before the gateway re-attaches the call by REST. Twilio requests the action
/// URL at once; this leaves it a few round trips.
pub const REATTACH_GRACE: Duration = Duration::from_secs(2);

/// `StreamEvent` of a `<Stream>` status callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEvent {
    Started,
    Stopped,
    Error,
}

impl StreamEvent {
    /// Every event, for metric descriptions and tests.
    pub const ALL: &'static [Self] = &[Self::Started, Self::Stopped, Self::Error];

    /// The word Twilio sends.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "stream-started",
            Self::Stopped => "stream-stopped",
            Self::Error => "stream-error",
        }
    }

    /// The event named `word`, if Twilio documents it.
    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|e| e.as_str() == word)
    }
}

/// The `<Connect><Stream>` TwiML of stream `attach` of a call, with its `token` (and the call's
/// `traceparent`): absolute URLs throughout, so the same document serves a webhook answer, an
/// action answer and a REST update.
pub fn stream_twiml(
    shared: &Shared,
    attach: Attach,
    token: &str,
    traceparent: Option<&str>,
) -> String {
    stream_twiml_after(shared, twiml::Response::new(), attach, token, traceparent)
}

/// [`stream_twiml`] with `before` (verbs Twilio runs first, such as `<Play digits>`).
pub fn stream_twiml_after(
    shared: &Shared,
    before: twiml::Response,
    attach: Attach,
    token: &str,
    traceparent: Option<&str>,
) -> String {
    let url = shared.validator.ws_url(MEDIA_PATH);
    let action = shared
        .validator
        .url(&format!("{CONNECT_ACTION_PATH}?{ATTACH_QUERY}={attach}"));
    let status_callback = shared.validator.url(STREAM_STATUS_PATH);
    let mut parameters = vec![(TOKEN_PARAMETER, token)];
    if let Some(traceparent) = traceparent {
        parameters.push((TRACEPARENT_PARAMETER, traceparent));
    }
    before
        .connect(&ConnectStream {
            url: &url,
            parameters: &parameters,
            action: Some(&action),
            status_callback: Some(&status_callback),
        })
        .build()
}

/// Why a call could not be re-attached.
#[derive(Debug, thiserror::Error)]
pub enum ReattachError {
    #[error(transparent)]
    Claims(#[from] ClaimError),
    #[error("reading the call's owner from `{EVENTS_STREAM}`: {0}")]
    Owner(String),
}

/// What a re-attach request comes to.
#[derive(Debug)]
pub enum Reattach {
    /// The TwiML of the call's new stream.
    Stream(String),
    /// The gateway ended the call itself (the stop reason): it stays ended.
    Ended(String),
    /// The stream this request is about is not the call's newest (a replayed or late request),
    /// or its call was re-attached already.
    Stale,
}

/// Re-attaches `call_sid` after stream `ended_attach` ended (None: whatever stream the call has):
/// a new one-time token under the current owner epoch, and the TwiML that opens it.
pub async fn reattach(
    shared: &Shared,
    call_sid: &str,
    ended_attach: Option<Attach>,
) -> Result<Reattach, ReattachError> {
    reattach_after(shared, call_sid, ended_attach, twiml::Response::new()).await
}

/// [`reattach`] with `before` ahead of the new `<Connect><Stream>` in the TwiML.
pub async fn reattach_after(
    shared: &Shared,
    call_sid: &str,
    ended_attach: Option<Attach>,
    before: twiml::Response,
) -> Result<Reattach, ReattachError> {
    let claims = shared.claims().await?;
    if let Some(reason) = claims.ended_reason(call_sid).await? {
        return Ok(Reattach::Ended(reason));
    }
    let current = claims.attached_stream(call_sid).await?.map(|(n, _)| n);
    // The stream ended is the newest one issued (attached or not): re-attach after it once.
    let ended = match (ended_attach, current) {
        (Some(ended), Some(current)) if ended < current => return Ok(Reattach::Stale),
        (Some(ended), _) => ended,
        (None, current) => current.unwrap_or_default(),
    };
    if !claims.claim_reattach(call_sid, ended).await? {
        return Ok(Reattach::Stale);
    }
    let owner = current_owner(shared, call_sid).await?;
    let epoch = owner.epoch;
    let expires = unix_now().saturating_add(shared.token_ttl_seconds);
    let (attach, token) = claims
        .reattach_token(&shared.tokens, call_sid, epoch, expires)
        .await?;
    tracing::info!(
        call_sid,
        attach,
        epoch,
        "call re-attached with a new stream token"
    );
    // Twilio's request carries no trace context: the new stream joins the call's trace through
    // the one its owner claimed the call in.
    let traceparent = owner
        .headers
        .get(TRACEPARENT_PARAMETER)
        .map(|value| value.as_str());
    Ok(Reattach::Stream(stream_twiml_after(
        shared,
        before,
        attach,
        &token,
        traceparent,
    )))
}

/// Who owns a call now, as a re-attached stream is bound to it.
#[derive(Debug, Default)]
pub struct CurrentOwner {
    /// The ownership epoch: that of the call's last `owner` event, 0 without one.
    pub epoch: u32,
    /// The headers of that event (its trace context is the call's); empty without one.
    pub headers: async_nats::HeaderMap,
}

/// The current owner of `call_sid`, read from its last `owner` event.
pub async fn current_owner(shared: &Shared, call_sid: &str) -> Result<CurrentOwner, ReattachError> {
    let js = jetstream::new(shared.nats.clone());
    let subject = shared.subjects.event(call_sid, "owner");
    match switchboard_service::events::last_owner_message(&js, &subject).await {
        Ok(last) => Ok(
            last.map_or_else(CurrentOwner::default, |last| CurrentOwner {
                epoch: last.owner.epoch,
                headers: last.headers,
            }),
        ),
        Err(e) => Err(ReattachError::Owner(format!("{subject}: {e}"))),
    }
}

/// `POST /twilio-connect-action`: `<Connect>` ended; re-attach the call, or hang up.
pub async fn connect_action(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let (form, _) = match verified_form(
        &shared,
        CONNECT_ACTION_PATH,
        &parts.uri,
        &parts.headers,
        body,
    )
    .await
    {
        Ok(verified) => verified,
        Err(error) => return error.into_response(),
    };
    let span = tracing::info_span!(parent: None, "connect_action", call_sid = %form.call_sid);
    async move {
        let ended_attach = attach_from_query(parts.uri.query());
        let outcome = if form.call_status != "in-progress" {
            tracing::info!(status = %form.call_status, "<Connect> ended with the call");
            Ok(Reattach::Ended(form.call_status.clone()))
        } else {
            reattach(&shared, &form.call_sid, ended_attach).await
        };
        match outcome {
            Ok(Reattach::Stream(doc)) => {
                metrics::counter!(m::REATTACHES, "via" => m::REATTACH_VIA_ACTION).increment(1);
                twiml_response(doc)
            }
            Ok(Reattach::Ended(reason)) => {
                metrics::counter!(m::CONNECT_ACTIONS_ENDED).increment(1);
                tracing::info!(%reason, "<Connect> ended a call that is over: hanging up");
                twiml_response(twiml::Response::new().hangup().build())
            }
            Ok(Reattach::Stale) => {
                metrics::counter!(m::WEBHOOK_REPLAYS).increment(1);
                tracing::warn!(
                    ?ended_attach,
                    "action request for a stream already followed"
                );
                (StatusCode::CONFLICT, "stream already re-attached").into_response()
            }
            Err(error) => {
                metrics::counter!(m::CLAIM_ERRORS, "what" => "reattach").increment(1);
                tracing::error!(%error, "cannot re-attach the call");
                (StatusCode::SERVICE_UNAVAILABLE, "re-attach unavailable").into_response()
            }
        }
    }
    .instrument(span)
    .await
}

/// `POST /twilio-stream-status`: a `<Stream>` status callback. Accepted while draining too: it
/// is about a call already known.
pub async fn stream_status(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let (form, pairs) = match verified_form(
        &shared,
        STREAM_STATUS_PATH,
        &parts.uri,
        &parts.headers,
        body,
    )
    .await
    {
        Ok(verified) => verified,
        Err(error) => return error.into_response(),
    };
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(event) = field("StreamEvent").and_then(StreamEvent::parse) else {
        return (StatusCode::BAD_REQUEST, "missing or unknown `StreamEvent`").into_response();
    };
    let stream_sid = field("StreamSid").unwrap_or_default().to_owned();
    metrics::counter!(m::STREAM_STATUS, "event" => event.as_str()).increment(1);
    match event {
        StreamEvent::Started => {
            tracing::info!(call_sid = %form.call_sid, %stream_sid, "stream status: started");
        }
        StreamEvent::Stopped | StreamEvent::Error => {
            tracing::info!(call_sid = %form.call_sid, %stream_sid, event = event.as_str(),
                error = field("StreamError").unwrap_or_default(), "stream status");
            let span = tracing::info_span!(parent: None, "stream_recovery",
                call_sid = %form.call_sid, %stream_sid);
            shared
                .tracker
                .spawn(recover(shared.clone(), form.call_sid.clone(), stream_sid).instrument(span));
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// After stream `stream_sid` of `call_sid` stopped: waits [`REATTACH_GRACE`] for a newer stream,
/// then re-attaches the call by a REST update unless it has one, or the gateway ended it.
async fn recover(shared: Arc<Shared>, call_sid: String, stream_sid: String) {
    tokio::select! {
        () = tokio::time::sleep(REATTACH_GRACE) => {}
        // A gateway that is shutting down leaves it to the others.
        () = shared.draining.cancelled() => return,
    }
    let current = match shared.claims().await {
        Ok(claims) => claims.attached_stream(&call_sid).await,
        Err(error) => Err(error),
    };
    let ended_attach = match current {
        Ok(Some((attach, sid))) if sid == stream_sid => attach,
        Ok(_) => {
            tracing::debug!("the call has another stream; nothing to recover");
            return;
        }
        Err(error) => {
            tracing::warn!(%error, "cannot check the call's stream; not recovering it");
            return;
        }
    };
    let doc = match reattach(&shared, &call_sid, Some(ended_attach)).await {
        Ok(Reattach::Stream(doc)) => doc,
        Ok(Reattach::Ended(reason)) => {
            tracing::debug!(%reason, "the gateway ended the call; nothing to recover");
            return;
        }
        Ok(Reattach::Stale) => {
            tracing::debug!("the call was re-attached through its action URL");
            return;
        }
        Err(error) => {
            tracing::warn!(%error, "cannot re-attach the call");
            return;
        }
    };
    match shared
        .rest
        .update_call(&call_sid, &CallUpdate::Twiml(doc))
        .await
    {
        Ok(Updated::Applied) => {
            metrics::counter!(m::REATTACHES, "via" => m::REATTACH_VIA_REST).increment(1);
            tracing::info!("call re-attached by a REST update");
        }
        Ok(Updated::AlreadyEnded) => tracing::debug!("the call had ended"),
        Err(error) => {
            metrics::counter!(m::REST_ERRORS, "kind" => format!("{:?}", error.kind())).increment(1);
            tracing::warn!(%error, "re-attaching the call by REST failed");
        }
    }
}

/// Longest wait for recording that the gateway ended a call (the stream's end waits for it, so
/// that Twilio's action request, which follows the socket's close, finds it).
pub const RECORD_ENDED_LIMIT: Duration = Duration::from_secs(1);

/// Records that the gateway ended `call_sid` itself (`reason`: the stream's stop reason), so
/// neither the action URL nor a status callback re-attaches it. Bounded by
/// [`RECORD_ENDED_LIMIT`]; a failure is counted and logged.
pub async fn record_ended(shared: &Shared, call_sid: &str, reason: StopReason) {
    let record = async {
        shared
            .claims()
            .await?
            .mark_ended(call_sid, reason.as_str())
            .await
    };
    let error = match tokio::time::timeout(RECORD_ENDED_LIMIT, record).await {
        Ok(Ok(())) => return,
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer within {RECORD_ENDED_LIMIT:?}"),
    };
    metrics::counter!(m::CLAIM_ERRORS, "what" => "ended").increment(1);
    tracing::warn!(%error, %reason, "cannot record that the gateway ended the call");
}

/// [`record_ended`] in a task of its own, for callers on the media path.
pub fn spawn_record_ended(shared: &Arc<Shared>, call_sid: &str, reason: StopReason) {
    let (shared_, call_sid) = (shared.clone(), call_sid.to_owned());
    shared
        .tracker
        .spawn(async move { record_ended(&shared_, &call_sid, reason).await }.in_current_span());
}

/// The `attach` query parameter of an action URL.
fn attach_from_query(query: Option<&str>) -> Option<Attach> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    pairs
        .into_iter()
        .find(|(k, _)| k == ATTACH_QUERY)
        .and_then(|(_, v)| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_events_are_twilios_words() {
        for &event in StreamEvent::ALL {
            assert_eq!(StreamEvent::parse(event.as_str()), Some(event));
        }
        assert_eq!(StreamEvent::parse("stream-error"), Some(StreamEvent::Error));
        assert_eq!(StreamEvent::parse("stopped"), None);
    }

    #[test]
    fn the_action_url_names_the_stream() {
        assert_eq!(attach_from_query(Some("attach=3")), Some(3));
        assert_eq!(attach_from_query(Some("x=1&attach=0")), Some(0));
        assert_eq!(attach_from_query(Some("attach=-1")), None);
        assert_eq!(attach_from_query(None), None);
    }
}
