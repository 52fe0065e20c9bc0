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
        let t0 = Instant::now();
        let setup = CallSetup {
            offer: CallOffer {
                call_sid: "CA1".into(),
                from: "+15550001234".into(),
                to: "+15550001111".into(),
                offered_at_ms: 1_000,
                ..Default::default()
            },
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

// ------------------------------------------------------------------------------------- start

#[test]
fn started_first_then_ga_session_update_then_greeting() {
    let mut c = Call::new(agent_with(|a| {
        a.greeting = Some("Thanks for calling!".into())
    }));
    let fx = c.take();
    assert!(matches!(&fx[0], Effect::Event(Body::Started(s))
        if s.agent_id == "desk" && s.worker_id == "w1" && s.model == "gpt-realtime" && s.from == "+15550001234"));
    let rt = realtime(&fx);
    let ClientEvent::SessionUpdate { session, .. } = &rt[0] else {
        panic!("first client event must be session.update: {rt:?}");
    };
    let v = serde_json::to_value(session).unwrap();
    assert_eq!(v["type"], "realtime");
    assert_eq!(v["model"], "gpt-realtime");
    assert_eq!(v["output_modalities"], json!(["audio"]));
    assert_eq!(v["instructions"], "You are the front desk.");
    assert_eq!(v["audio"]["input"]["format"]["type"], "audio/pcmu");
    assert_eq!(
        v["audio"]["input"]["transcription"]["model"],
        "gpt-4o-mini-transcribe"
    );
    assert_eq!(
        v["audio"]["input"]["turn_detection"],
        json!({"type":"server_vad","threshold":0.5,"prefix_padding_ms":300,"silence_duration_ms":500,
               "create_response":true,"interrupt_response":true})
    );
    assert_eq!(v["audio"]["output"]["format"]["type"], "audio/pcmu");
    assert_eq!(v["audio"]["output"]["voice"], "marin");
    assert_eq!(v["tool_choice"], "auto");
    assert_eq!(v["tools"].as_array().unwrap().len(), 5);
    let creates = response_creates(&fx);
    assert_eq!(creates.len(), 1);
    assert_eq!(
        creates[0].as_ref().unwrap().instructions.as_deref(),
        Some("Greet the caller by saying exactly: \"Thanks for calling!\"")
    );
}

#[test]
fn no_greeting_means_no_response_create() {
    let mut c = Call::new(agent_with(|_| {}));
    assert!(response_creates(&c.take()).is_empty());
}

#[test]
fn semantic_vad_is_passed_through() {
    let mut c = Call::new(agent_with(|a| {
        a.turn_detection = TurnDetectionConfig::SemanticVad {
            eagerness: Some("low".into()),
        }
    }));
    let fx = c.take();
    let ClientEvent::SessionUpdate { session, .. } = &realtime(&fx)[0] else {
        panic!()
    };
    let td = session
        .audio
        .as_ref()
        .unwrap()
        .input
        .as_ref()
        .unwrap()
        .turn_detection
        .clone();
    assert!(
        matches!(td, Some(TurnDetection::SemanticVad { eagerness: Some(e), .. }) if e == "low")
    );
}

#[test]
fn greeting_audio_is_held_until_start_and_greeting_latency_recorded() {
    let mut c = Call::new(agent_with(|a| a.greeting = Some("Hi!".into())));
    c.take();
    c.created(10, "r1");
    c.delta(20, "r1", "i1", 800);
    c.delta(30, "r1", "i1", 1000);
    let fx = c.take();
    assert!(outs(&fx).is_empty(), "nothing goes out before start");
    let turns: Vec<_> = events(&fx)
        .into_iter()
        .filter_map(|b| match b {
            Body::Turn(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].kind, "greeting");
    assert_eq!(turns[0].response_id, "r1");
    // 50 ms from the offer to the worker, then 20 ms to the first audio.
    assert_eq!(turns[0].latency_ms, 70);
    c.start(100);
    let fx = c.take();
    let audio: usize = outs(&fx)
        .iter()
        .map(|f| match f {
            outbound_frame::Frame::Audio(a) => a.payload.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(audio, 1800);
    // 800 -> one chunk, 1000 -> 800 + 200: a mark after each chunk.
    assert_eq!(marks(&fx).len(), 3);
}

#[test]
fn prestart_buffer_is_bounded() {
    let mut c = Call::new(agent_with(|_| {}));
    c.created(0, "r1");
    for _ in 0..40 {
        c.delta(0, "r1", "i1", 8000); // 1 s each
    }
    c.take();
    c.start(10);
    let audio: usize = outs(&c.take())
        .iter()
        .map(|f| match f {
            outbound_frame::Frame::Audio(a) => a.payload.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(audio, PRESTART_BUFFER_BYTES);
}

#[test]
fn inbound_audio_is_forwarded_untouched() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.take();
    c.inbound(
        20,
        inbound_frame::Frame::Audio(InboundAudio {
            replayed: false,
            payload: Bytes::from_static(&[0xff, 0x00, 0x7f]),
            timestamp_ms: 20,
            chunk: 1,
        }),
    );
    // The writer base64-encodes it into the append (see `realtime::append_json`).
    assert_eq!(
        c.take(),
        vec![Effect::Audio(Bytes::from_static(&[0xff, 0x00, 0x7f]))]
    );
}

// ------------------------------------------------------------------------------- barge-in

#[test]
fn barge_in_truncates_to_what_was_heard_and_clears() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    for _ in 0..5 {
        c.delta(10, "r1", "i1", 800);
    }
    let fx = c.take();
    let m = marks(&fx);
    assert_eq!(m.len(), 5);
    c.echo(110, &m[0]);
    c.echo(210, &m[1]);
    c.speech_started(250, "u1");
    let fx = c.take();
    let truncates: Vec<_> = realtime(&fx)
        .into_iter()
        .filter(|e| matches!(e, ClientEvent::ConversationItemTruncate { .. }))
        .collect();
    assert_eq!(
        truncates,
        vec![ClientEvent::ConversationItemTruncate {
            event_id: None,
            item_id: "i1".into(),
            content_index: 0,
            audio_end_ms: 200
        }]
    );
    assert!(outs(&fx).contains(&outbound_frame::Frame::Clear(switchboard_proto::Clear {})));
    // Echoes Twilio sends after the clear are ignored; late audio of the item is dropped.
    c.echo(260, &m[3]);
    c.delta(270, "r1", "i1", 800);
    assert!(outs(&c.take()).is_empty());
    // The server cancels the response: the transcript records the interruption.
    c.transcript_done(280, "r1", "i1", "Let me tell you about our");
    c.done(290, "r1", "cancelled", json!([]));
    let t = transcripts(&c.take());
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].role, Role::Assistant as i32);
    assert!(t[0].interrupted);
    assert_eq!(t[0].heard_ms, 200);
    assert_eq!(t[0].text, "Let me tell you about our");
    assert_eq!(t[0].offset_ms, 10);
}

#[test]
fn barge_in_after_response_done_still_records_the_interruption() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.say(10, "r1", "i1", 3);
    let fx = c.take();
    assert!(
        transcripts(&fx).is_empty(),
        "fate unknown while audio is queued"
    );
    let m = marks(&fx);
    c.echo(110, &m[0]);
    c.speech_started(150, "u1");
    let fx = c.take();
    assert_eq!(
        realtime(&fx)
            .iter()
            .filter(|e| matches!(
                e,
                ClientEvent::ConversationItemTruncate {
                    audio_end_ms: 100,
                    ..
                }
            ))
            .count(),
        1
    );
    let t = transcripts(&fx);
    assert_eq!(t.len(), 1);
    assert!(t[0].interrupted);
    assert_eq!(t[0].heard_ms, 100);
}

#[test]
fn no_truncate_or_clear_when_everything_was_heard() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.say(10, "r1", "i1", 2);
    let m = marks(&c.take());
    c.echo(100, &m[0]);
    c.echo(200, &m[1]);
    let t = transcripts(&c.take());
    assert_eq!(t.len(), 1);
    assert!(!t[0].interrupted);
    assert_eq!(t[0].heard_ms, 200);
    assert_eq!(t[0].text, "Hello there.");
    c.speech_started(300, "u1");
    let fx = c.take();
    assert!(realtime(&fx).is_empty(), "no spurious truncate: {fx:?}");
    assert!(outs(&fx).is_empty(), "no clear: {fx:?}");
}

#[test]
fn barge_in_at_0_ms_heard_deletes_the_item_instead_of_truncating() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.delta(10, "r1", "i1", 800);
    c.take();
    c.speech_started(20, "u1");
    let fx = c.take();
    // The server refuses a truncate to 0 ms; the model must not keep words nobody heard.
    assert_eq!(
        realtime(&fx),
        vec![ClientEvent::ConversationItemDelete {
            event_id: None,
            item_id: "i1".into()
        }]
    );
    assert_eq!(
        outs(&fx),
        vec![outbound_frame::Frame::Clear(switchboard_proto::Clear {})]
    );
    c.done(30, "r1", "cancelled", json!([]));
    let t = transcripts(&c.take());
    assert_eq!(t.len(), 1);
    assert!(t[0].interrupted);
    assert_eq!(t[0].heard_ms, 0);
}

#[test]
fn barge_in_deletes_items_queued_behind_the_one_playing() {
    let mut c = Call::new(agent_with(|a| a.filler_after = None));
    c.start(0);
    // A first answer, then a second response (after a tool round) queued behind it at Twilio.
    c.created(10, "r1");
    for _ in 0..3 {
        c.delta(10, "r1", "i1", 800);
    }
    c.done(20, "r1", "completed", json!([]));
    c.vad_created(30, "r2");
    for _ in 0..3 {
        c.delta(30, "r2", "i2", 800);
    }
    let m = marks(&c.take());
    c.echo(110, &m[0]);
    c.speech_started(150, "u1");
    let rt = realtime(&c.take());
    assert_eq!(
        rt,
        vec![
            ClientEvent::ConversationItemTruncate {
                event_id: None,
                item_id: "i1".into(),
                content_index: 0,
                audio_end_ms: 100
            },
            ClientEvent::ConversationItemDelete {
                event_id: None,
                item_id: "i2".into()
            },
        ]
    );
}

// ------------------------------------------------------------------------ response arbitration

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

#[test]
fn vad_response_created_before_the_refusal_does_not_take_the_greeting() {
    for echo_id in [true, false] {
        let mut c = Call::new(agent_with(|a| a.greeting = Some("Hello, Acme.".into())));
        let first = c.take();
        let id = pending_event_id(&first);
        c.start(0);
        // The caller spoke at once: server VAD's response starts before our refusal arrives.
        c.vad_created(10, "resp_vad");
        c.server(11, busy_error(if echo_id { id.as_deref() } else { None }));
        assert!(
            response_creates(&c.take()).is_empty(),
            "not while VAD's runs"
        );
        c.delta(20, "resp_vad", "i_vad", 800);
        c.done(30, "resp_vad", "completed", json!([]));
        // Asked again; the VAD response was not taken for the greeting.
        let again = response_creates(&c.take());
        assert_eq!(again.len(), 1, "echo_id={echo_id}");
        assert!(
            again[0]
                .as_ref()
                .and_then(|p| p.instructions.as_deref())
                .is_some_and(|i| i.contains("Hello, Acme.")),
            "{again:?}"
        );
        c.created(40, "resp_greeting");
        c.delta(40, "resp_greeting", "i_g", 800);
        let turns: Vec<_> = events(&c.take())
            .into_iter()
            .filter_map(|b| match b {
                Body::Turn(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(turns.len(), 1);
        assert_eq!(turns[0].kind, "greeting");
        assert_eq!(turns[0].response_id, "resp_greeting");
    }
}

#[test]
fn refusal_before_the_vad_response_created_retries_after_it() {
    let mut c = greeting_call();
    c.start(0);
    c.server(10, busy_error(None));
    assert!(
        response_creates(&c.take()).is_empty(),
        "waits for the running response"
    );
    c.vad_created(11, "resp_vad");
    c.done(30, "resp_vad", "completed", json!([]));
    assert_eq!(response_creates(&c.take()).len(), 1, "the greeting again");
}

#[test]
fn a_refused_goodbye_is_said_after_the_vad_response() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.server(
        20,
        json!({"type":"response.function_call_arguments.done","response_id":"r1","item_id":"f1",
               "output_index":0,"call_id":"c1","name":"end_call","arguments":"{}"}),
    );
    c.done(30, "r1", "completed", json!([]));
    assert_eq!(response_creates(&c.take()).len(), 1, "the goodbye request");
    c.vad_created(40, "resp_vad");
    c.server(41, busy_error(None));
    c.delta(50, "resp_vad", "i_vad", 800);
    c.done(60, "resp_vad", "completed", json!([]));
    assert_eq!(response_creates(&c.take()).len(), 1, "asked again");
    assert!(
        c.m.ended().is_none(),
        "the VAD answer was not taken for the goodbye"
    );
    c.created(70, "resp_bye");
    c.delta(70, "resp_bye", "i_bye", 800);
    c.done(80, "resp_bye", "completed", json!([]));
    let m = marks(&c.take());
    for name in &m {
        c.echo(200, name);
    }
    c.take();
    assert_eq!(c.m.ended(), Some(EndReason::EndCall));
}

#[test]
fn a_refused_keypress_answer_is_retried() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.inbound(10, inbound_frame::Frame::Dtmf(Dtmf { digit: "5".into() }));
    assert_eq!(response_creates(&c.take()).len(), 1);
    c.vad_created(20, "resp_vad");
    c.server(21, busy_error(None));
    c.done(30, "resp_vad", "completed", json!([]));
    assert_eq!(
        response_creates(&c.take()).len(),
        1,
        "the keypress is answered"
    );
}

// ------------------------------------------------------------------------ session confirmation

#[test]
fn the_agents_model_settings_reach_the_session() {
    use switchboard_realtime::session::{Transcription, Truncation};
    let c = Call::new(agent_with(|a| {
        a.noise_reduction = Some("near_field".into());
        a.transcription = Some(Transcription {
            model: "gpt-4o-transcribe".into(),
            language: Some("en".into()),
            prompt: Some("dental".into()),
        });
        a.truncation = Some(Truncation::retention_ratio(0.8, Some(8000)));
        a.turn_detection = TurnDetectionConfig::SemanticVad {
            eagerness: Some("low".into()),
        };
    }));
    let ClientEvent::SessionUpdate { session, .. } = &realtime(&c.out)[0] else {
        panic!()
    };
    let v = serde_json::to_value(session).unwrap();
    assert_eq!(
        v["audio"]["input"]["noise_reduction"],
        json!({"type":"near_field"})
    );
    assert_eq!(
        v["audio"]["input"]["transcription"],
        json!({"model":"gpt-4o-transcribe","language":"en","prompt":"dental"})
    );
    assert_eq!(
        v["audio"]["input"]["turn_detection"],
        json!({"type":"semantic_vad","eagerness":"low","create_response":true,"interrupt_response":true})
    );
    assert_eq!(
        v["truncation"],
        json!({"type":"retention_ratio","retention_ratio":0.8,"token_limits":{"post_instructions":8000}})
    );
    // Transcription off: no transcription in the session at all.
    let off = Call::new(agent_with(|a| a.transcription = None));
    let ClientEvent::SessionUpdate { session, .. } = &realtime(&off.out)[0] else {
        panic!()
    };
    assert_eq!(
        session
            .audio
            .as_ref()
            .unwrap()
            .input
            .as_ref()
            .unwrap()
            .transcription,
        None
    );
}

#[test]
fn session_update_carries_an_event_id() {
    let c = Call::new(agent_with(|_| {}));
    let ClientEvent::SessionUpdate { event_id, .. } = &realtime(&c.out)[0] else {
        panic!()
    };
    // `session.updated` does not echo it, but a refusal does.
    assert_eq!(event_id.as_deref(), Some("sb_session_1"));
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

#[test]
fn a_refused_session_update_ends_the_call_with_model_config_rejected() {
    for echo_id in [true, false] {
        let (mut m, t0) = unconfirmed_call();
        let error = json!({"type":"error","event_id":"event_1","error":{
            "type":"invalid_request_error","code":"invalid_value",
            "message":"Invalid value: 'nova'.","param":"session.audio.output.voice",
            "event_id": if echo_id { Some("sb_session_1") } else { None }}});
        let ev = ServerEvent::parse(&error.to_string()).unwrap();
        m.on_realtime(RealtimeEvent::Server(Box::new(ev)), t0);
        let fx = m.take_effects();
        assert_eq!(m.ended(), Some(EndReason::ModelConfigRejected));
        assert_eq!(
            ended(&fx).unwrap().reason,
            EndReason::ModelConfigRejected.as_str()
        );
        assert!(
            outs(&fx)
                .iter()
                .any(|f| matches!(f, outbound_frame::Frame::Hangup(_)))
        );
    }
}

#[test]
fn a_session_left_at_pcm_ends_the_call_and_its_audio_is_never_played() {
    let (mut m, t0) = unconfirmed_call();
    m.on_inbound(
        inbound_frame::Frame::Start(StreamStart {
            stream_sid: "MZ1".into(),
            ..Default::default()
        }),
        t0,
    );
    m.take_effects();
    // Audio before the session is confirmed is not played.
    m.on_realtime(
        RealtimeEvent::AudioDelta {
            response_id: "r0".into(),
            item_id: "i0".into(),
            audio: Bytes::from(vec![0u8; 800]),
        },
        t0,
    );
    assert!(outs(&m.take_effects()).is_empty());
    let mut session = m.full_session();
    session
        .audio
        .as_mut()
        .unwrap()
        .output
        .as_mut()
        .unwrap()
        .format = Some(switchboard_realtime::session::AudioFormat::pcm());
    let updated = json!({"type":"session.updated","event_id":"e","session":session});
    let ev = ServerEvent::parse(&updated.to_string()).unwrap();
    m.on_realtime(RealtimeEvent::Server(Box::new(ev)), t0);
    assert_eq!(m.ended(), Some(EndReason::ModelConfigRejected));
}

// ------------------------------------------------------------------------ transcripts, turns

#[test]
fn user_transcript_carries_the_speech_start_offset_and_turn_latency_is_measured() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.speech_started(1000, "u1");
    c.speech_stopped(2500, "u1");
    c.server(
        2600,
        json!({"type":"conversation.item.input_audio_transcription.completed","item_id":"u1",
               "content_index":0,"transcript":"Hi, this is Maria."}),
    );
    c.created(2700, "r1");
    c.delta(2900, "r1", "i1", 800);
    let fx = c.take();
    let t = transcripts(&fx);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].role, Role::User as i32);
    assert_eq!(t[0].text, "Hi, this is Maria.");
    assert_eq!(t[0].item_id, "u1");
    assert_eq!(t[0].offset_ms, 1000);
    let turn = events(&fx)
        .into_iter()
        .find_map(|b| match b {
            Body::Turn(t) => Some(t),
            _ => None,
        })
        .unwrap();
    assert_eq!(turn.kind, "response");
    assert_eq!(turn.latency_ms, 400);
    assert_eq!(turn.response_id, "r1");
}

// ------------------------------------------------------------------------------------ tools

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

#[test]
fn tool_round_sends_every_output_then_exactly_one_response_create() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    args_done(
        &mut c,
        20,
        "r1",
        "c1",
        "lookup_customer",
        r#"{"phone":"+1"}"#,
    );
    c.done(
        30,
        "r1",
        "completed",
        json!([
            call_item("c1", "lookup_customer", r#"{"phone":"+1"}"#),
            call_item("c2", "book", "{}")
        ]),
    );
    let fx = c.take();
    let calls: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::CallTool(call) => Some((
                call.call_id.clone(),
                call.name.clone(),
                Duration::from_millis(u64::from(call.timeout_ms)),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            (
                "c1".into(),
                "lookup_customer".into(),
                Duration::from_millis(8000)
            ),
            ("c2".into(), "book".into(), Duration::from_millis(8000))
        ],
        "each call dispatched once (deduped by call_id)"
    );
    // The request is whole: the tool service needs nothing else from the call.
    let Some(Effect::CallTool(call)) = fx.iter().find(|e| matches!(e, Effect::CallTool(_))) else {
        unreachable!()
    };
    assert_eq!(
        (
            call.call_sid.as_str(),
            call.agent_id.as_str(),
            call.caller.as_str()
        ),
        ("CA1", "desk", "+15550001234")
    );
    assert_eq!(call.arguments, r#"{"phone":"+1"}"#);
    assert!(response_creates(&fx).is_empty());
    tool_done(
        &mut c,
        40,
        "c2",
        "book",
        ToolReply::Output(r#"{"booked":true}"#.into()),
    );
    let fx = c.take();
    assert!(
        function_outputs(&fx).is_empty(),
        "waits for every call of the response"
    );
    assert_eq!(tool_events(&fx).len(), 1);
    tool_done(
        &mut c,
        50,
        "c1",
        "lookup_customer",
        ToolReply::Output(r#"{"name":"Maria"}"#.into()),
    );
    let fx = c.take();
    assert_eq!(
        function_outputs(&fx),
        vec![
            ("c1".into(), r#"{"name":"Maria"}"#.into()),
            ("c2".into(), r#"{"booked":true}"#.into())
        ]
    );
    assert_eq!(response_creates(&fx), vec![None]);
    // The response.create comes after the outputs.
    let rt = realtime(&fx);
    assert!(matches!(
        rt.last(),
        Some(ClientEvent::ResponseCreate { .. })
    ));
    let t = tool_events(&fx);
    assert_eq!(t[0].call_id, "c1");
    assert_eq!(t[0].latency_ms, 12);
    assert_eq!(
        t[0].result,
        Some(tool_invocation::Result::Output(
            r#"{"name":"Maria"}"#.into()
        ))
    );
}

#[test]
fn tool_outputs_wait_for_the_active_response() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", "lookup_customer", "{}")]),
    );
    // The caller speaks; server VAD starts another response before the tool answers.
    c.created(30, "r2");
    c.take();
    tool_done(
        &mut c,
        40,
        "c1",
        "lookup_customer",
        ToolReply::Output("{}".into()),
    );
    let fx = c.take();
    assert!(function_outputs(&fx).is_empty());
    assert!(response_creates(&fx).is_empty());
    c.done(50, "r2", "completed", json!([]));
    let fx = c.take();
    assert_eq!(function_outputs(&fx).len(), 1);
    assert_eq!(response_creates(&fx).len(), 1);
}

#[test]
fn unknown_tool_gets_an_error_output_at_once() {
    let mut c = Call::new(agent_with(|a| a.tools.retain(|t| t != "book")));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c9", "book", r#"{"x":1}"#)]),
    );
    let fx = c.take();
    assert!(!fx.iter().any(|e| matches!(e, Effect::CallTool(_))));
    let outputs = function_outputs(&fx);
    assert_eq!(outputs.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&outputs[0].1).unwrap();
    assert_eq!(v["error"]["code"], "unknown_tool");
    assert_eq!(response_creates(&fx).len(), 1);
    let t = tool_events(&fx);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].name, "book");
    assert_eq!(t[0].arguments, r#"{"x":1}"#);
    assert!(
        matches!(&t[0].result, Some(tool_invocation::Result::Error(e)) if e.code == "unknown_tool")
    );
}

#[test]
fn tool_errors_reach_the_model_as_structured_json() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", "lookup_customer", "{}")]),
    );
    c.take();
    tool_done(
        &mut c,
        30,
        "c1",
        "lookup_customer",
        ToolReply::error(ToolErrorCode::Unavailable, "No service is answering."),
    );
    let fx = c.take();
    let v: serde_json::Value = serde_json::from_str(&function_outputs(&fx)[0].1).unwrap();
    assert_eq!(v["error"]["code"], "unavailable");
    assert!(
        matches!(&tool_events(&fx)[0].result, Some(tool_invocation::Result::Error(e)) if e.code == "unavailable")
    );
}

#[test]
fn tool_result_outcome_and_set_outcome_record_outcomes() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([
            call_item("c1", "lookup_customer", "{}"),
            call_item(
                "c2",
                SET_OUTCOME,
                r#"{"outcome":"booked","detail":"Tue 3pm"}"#
            ),
            call_item("c3", SET_OUTCOME, r#"{"detail":"no outcome"}"#)
        ]),
    );
    let fx = c.take();
    let outcomes: Vec<_> = events(&fx)
        .into_iter()
        .filter_map(|b| match b {
            Body::Outcome(o) => Some(o),
            _ => None,
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![CallOutcome {
            redacted: Vec::new(),
            outcome: "booked".into(),
            detail: "Tue 3pm".into()
        }]
    );
    assert!(
        matches!(&tool_events(&fx)[1].result, Some(tool_invocation::Result::Error(e)) if e.code == "invalid_arguments")
    );
    c.m.on_tool_done(
        ToolDone {
            call_id: "c1".into(),
            name: "lookup_customer".into(),
            arguments: "{}".into(),
            reply: ToolReply::Output("{}".into()),
            outcome: Some("identified".into()),
            latency_ms: 1,
        },
        c.at(30),
    );
    let fx = c.take();
    assert!(
        events(&fx)
            .iter()
            .any(|b| matches!(b, Body::Outcome(o) if o.outcome == "identified"))
    );
    assert_eq!(function_outputs(&fx).len(), 3);
    assert_eq!(response_creates(&fx).len(), 1);
}

// --------------------------------------------------------------------------------- endings

#[test]
fn end_call_says_goodbye_and_hangs_up_once_it_was_heard() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", END_CALL, "{}")]),
    );
    let fx = c.take();
    assert_eq!(function_outputs(&fx).len(), 1);
    assert_eq!(response_creates(&fx).len(), 1, "the goodbye");
    c.say(30, "r2", "i2", 2);
    let fx = c.take();
    assert!(c.m.ended().is_none(), "goodbye still playing");
    let m = marks(&fx);
    c.echo(130, &m[0]);
    assert!(c.m.ended().is_none());
    c.echo(230, &m[1]);
    let fx = c.take();
    let o = outs(&fx);
    assert!(
        matches!(&o[..], [outbound_frame::Frame::Hangup(h)] if h.reason == "end_call"),
        "{o:?}"
    );
    let e = ended(&fx).unwrap();
    assert_eq!(e.reason, "end_call");
    assert_eq!(c.m.ended(), Some(EndReason::EndCall));
    // The goodbye's transcript is recorded before `ended`.
    let bodies = events(&fx);
    assert!(matches!(bodies.last(), Some(Body::Ended(_))));
    assert!(fx.contains(&Effect::CloseRealtime));
}

#[test]
fn end_call_with_a_silent_goodbye_hangs_up_at_response_done() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", END_CALL, "{}")]),
    );
    c.created(30, "r2");
    c.done(40, "r2", "completed", json!([]));
    assert_eq!(c.m.ended(), Some(EndReason::EndCall));
}

#[test]
fn end_call_hangs_up_after_the_deadline_if_marks_never_come_back() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", END_CALL, "{}")]),
    );
    c.say(30, "r2", "i2", 2);
    let deadline = c.m.next_deadline().unwrap();
    assert!(deadline <= c.at(30 + 200 + 5000));
    c.m.on_timer(deadline);
    assert_eq!(c.m.ended(), Some(EndReason::EndCall));
}

#[test]
fn transfer_call_transfers_after_the_goodbye() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", TRANSFER_CALL, "{}")]),
    );
    let fx = c.take();
    assert!(
        events(&fx)
            .iter()
            .any(|b| matches!(b, Body::Outcome(o) if o.outcome == "transferred"))
    );
    c.created(30, "r2");
    c.done(40, "r2", "completed", json!([]));
    let fx = c.take();
    assert!(
        outs(&fx)
            .iter()
            .any(|f| matches!(f, outbound_frame::Frame::Transfer(t) if t.to == "+15550002222"))
    );
    assert_eq!(ended(&fx).unwrap().reason, "transferred");
}

#[test]
fn each_stop_reason_of_the_gateway_is_its_own_end_reason() {
    for (stop, end) in [
        ("stop", "caller_hung_up"),
        ("closed", "stream_lost"),
        ("error", "stream_error"),
        ("worker_silent", "worker_silent"),
        ("drain_deadline", "gateway_shutdown"),
        ("something_new", "stream_lost"),
    ] {
        let mut c = Call::new(agent_with(|_| {}));
        c.start(0);
        c.take();
        c.inbound(
            100,
            inbound_frame::Frame::Stop(StreamStop {
                reason: stop.into(),
            }),
        );
        assert_eq!(ended(&c.take()).unwrap().reason, end, "stop reason {stop}");
    }
}

#[test]
fn what_is_counted_comes_out_as_observations() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.say(10, "r1", "i1", 3);
    c.take();
    c.m.drain_observations().for_each(drop);
    c.speech_started(100, "u1");
    closed(&mut c, 200);
    c.inbound(
        300,
        inbound_frame::Frame::Stop(StreamStop {
            reason: "stop".into(),
        }),
    );
    let seen: Vec<Observation> = c.m.drain_observations().collect();
    assert_eq!(
        seen,
        vec![
            Observation::BargeIn,
            Observation::RealtimeReconnect,
            Observation::CallEnded(EndReason::CallerHungUp),
        ]
    );
    assert_eq!(c.m.drain_observations().count(), 0, "drained");
}

#[test]
fn stop_ends_the_call_with_summed_usage() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.say(10, "r1", "i1", 1);
    c.say(20, "r2", "i2", 1);
    c.take();
    c.inbound(
        500,
        inbound_frame::Frame::Stop(StreamStop {
            reason: "stop".into(),
        }),
    );
    let fx = c.take();
    let e = ended(&fx).unwrap();
    assert_eq!(e.reason, "caller_hung_up");
    assert_eq!(e.duration_ms, 500);
    let u = e.usage.unwrap();
    assert_eq!(
        (
            u.input_tokens,
            u.output_tokens,
            u.input_audio_tokens,
            u.input_text_tokens
        ),
        (40, 20, 30, 10)
    );
    assert_eq!(
        (u.output_audio_tokens, u.output_text_tokens, u.cached_tokens),
        (14, 6, 8)
    );
    assert!(fx.contains(&Effect::CloseRealtime));
    assert!(outs(&fx).is_empty(), "no hangup frame: the caller is gone");
    // Unsettled assistant items are recorded before `ended`.
    let t = transcripts(&fx);
    assert_eq!(t.len(), 2);
    assert!(matches!(events(&fx).last(), Some(Body::Ended(_))));
    // Nothing happens after the end.
    c.speech_started(600, "u1");
    assert!(c.take().is_empty());
}

#[test]
fn error_classification() {
    let e = |code: &str, kind: &str| ErrorDetail {
        kind: kind.into(),
        code: Some(code.into()),
        ..Default::default()
    };
    for fatal in [
        "session_expired",
        "beta_api_shape_disabled",
        "invalid_api_key",
    ] {
        assert_eq!(
            classify_error(&e(fatal, "invalid_request_error")),
            ErrorClass::Fatal,
            "{fatal}"
        );
    }
    assert_eq!(
        classify_error(&e("whatever", "authentication_error")),
        ErrorClass::Fatal
    );
    for ok in [
        "conversation_already_has_active_response",
        "response_cancel_not_active",
        "item_truncate_invalid_item_id",
        "input_audio_buffer_commit_empty",
        "rate_limit_exceeded",
        "something_new",
    ] {
        assert_eq!(
            classify_error(&e(ok, "invalid_request_error")),
            ErrorClass::Recoverable,
            "{ok}"
        );
    }
    assert_eq!(
        classify_error(&ErrorDetail::default()),
        ErrorClass::Recoverable
    );
}

#[test]
fn recoverable_error_keeps_the_call_and_frees_the_pending_request() {
    let mut c = Call::new(agent_with(|a| a.greeting = Some("Hi".into())));
    c.start(0);
    c.take();
    // The greeting's response.create is answered by an error only.
    c.server(
        10,
        json!({"type":"error","error":{"type":"invalid_request_error","code":"rate_limit_exceeded",
               "message":"Rate limit reached","param":null,"event_id":null}}),
    );
    assert!(c.m.ended().is_none());
    c.take();
    // A later request is sent at once, not stuck behind the failed one.
    c.inbound(20, inbound_frame::Frame::Dtmf(Dtmf { digit: "1".into() }));
    assert_eq!(response_creates(&c.take()).len(), 1);
}

#[test]
fn active_response_error_retries_after_that_response() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.inbound(10, inbound_frame::Frame::Dtmf(Dtmf { digit: "5".into() }));
    assert_eq!(response_creates(&c.take()).len(), 1);
    c.server(
        11,
        json!({"type":"error","error":{"type":"invalid_request_error",
               "code":"conversation_already_has_active_response","message":"busy"}}),
    );
    c.created(12, "r_vad");
    assert!(response_creates(&c.take()).is_empty());
    c.done(20, "r_vad", "completed", json!([]));
    assert_eq!(response_creates(&c.take()).len(), 1);
}

#[test]
fn greeting_refused_while_busy_is_retried_with_its_instructions() {
    let mut c = Call::new(agent_with(|a| a.greeting = Some("Hi".into())));
    c.take();
    c.server(
        5,
        json!({"type":"error","error":{"type":"invalid_request_error",
               "code":"conversation_already_has_active_response","message":"busy","event_id":"sb_resp_1"}}),
    );
    c.created(6, "r_vad");
    c.done(7, "r_vad", "completed", json!([]));
    let creates = response_creates(&c.take());
    assert_eq!(creates.len(), 1);
    assert!(
        creates[0]
            .as_ref()
            .unwrap()
            .instructions
            .as_deref()
            .unwrap()
            .contains("\"Hi\"")
    );
}

#[test]
fn errors_of_other_client_events_leave_the_pending_request_alone() {
    let mut c = Call::new(agent_with(|a| a.greeting = Some("Hi".into())));
    c.take();
    c.server(
        5,
        json!({"type":"error","error":{"type":"invalid_request_error",
               "code":"item_truncate_invalid_item_id","message":"no such item","event_id":null}}),
    );
    // Still waiting for the greeting: a DTMF request waits behind it.
    c.inbound(6, inbound_frame::Frame::Dtmf(Dtmf { digit: "1".into() }));
    assert!(response_creates(&c.take()).is_empty());
    c.created(7, "r1");
    c.delta(8, "r1", "i1", 800);
    assert!(
        events(&c.take())
            .iter()
            .any(|b| matches!(b, Body::Turn(t) if t.kind == "greeting"))
    );
}

#[test]
fn fatal_error_hangs_up_with_model_error() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.take();
    c.server(
        10,
        json!({"type":"error","error":{"type":"invalid_request_error","code":"invalid_api_key",
               "message":"Incorrect API key provided."}}),
    );
    let fx = c.take();
    assert!(matches!(&outs(&fx)[..], [outbound_frame::Frame::Hangup(h)] if h.reason == "error"));
    assert_eq!(ended(&fx).unwrap().reason, "model_error");
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

#[test]
fn lost_socket_reconnects_replays_and_gives_up_after_three_losses_a_minute() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.take();

    // First loss: a new session at once, configured like the first, then the replay in order.
    closed(&mut c, 5);
    let fx = c.take();
    assert_eq!(reconnects(&fx), 1);
    assert!(ended(&fx).is_none());
    let replay = vec![Item::assistant_text("Hello."), Item::user_text("Hi.")];
    c.m.resume_session(replay.clone());
    let rt = realtime(&c.take());
    assert!(
        matches!(&rt[0], ClientEvent::SessionUpdate { session, .. }
            if session.instructions.as_deref() == Some("You are the front desk.")),
        "{rt:?}"
    );
    let items: Vec<Item> = rt[1..]
        .iter()
        .filter_map(|e| match e {
            ClientEvent::ConversationItemCreate { item, .. } => Some(item.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(items, replay);
    assert_eq!(rt.len(), 3, "nothing was pending, so no response.create");

    // Second loss soon after: a short back-off, during which caller audio is dropped.
    closed(&mut c, 10);
    let fx = c.take();
    assert_eq!(reconnects(&fx), 0);
    assert!(c.m.reconnecting());
    assert_eq!(c.m.next_deadline(), Some(c.at(260)));
    audio(&mut c, 100);
    assert!(
        !c.take().iter().any(|e| matches!(e, Effect::Audio(_))),
        "no audio while there is no session"
    );
    c.m.on_timer(c.at(260));
    assert_eq!(reconnects(&c.take()), 1);
    c.m.resume_session(Vec::new());
    c.take();
    audio(&mut c, 270);
    assert!(c.take().iter().any(|e| matches!(e, Effect::Audio(_))));

    // Third loss: a longer back-off.
    closed(&mut c, 300);
    assert_eq!(c.m.next_deadline(), Some(c.at(800)));
    c.m.on_timer(c.at(800));
    assert_eq!(reconnects(&c.take()), 1);
    c.m.resume_session(Vec::new());
    c.take();

    // Fourth loss within a minute: the call ends.
    closed(&mut c, 1000);
    let fx = c.take();
    assert_eq!(reconnects(&fx), 0);
    assert!(matches!(&outs(&fx)[..], [outbound_frame::Frame::Hangup(h)] if h.reason == "error"));
    assert_eq!(ended(&fx).unwrap().reason, "model_error");
}

#[test]
fn attempts_older_than_a_minute_do_not_count() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    for (i, at) in [5u64, 70_000, 140_000, 210_000].into_iter().enumerate() {
        closed(&mut c, at);
        assert_eq!(reconnects(&c.take()), 1, "loss {i} reconnects at once");
        c.m.resume_session(Vec::new());
        c.take();
    }
    assert!(c.m.ended().is_none());
}

#[test]
fn session_expired_reconnects_and_asks_again_for_the_greeting() {
    let mut c = Call::new(agent_with(|a| {
        a.greeting = Some("Acme Dental, hello!".into())
    }));
    let first = response_creates(&c.take());
    assert_eq!(first.len(), 1);
    c.server(
        10,
        json!({"type":"error","error":{"type":"invalid_request_error","code":"session_expired",
               "message":"Your session hit the maximum duration of 60 minutes."}}),
    );
    let fx = c.take();
    assert_eq!(reconnects(&fx), 1);
    assert!(ended(&fx).is_none());
    c.m.resume_session(Vec::new());
    let fx = c.take();
    let rt = realtime(&fx);
    assert!(matches!(rt[0], ClientEvent::SessionUpdate { .. }));
    assert_eq!(response_creates(&fx), first, "the same greeting, once");
}

#[test]
fn lost_session_cuts_playback_records_what_was_heard_then_reconnects() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.delta(20, "r1", "i1", 1600);
    let fx = c.take();
    let m = marks(&fx);
    assert_eq!(m.len(), 2);
    c.echo(120, &m[0]);
    c.take();
    closed(&mut c, 130);
    let fx = c.take();
    assert!(
        outs(&fx)
            .iter()
            .any(|f| matches!(f, outbound_frame::Frame::Clear(_)))
    );
    let t = transcripts(&fx);
    assert_eq!(t.len(), 1);
    assert!(t[0].interrupted);
    assert_eq!(t[0].heard_ms, 100);
    let transcript_at = fx
        .iter()
        .position(|e| matches!(e, Effect::Event(Body::Transcript(_))))
        .unwrap();
    let reconnect_at = fx
        .iter()
        .position(|e| matches!(e, Effect::Reconnect))
        .unwrap();
    assert!(
        transcript_at < reconnect_at,
        "recorded before the replay is built"
    );
    // The interrupted response is asked for again in the new session.
    c.m.resume_session(Vec::new());
    assert_eq!(response_creates(&c.take()), vec![None]);
    // Late echoes of the cleared audio are ignored.
    c.echo(200, &m[1]);
    assert!(transcripts(&c.take()).is_empty());
}

#[test]
fn a_tool_running_across_a_reconnect_is_recreated_in_the_new_session() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([
            call_item("c1", "lookup_customer", r#"{"phone":"+1"}"#),
            call_item("c2", "book", "{}")
        ]),
    );
    tool_done(&mut c, 30, "c2", "book", ToolReply::Output("{}".into()));
    c.take();
    closed(&mut c, 40);
    assert_eq!(reconnects(&c.take()), 1);
    // c2 finished before the loss: its pair is part of the replay.
    c.m.resume_session(vec![
        crate::replay::function_call("c2", "book", "{}"),
        Item::function_output("c2", "{}"),
    ]);
    let fx = c.take();
    assert!(response_creates(&fx).is_empty(), "c1 is still running");
    tool_done(
        &mut c,
        50,
        "c1",
        "lookup_customer",
        ToolReply::Output(r#"{"name":"Maria"}"#.into()),
    );
    let rt = realtime(&c.take());
    assert_eq!(rt.len(), 3, "{rt:?}");
    assert!(matches!(&rt[0], ClientEvent::ConversationItemCreate {
        item: Item::FunctionCall { call_id, name, arguments, .. }, ..
    } if call_id == "c1" && name == "lookup_customer" && arguments == r#"{"phone":"+1"}"#));
    assert!(matches!(&rt[1], ClientEvent::ConversationItemCreate {
        item: Item::FunctionCallOutput { call_id, .. }, ..
    } if call_id == "c1"));
    assert!(matches!(rt[2], ClientEvent::ResponseCreate { .. }));
}

#[test]
fn invalid_dtmf_is_ignored() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.take();
    for digit in ["", "12", "x", "\"; drop"] {
        c.inbound(
            10,
            inbound_frame::Frame::Dtmf(Dtmf {
                digit: digit.into(),
            }),
        );
    }
    assert!(c.take().is_empty());
}

#[test]
fn dtmf_becomes_a_user_item_and_waits_for_the_active_response() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(5, "r1");
    c.take();
    c.inbound(10, inbound_frame::Frame::Dtmf(Dtmf { digit: "3".into() }));
    let fx = c.take();
    assert!(realtime(&fx).iter().any(|e| matches!(e,
        ClientEvent::ConversationItemCreate { item, .. } if item.text() == "The caller pressed 3 on the keypad.")));
    assert!(response_creates(&fx).is_empty());
    c.done(20, "r1", "completed", json!([]));
    assert_eq!(response_creates(&c.take()).len(), 1);
}

// ----------------------------------------------------------------------------------- timers

#[test]
fn idle_caller_is_prompted_once_then_the_call_ends() {
    let mut c = Call::new(agent_with(|a| {
        a.idle_timeout = Some(Duration::from_secs(10))
    }));
    assert!(
        c.m.next_deadline().unwrap() >= c.at(29_000),
        "only the start timer before start"
    );
    c.start(0);
    c.take();
    // Caller speech resets the timer.
    c.speech_started(5_000, "u1");
    c.speech_stopped(6_000, "u1");
    c.m.on_timer(c.at(10_000));
    assert!(response_creates(&c.take()).is_empty());
    assert_eq!(c.m.next_deadline(), Some(c.at(16_000)));
    c.m.on_timer(c.at(16_000));
    let creates = response_creates(&c.take());
    assert_eq!(creates.len(), 1);
    assert!(
        creates[0]
            .as_ref()
            .unwrap()
            .instructions
            .as_deref()
            .unwrap()
            .contains("\"Are you still there?\"")
    );
    c.created(16_100, "r1");
    c.done(16_200, "r1", "completed", json!([]));
    c.take();
    // The quiet period restarts when the prompt has been said (its response.done at 16.2 s).
    c.m.on_timer(c.m.next_deadline().unwrap());
    assert!(response_creates(&c.take()).is_empty());
    assert_eq!(c.m.next_deadline(), Some(c.at(26_200)));
    c.m.on_timer(c.at(26_200));
    let creates = response_creates(&c.take());
    assert_eq!(creates.len(), 1, "goodbye");
    assert!(
        creates[0]
            .as_ref()
            .unwrap()
            .instructions
            .as_deref()
            .unwrap()
            .starts_with("Say exactly: \"")
    );
    c.created(26_300, "r2");
    c.done(26_400, "r2", "completed", json!([]));
    let fx = c.take();
    assert!(matches!(&outs(&fx)[..], [outbound_frame::Frame::Hangup(h)] if h.reason == "idle"));
    assert_eq!(ended(&fx).unwrap().reason, "idle");
}

#[test]
fn idle_timer_waits_while_a_lost_session_is_replaced() {
    let mut c = Call::new(agent_with(|a| {
        a.idle_timeout = Some(Duration::from_secs(10))
    }));
    c.start(0);
    c.take();
    // Two losses just before the caller has been quiet for 10 s: the second waits 250 ms.
    closed(&mut c, 9_800);
    c.m.resume_session(Vec::new());
    closed(&mut c, 9_900);
    c.take();
    assert!(c.m.reconnecting());
    c.m.on_timer(c.at(10_000));
    assert!(
        response_creates(&c.take()).is_empty(),
        "no prompt while there is no session"
    );
    c.m.on_timer(c.at(10_150));
    assert_eq!(reconnects(&c.take()), 1);
    c.m.resume_session(Vec::new());
    assert!(
        response_creates(&c.take()).is_empty(),
        "nothing was queued for the new session"
    );
    assert_eq!(c.m.next_deadline(), Some(c.at(11_000)));
    c.m.on_timer(c.at(11_000));
    assert_eq!(response_creates(&c.take()).len(), 1, "the prompt, now");
}

#[test]
fn max_duration_says_goodbye_then_hangs_up() {
    let mut c = Call::new(agent_with(|a| a.max_call = Some(Duration::from_secs(60))));
    c.start(0);
    c.take();
    assert_eq!(c.m.next_deadline(), Some(c.at(60_000)));
    c.m.on_timer(c.at(60_000));
    assert_eq!(response_creates(&c.take()).len(), 1);
    c.say(60_100, "r1", "i1", 1);
    let m = marks(&c.take());
    c.echo(60_300, &m[0]);
    assert_eq!(ended(&c.take()).unwrap().reason, "max_duration");
}

#[test]
fn stream_that_never_starts_ends_the_call() {
    let mut c = Call::new(agent_with(|_| {}));
    c.take();
    assert_eq!(c.m.next_deadline(), Some(c.at(30_000)));
    c.m.on_timer(c.at(30_000));
    assert_eq!(ended(&c.take()).unwrap().reason, "stream_lost");
}

#[test]
fn shutdown_hangs_up_with_worker_shutdown() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.take();
    c.m.shutdown(c.at(100));
    let fx = c.take();
    assert!(
        matches!(&outs(&fx)[..], [outbound_frame::Frame::Hangup(h)] if h.reason == "worker_shutdown")
    );
    assert_eq!(ended(&fx).unwrap().reason, "worker_shutdown");
    assert_eq!(c.m.next_deadline(), None);
}

// ------------------------------------------------------------------------------------- filler

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

#[test]
fn a_slow_tool_gets_one_filler_line_and_the_round_waits_for_it() {
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    args_done(&mut c, 20, "r1", "c1", "lookup_customer", "{}");
    c.done(
        30,
        "r1",
        "completed",
        json!([call_item("c1", "lookup_customer", "{}")]),
    );
    c.take();
    assert_eq!(
        c.m.next_deadline(),
        Some(c.at(1520)),
        "1.5 s after the dispatch"
    );
    c.m.on_timer(c.at(1520));
    let fx = c.take();
    assert_eq!(filler_creates(&fx), 1);
    assert_eq!(response_creates(&fx).len(), 1);

    // The tool answers while the filler is being said: its output waits for the filler.
    c.created(1530, "r2");
    tool_done(
        &mut c,
        1600,
        "c1",
        "lookup_customer",
        ToolReply::Output("{}".into()),
    );
    let fx = c.take();
    assert!(function_outputs(&fx).is_empty());
    assert!(response_creates(&fx).is_empty());
    c.done(2000, "r2", "completed", json!([]));
    let fx = c.take();
    assert_eq!(function_outputs(&fx).len(), 1);
    assert_eq!(
        response_creates(&fx),
        vec![None],
        "exactly one response.create for the round"
    );
    // Never a second filler for the round.
    c.m.on_timer(c.at(10_000));
    assert_eq!(filler_creates(&c.take()), 0);
}

#[test]
fn a_filler_waits_for_silence_and_is_skipped_when_the_tool_is_quick() {
    // Quick tool: no filler.
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", "lookup_customer", "{}")]),
    );
    tool_done(
        &mut c,
        500,
        "c1",
        "lookup_customer",
        ToolReply::Output("{}".into()),
    );
    c.take();
    c.m.on_timer(c.at(1520));
    assert_eq!(filler_creates(&c.take()), 0);

    // A response is active at the deadline: the filler waits for it to end.
    let mut c = Call::new(agent_with(|_| {}));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", "lookup_customer", "{}")]),
    );
    c.created(1000, "r2");
    c.take();
    c.m.on_timer(c.at(1520));
    assert_eq!(filler_creates(&c.take()), 0);
    c.done(1600, "r2", "completed", json!([]));
    c.take();
    let next = c.m.next_deadline().unwrap();
    assert!(next <= c.at(1770), "rechecked soon");
    c.m.on_timer(next);
    assert_eq!(filler_creates(&c.take()), 1);

    // Turned off by the agent.
    let mut c = Call::new(agent_with(|a| a.filler_after = None));
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("c1", "lookup_customer", "{}")]),
    );
    c.take();
    assert_eq!(c.m.next_deadline(), None);
}

// ---------------------------------------------------------------------------------- handoff

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

#[test]
fn handoff_updates_the_session_once_then_outputs_then_one_response_create() {
    let mut c = Call::new(desk_with_handoff());
    c.start(0);
    c.created(10, "r1");
    let args = r#"{"agent":"billing","reason":"invoice question"}"#;
    args_done(&mut c, 20, "r1", "h1", HANDOFF, args);
    let fx = c.take();
    assert_eq!(handoff_requests(&fx), vec![("h1".into(), "billing".into())]);
    assert!(function_outputs(&fx).is_empty());
    c.done(
        30,
        "r1",
        "completed",
        json!([call_item("h1", HANDOFF, args)]),
    );
    assert!(
        response_creates(&c.take()).is_empty(),
        "waits for the target"
    );

    let target = billing();
    c.m.on_handoff(
        "h1",
        Ok((Arc::clone(&target), session_tools(&target))),
        c.at(40),
    );
    let fx = c.take();
    let rt = realtime(&fx);
    let updates: Vec<&Session> = rt
        .iter()
        .filter_map(|e| match e {
            ClientEvent::SessionUpdate { session, .. } => Some(session),
            _ => None,
        })
        .collect();
    assert_eq!(updates.len(), 1, "{rt:?}");
    let v = serde_json::to_value(updates[0]).unwrap();
    assert_eq!(v["type"], "realtime");
    assert_eq!(v["instructions"], "You are billing.");
    assert_eq!(
        v["audio"]["input"]["turn_detection"],
        json!({"type":"semantic_vad","eagerness":"high","create_response":true,"interrupt_response":true})
    );
    assert!(
        v["audio"].get("output").is_none() && v.get("model").is_none(),
        "voice and model stay as they are: {v}"
    );
    let names: Vec<_> = updates[0]
        .tools
        .as_ref()
        .unwrap()
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, vec!["lookup_invoice", END_CALL]);
    // Order: session.update, the output, then exactly one response.create.
    assert!(matches!(rt[0], ClientEvent::SessionUpdate { .. }), "{rt:?}");
    assert_eq!(
        function_outputs(&fx),
        vec![("h1".into(), r#"{"agent":"billing","ok":true}"#.into())]
    );
    assert_eq!(response_creates(&fx), vec![None]);
    assert!(matches!(
        rt.last(),
        Some(ClientEvent::ResponseCreate { .. })
    ));
    let t = transcripts(&fx);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].role, Role::System as i32);
    assert_eq!(t[0].text, "Handed off to billing (invoice question).");
    assert_eq!(t[0].offset_ms, 40);
    let tools = tool_events(&fx);
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].name, HANDOFF);
    assert_eq!(tools[0].arguments, args);
    assert_eq!(c.m.agent().id, "billing");

    // From now on the target's tools: the desk's are unknown, the target's dispatched.
    c.created(50, "r2");
    c.done(
        60,
        "r2",
        "completed",
        json!([
            call_item("c1", "lookup_customer", "{}"),
            call_item("c2", "lookup_invoice", "{}")
        ]),
    );
    let fx = c.take();
    let dispatched: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::CallTool(call) => Some(call.name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(dispatched, vec!["lookup_invoice"]);
    let t = tool_events(&fx);
    assert!(
        matches!(&t[0].result, Some(tool_invocation::Result::Error(e)) if e.code == "unknown_tool")
    );

    // And its timers: idle 20 s from the handoff (the next one, once the tool round is over).
    tool_done(
        &mut c,
        70,
        "c2",
        "lookup_invoice",
        ToolReply::Output("{}".into()),
    );
    c.take();
    assert_eq!(c.m.next_deadline(), Some(c.at(40 + 20_000)));
}

#[test]
fn handoff_to_an_unlisted_or_unavailable_agent_is_an_error_output() {
    let mut c = Call::new(desk_with_handoff());
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("h1", HANDOFF, r#"{"agent":"sales"}"#)]),
    );
    let fx = c.take();
    assert!(handoff_requests(&fx).is_empty());
    let out = function_outputs(&fx);
    let v: serde_json::Value = serde_json::from_str(&out[0].1).unwrap();
    assert_eq!(v["error"]["code"], "unknown_agent");
    assert!(v["error"]["message"].as_str().unwrap().contains("billing"));
    assert_eq!(response_creates(&fx).len(), 1);

    // Listed, but gone from the agents table: the actor answers with an error.
    c.created(30, "r2");
    c.done(
        40,
        "r2",
        "completed",
        json!([call_item("h2", HANDOFF, r#"{"agent":"billing"}"#)]),
    );
    assert_eq!(handoff_requests(&c.take()).len(), 1);
    c.m.on_handoff(
        "h2",
        Err(ToolReply::error(
            ToolErrorCode::Unavailable,
            "not available",
        )),
        c.at(50),
    );
    let fx = c.take();
    assert!(
        !realtime(&fx)
            .iter()
            .any(|e| matches!(e, ClientEvent::SessionUpdate { .. }))
    );
    let out = function_outputs(&fx);
    let v: serde_json::Value = serde_json::from_str(&out[0].1).unwrap();
    assert_eq!(v["error"]["code"], "unavailable");
    assert_eq!(response_creates(&fx).len(), 1);
    assert!(transcripts(&fx).is_empty());
    assert_eq!(c.m.agent().id, "desk");
}

#[test]
fn a_replacement_session_after_a_handoff_is_configured_for_the_target() {
    let mut c = Call::new(desk_with_handoff());
    c.start(0);
    c.created(10, "r1");
    c.done(
        20,
        "r1",
        "completed",
        json!([call_item("h1", HANDOFF, r#"{"agent":"billing"}"#)]),
    );
    let target = billing();
    c.m.on_handoff(
        "h1",
        Ok((Arc::clone(&target), session_tools(&target))),
        c.at(30),
    );
    c.take();
    closed(&mut c, 40);
    assert_eq!(reconnects(&c.take()), 1);
    c.m.resume_session(Vec::new());
    let rt = realtime(&c.take());
    let ClientEvent::SessionUpdate { session, .. } = &rt[0] else {
        panic!("{rt:?}")
    };
    let v = serde_json::to_value(session).unwrap();
    assert_eq!(v["instructions"], "You are billing.");
    assert_eq!(v["model"], "gpt-realtime");
    assert_eq!(
        v["audio"]["output"]["voice"], "marin",
        "the caller keeps hearing the first agent's voice"
    );
    assert_eq!(v["tools"].as_array().unwrap().len(), 2);
}
