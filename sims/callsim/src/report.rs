//! What one call was like for the caller, and the errors that stop a call from happening at all.

use std::fmt;

use serde::Serialize;
use switchboard_twilio::twiml::{TwimlError, Verb};

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// The caller hung up (a `hangup` step, the end of the script, or cancellation).
    Caller,
    /// The far end closed the media socket.
    Agent,
    /// The webhook answered without a media stream (e.g. "all agents are busy").
    Rejected,
    /// A step failed, the call ran past its time limit, or the socket broke.
    Error,
}

/// A contiguous stretch of assistant audio the caller heard, in ms since the stream started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Segment {
    pub start_ms: u64,
    pub end_ms: u64,
}

/// The caller's view of one call.
#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    pub call_sid: String,
    /// The `streamSid` callsim assigned to the call's first stream, if one started.
    pub stream_sid: Option<String>,
    /// Every stream of the call, in order (more than one once the call was re-attached).
    pub stream_sids: Vec<String>,
    /// `<Connect>` action URLs requested.
    pub connect_actions: u32,
    /// New streams opened for the call after its first (through an action URL or a REST
    /// update).
    pub reattached: u32,
    /// Streams whose socket failed while `<Connect>` had an action URL to go on with.
    pub stream_failures: Vec<String>,
    pub webhook_status: u16,
    /// The TwiML the webhook answered with.
    pub twiml: Vec<Verb>,
    /// The `<Say>` text when the gateway answered without a stream (busy).
    pub rejected_message: Option<String>,
    /// The media socket was opened.
    pub connected: bool,
    pub ended_by: EndedBy,
    /// Webhook POST sent -> first outbound audio received.
    pub greeting_latency_ms: Option<u64>,
    /// End of each caller `say` -> first assistant audio received after it.
    pub response_latencies_ms: Vec<u64>,
    /// Assistant audio that actually played (a clear drops the rest; so does hanging up).
    pub heard_ms: u64,
    /// The played stretches; gaps shorter than one 20 ms frame are bridged.
    pub heard_segments: Vec<Segment>,
    /// The stretches in which the caller's audio was speech (not silence), in ms since the
    /// stream started, as sent: what a recording's caller channel must hold.
    pub said_segments: Vec<Segment>,
    /// All assistant audio received, played or not.
    pub audio_received_ms: u64,
    pub clears: u32,
    pub marks_sent_back: u32,
    /// For each mark echoed because its audio finished: how long after it fell due the echo
    /// went out. Large values mean callsim itself is overloaded.
    pub mark_lateness_ms: Vec<u64>,
    pub frames_sent: u64,
    /// Stream start -> end of the call.
    pub duration_ms: u64,
    /// Close code and reason when the far end closed the socket.
    pub close_code: Option<u16>,
    pub close_reason: Option<String>,
    /// Outbound frames Twilio would flag (with Twilio's error code), in arrival order.
    pub protocol_errors: Vec<String>,
    /// Steps that failed, a time-out, a broken socket.
    pub step_errors: Vec<String>,
}

impl CallReport {
    /// A report for a call that has not started its stream yet.
    pub(crate) fn new(call_sid: String) -> Self {
        Self {
            call_sid,
            stream_sid: None,
            stream_sids: Vec::new(),
            connect_actions: 0,
            reattached: 0,
            stream_failures: Vec::new(),
            webhook_status: 0,
            twiml: Vec::new(),
            rejected_message: None,
            connected: false,
            ended_by: EndedBy::Error,
            greeting_latency_ms: None,
            response_latencies_ms: Vec::new(),
            heard_ms: 0,
            heard_segments: Vec::new(),
            said_segments: Vec::new(),
            audio_received_ms: 0,
            clears: 0,
            marks_sent_back: 0,
            mark_lateness_ms: Vec::new(),
            frames_sent: 0,
            duration_ms: 0,
            close_code: None,
            close_reason: None,
            protocol_errors: Vec::new(),
            step_errors: Vec::new(),
        }
    }

    /// A call went as a caller would want: connected, ended by one side, nothing flagged.
    pub fn is_clean(&self) -> bool {
        self.connected
            && matches!(self.ended_by, EndedBy::Caller | EndedBy::Agent)
            && self.step_errors.is_empty()
            && self.protocol_errors.is_empty()
    }
}

/// Milliseconds as seconds with one decimal, for summaries.
fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

impl fmt::Display for CallReport {
    /// A short human summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ended = match self.ended_by {
            EndedBy::Caller => "caller hung up",
            EndedBy::Agent => "agent hung up",
            EndedBy::Rejected => "rejected",
            EndedBy::Error => "failed",
        };
        writeln!(
            f,
            "call {}: webhook HTTP {}, {ended}",
            self.call_sid, self.webhook_status
        )?;
        if self.ended_by == EndedBy::Rejected {
            return writeln!(
                f,
                "  said: {}",
                self.rejected_message.as_deref().unwrap_or("(nothing)")
            );
        }
        if let (Some(code), reason) = (self.close_code, &self.close_reason) {
            writeln!(
                f,
                "  socket closed by the far end: {code} {}",
                reason.as_deref().unwrap_or("")
            )?;
        }
        writeln!(f, "  duration {}", secs(self.duration_ms))?;
        match self.greeting_latency_ms {
            Some(ms) => writeln!(f, "  greeting latency {ms} ms")?,
            None => writeln!(f, "  no greeting audio")?,
        }
        if !self.response_latencies_ms.is_empty() {
            let list: Vec<String> = self
                .response_latencies_ms
                .iter()
                .map(u64::to_string)
                .collect();
            writeln!(f, "  response latencies {} ms", list.join(", "))?;
        }
        writeln!(
            f,
            "  heard {} of {} received, in {} stretch(es); {} clear(s); {} mark(s) echoed",
            secs(self.heard_ms),
            secs(self.audio_received_ms),
            self.heard_segments.len(),
            self.clears,
            self.marks_sent_back
        )?;
        writeln!(f, "  sent {} media frames", self.frames_sent)?;
        for e in &self.protocol_errors {
            writeln!(f, "  protocol error: {e}")?;
        }
        for e in &self.step_errors {
            writeln!(f, "  error: {e}")?;
        }
        Ok(())
    }
}

/// Why a call could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The configuration or script cannot work.
    #[error("invalid call configuration: {0}")]
    Config(String),
    /// The webhook request did not get an answer.
    #[error("voice webhook {url} failed")]
    Webhook {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The webhook answered with an HTTP error (Twilio would play its "application error").
    #[error("voice webhook answered HTTP {status}: {body}")]
    WebhookStatus { status: u16, body: String },
    /// The webhook's answer is not TwiML.
    #[error(transparent)]
    Twiml(#[from] TwimlError),
    /// The stream URL points somewhere other than the gateway under test.
    #[error(
        "<Stream url=\"{0}\"> is not on the gateway or PUBLIC_URL; callsim only connects there"
    )]
    StreamUrl(String),
    /// The WebSocket upgrade failed.
    #[error("media socket {url} could not be opened")]
    Connect {
        url: String,
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
}
