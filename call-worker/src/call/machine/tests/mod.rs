use serde_json::json;
use switchboard_proto::event::ToolErrorCode;
use switchboard_proto::{Dtmf, InboundAudio, MarkEcho, StreamStart, StreamStop};
use switchboard_realtime::session::TurnDetection;

use super::*;
use crate::agents::TurnDetectionConfig;

fn agent_with(f: impl FnOnce(&mut Agent)) -> Arc<Agent> {
    let mut a = Agent::new("desk", "You are the front desk.");
    a.tools = vec![
        "lookup_customer".into(),
        "book".into(),
        END_CALL.into(),
        SET_OUTCOME.into(),
        TRANSFER_CALL.into(),
    ];
    a.transfer_to = Some("+15550002222".into());
    f(&mut a);
    Arc::new(a)
}

fn session_tools(agent: &Agent) -> SessionTools {
    let mut tools = SessionTools::default();
    for name in &agent.tools {
        let f = crate::tools::builtin_function(name, agent)
            .unwrap_or_else(|| FunctionTool::new(name, "d", json!({"type":"object"})));
        tools.functions.push(f);
    }
    tools
}

use switchboard_realtime::session::FunctionTool;

struct Call {
    m: CallMachine,
    t0: Instant,
    out: Vec<Effect>,
}

impl Call {
    fn new(agent: Arc<Agent>) -> Self {
        Self::with_offer(agent, |_| {})
    }

    /// A call whose offer `f` changes first.
    fn with_offer(agent: Arc<Agent>, f: impl FnOnce(&mut CallOffer)) -> Self {
        let t0 = Instant::now();
        let mut offer = CallOffer {
            call_sid: "CA1".into(),
            from: "+15550001234".into(),
            to: "+15550001111".into(),
            offered_at_ms: 1_000,
            ..Default::default()
        };
        f(&mut offer);
        let setup = CallSetup {
            offer,
            agent: Arc::clone(&agent),
            worker_id: "w1".into(),
            model: "gpt-realtime".into(),
            tool_timeout: Duration::from_millis(8000),
            accepted_at_ms: 1_050,
        };
        let mut m = CallMachine::new(setup, t0);
        m.start_session(session_tools(&agent));
        let out = m.take_effects();
        let mut call = Self { m, t0, out };
        call.confirm(0);
        call
    }

    /// The server confirms the session configuration sent last (what a working server
    /// answers to the worker's `session.update`).
    fn confirm(&mut self, ms: u64) {
        let session = self.m.full_session();
        let updated = json!({"type":"session.updated","event_id":"event_u","session":session});
        self.server(ms, updated);
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// The effects so far; every client event among them is checked against the SDK's GA
    /// client event types first.
    fn take(&mut self) -> Vec<Effect> {
        let mut all = std::mem::take(&mut self.out);
        all.extend(self.m.take_effects());
        for ev in realtime(&all) {
            let v = serde_json::to_value(&ev).unwrap();
            let errors = switchboard_realtime::sdk_schema::check_client(&v);
            assert!(errors.is_empty(), "not the SDK's shape: {errors:?}\n{v}");
        }
        all
    }

    fn server(&mut self, ms: u64, v: serde_json::Value) {
        let ev = ServerEvent::parse(&v.to_string()).expect("server event");
        assert!(!matches!(ev, ServerEvent::Unknown), "unknown event {v}");
        self.m
            .on_realtime(RealtimeEvent::Server(Box::new(ev)), self.at(ms));
    }

    fn inbound(&mut self, ms: u64, frame: inbound_frame::Frame) {
        self.m.on_inbound(frame, self.at(ms));
    }

    fn start(&mut self, ms: u64) {
        self.inbound(
            ms,
            inbound_frame::Frame::Start(StreamStart {
                stream_sid: "MZ1".into(),
                call_sid: "CA1".into(),
                ..Default::default()
            }),
        );
    }

    fn echo(&mut self, ms: u64, name: &str) {
        self.inbound(
            ms,
            inbound_frame::Frame::Mark(MarkEcho { name: name.into() }),
        );
    }

    /// `response.created` answering the request the worker has pending (its metadata echoed),
    /// or a server-started one when none is pending.
    fn created(&mut self, ms: u64, id: &str) {
        let metadata = self.m.responses.pending_metadata();
        self.server(
            ms,
            json!({"type":"response.created","response":{"id":id,"status":"in_progress","metadata":metadata}}),
        );
    }

    /// `response.created` of a response server VAD started by itself (no metadata).
    fn vad_created(&mut self, ms: u64, id: &str) {
        self.server(
            ms,
            json!({"type":"response.created","response":{"id":id,"status":"in_progress","metadata":null}}),
        );
    }

    fn delta(&mut self, ms: u64, response: &str, item: &str, bytes: usize) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(vec![0x55u8; bytes]);
        self.server(
            ms,
            json!({"type":"response.output_audio.delta","response_id":response,"item_id":item,
                   "output_index":0,"content_index":0,"delta":b64}),
        );
    }

    fn transcript_done(&mut self, ms: u64, response: &str, item: &str, text: &str) {
        self.server(
            ms,
            json!({"type":"response.output_audio_transcript.done","response_id":response,
                   "item_id":item,"output_index":0,"content_index":0,"transcript":text}),
        );
    }

    fn done(&mut self, ms: u64, id: &str, status: &str, output: serde_json::Value) {
        self.server(
            ms,
            json!({"type":"response.done","response":{"id":id,"status":status,"output":output,
                "usage":{"total_tokens":30,"input_tokens":20,"output_tokens":10,
                  "input_token_details":{"text_tokens":5,"audio_tokens":15,"cached_tokens":4},
                  "output_token_details":{"text_tokens":3,"audio_tokens":7}}}}),
        );
    }

    fn speech_started(&mut self, ms: u64, item: &str) {
        self.server(
            ms,
            json!({"type":"input_audio_buffer.speech_started","audio_start_ms":ms,"item_id":item}),
        );
    }

    fn speech_stopped(&mut self, ms: u64, item: &str) {
        self.server(
            ms,
            json!({"type":"input_audio_buffer.speech_stopped","audio_end_ms":ms,"item_id":item}),
        );
    }

    /// A full assistant turn with audio, the response done, no echoes yet.
    fn say(&mut self, ms: u64, response: &str, item: &str, chunks: usize) {
        self.created(ms, response);
        for _ in 0..chunks {
            self.delta(ms, response, item, 800);
        }
        self.transcript_done(ms, response, item, "Hello there.");
        self.done(
            ms,
            response,
            "completed",
            json!([{"type":"message","id":item,"role":"assistant","content":[]}]),
        );
    }
}

fn realtime(effects: &[Effect]) -> Vec<ClientEvent> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Realtime(ev) => Some((**ev).clone()),
            _ => None,
        })
        .collect()
}

fn outs(effects: &[Effect]) -> Vec<outbound_frame::Frame> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Out(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

fn events(effects: &[Effect]) -> Vec<Body> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Event(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

fn marks(effects: &[Effect]) -> Vec<String> {
    outs(effects)
        .into_iter()
        .filter_map(|f| match f {
            outbound_frame::Frame::Mark(m) => Some(m.name),
            _ => None,
        })
        .collect()
}

/// The params of every `response.create`, without the request metadata every one carries
/// (checked here): `None` when nothing else was set.
fn response_creates(effects: &[Effect]) -> Vec<Option<ResponseParams>> {
    realtime(effects)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::ResponseCreate { response, event_id } => {
                let mut params = response.expect("every request carries metadata");
                let metadata = params.metadata.take().expect("request metadata");
                assert_eq!(
                    metadata.get(super::super::arbiter::REQUEST_KEY),
                    event_id.as_ref()
                );
                Some((params != ResponseParams::default()).then_some(params))
            }
            _ => None,
        })
        .collect()
}

fn transcripts(effects: &[Effect]) -> Vec<TranscriptEntry> {
    events(effects)
        .into_iter()
        .filter_map(|b| match b {
            Body::Transcript(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn ended(effects: &[Effect]) -> Option<CallEnded> {
    events(effects).into_iter().find_map(|b| match b {
        Body::Ended(e) => Some(e),
        _ => None,
    })
}

fn tool_events(effects: &[Effect]) -> Vec<ToolInvocation> {
    events(effects)
        .into_iter()
        .filter_map(|b| match b {
            Body::Tool(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn function_outputs(effects: &[Effect]) -> Vec<(String, String)> {
    realtime(effects)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::ConversationItemCreate {
                item:
                    Item::FunctionCallOutput {
                        call_id, output, ..
                    },
                ..
            } => Some((call_id, output)),
            _ => None,
        })
        .collect()
}

fn closed(c: &mut Call, ms: u64) {
    c.m.on_realtime(
        RealtimeEvent::Closed {
            code: None,
            reason: "reset".into(),
        },
        c.at(ms),
    );
}

fn reconnects(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Reconnect))
        .count()
}

fn audio(c: &mut Call, ms: u64) {
    c.inbound(
        ms,
        inbound_frame::Frame::Audio(InboundAudio {
            payload: vec![0x7f; 160].into(),
            ..Default::default()
        }),
    );
}

fn filler_creates(effects: &[Effect]) -> usize {
    response_creates(effects)
        .iter()
        .filter(|p| {
            p.as_ref()
                .and_then(|p| p.instructions.as_deref())
                .is_some_and(|i| i.contains(&format!("\"{FILLER_LINE}\"")))
        })
        .count()
}

fn desk_with_handoff() -> Arc<Agent> {
    agent_with(|a| {
        a.tools.push(HANDOFF.into());
        a.handoff_to = vec!["billing".into()];
    })
}

fn billing() -> Arc<Agent> {
    let mut a = Agent::new("billing", "You are billing.");
    a.voice = "cedar".into();
    a.tools = vec!["lookup_invoice".into(), END_CALL.into()];
    a.idle_timeout = Some(Duration::from_secs(20));
    a.max_call = Some(Duration::from_secs(600));
    a.turn_detection = TurnDetectionConfig::SemanticVad {
        eagerness: Some("high".into()),
    };
    Arc::new(a)
}

fn handoff_requests(effects: &[Effect]) -> Vec<(String, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Handoff { call_id, agent_id } => Some((call_id.clone(), agent_id.clone())),
            _ => None,
        })
        .collect()
}

/// A greeting agent whose greeting request is pending.
fn greeting_call() -> Call {
    let mut c = Call::new(agent_with(|a| a.greeting = Some("Hello, Acme.".into())));
    assert_eq!(response_creates(&c.take()).len(), 1);
    c
}

fn pending_event_id(fx: &[Effect]) -> Option<String> {
    realtime(fx).into_iter().find_map(|e| match e {
        ClientEvent::ResponseCreate { event_id, .. } => event_id,
        _ => None,
    })
}

fn busy_error(event_id: Option<&str>) -> serde_json::Value {
    json!({"type":"error","event_id":"event_e","error":{"type":"invalid_request_error",
        "code":"conversation_already_has_active_response",
        "message":"Conversation already has an active response in progress: resp_vad.",
        "param":null,"event_id":event_id}})
}

/// A call whose session configuration the server has not answered yet (unlike [`Call::new`]).
fn unconfirmed_call() -> (CallMachine, Instant) {
    let t0 = Instant::now();
    let agent = agent_with(|_| {});
    let setup = CallSetup {
        offer: CallOffer {
            call_sid: "CA1".into(),
            ..Default::default()
        },
        agent: Arc::clone(&agent),
        worker_id: "w1".into(),
        model: "gpt-realtime".into(),
        tool_timeout: Duration::from_secs(8),
        accepted_at_ms: 0,
    };
    let mut m = CallMachine::new(setup, t0);
    m.start_session(session_tools(&agent));
    m.take_effects();
    (m, t0)
}

fn call_item(call_id: &str, name: &str, args: &str) -> serde_json::Value {
    json!({"type":"function_call","id":format!("item_{call_id}"),"call_id":call_id,"name":name,"arguments":args})
}

fn args_done(c: &mut Call, ms: u64, response: &str, call_id: &str, name: &str, args: &str) {
    c.server(
        ms,
        json!({"type":"response.function_call_arguments.done","response_id":response,
               "item_id":format!("item_{call_id}"),"output_index":0,"call_id":call_id,"name":name,"arguments":args}),
    );
}

fn tool_done(c: &mut Call, ms: u64, call_id: &str, name: &str, reply: ToolReply) {
    c.m.on_tool_done(
        ToolDone {
            call_id: call_id.into(),
            name: name.into(),
            arguments: "{}".into(),
            reply,
            outcome: None,
            latency_ms: 12,
        },
        c.at(ms),
    );
}

mod on_amd;
mod on_barge_in;
mod on_endings;
mod on_filler;
mod on_handoff;
mod on_responses;
mod on_session;
mod on_start;
mod on_timers;
mod on_tools;
mod on_transcripts;
mod on_transfers;
