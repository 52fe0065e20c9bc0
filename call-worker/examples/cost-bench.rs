//! `cost-bench`: what a call costs in model tokens, per call-minute, measured on realtime-sim.
//!
//! It runs the call-worker's own call machine ([`CallMachine`]: the `session.update` it sends,
//! greeting, tool rounds, barge-in rules, usage accounting) against a realtime-sim over a real
//! WebSocket, playing the rest of the call itself: the caller's audio frames (mu-law, in turns of
//! `speech` then `silence`), mark echoes at once (everything sent is heard), tool results at
//! once. The `ended` event's usage is what the persister would price; it is priced here with the
//! persister's built-in table ([`Prices::builtin`]) for each model named.
//!
//! Scenarios:
//! - `demo`: realtime-sim's built-in dental demo (greeting, a `lookup_customer` round, three
//!   caller turns), the agent of `agents/agents.toml` as far as the model sees it;
//! - `long`: a scripted 30-minute call (62 turns: 8 s of caller speech, a 20 s answer), once with
//!   the server's default truncation (`auto`: only when the 28,224-token context is full) and
//!   once with `truncation = {retention_ratio = 0.8, post_instructions_tokens = 8000}`.
//!
//! The simulator's token counts are its model of the real server's (10 audio tokens per second
//! of caller audio, 20 per second of assistant audio, about 4 text tokens per 3 words, prompt
//! caching in 64-token blocks from 1,024 tokens, truncation that empties the cache); they do not
//! depend on the model id, so one run is priced for every model.
//!
//! ```text
//! cargo run --release -p call-worker --example cost-bench -- --scenario all
//! ```
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::{SinkExt as _, StreamExt as _};
use persister::pricing::Prices;
use realtime_sim::{Script, SimOptions, SimServer};
use switchboard_agents::Agent;
use switchboard_proto::call_event::Body;
use switchboard_proto::{
    CallOffer, InboundAudio, MarkEcho, StreamStart, StreamStop, ToolCall, Usage, inbound_frame,
    outbound_frame,
};
use switchboard_realtime::ServerEvent;
use switchboard_realtime::session::{FunctionTool, Truncation};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use call_worker::call::machine::{CallMachine, CallSetup, Effect};
use call_worker::realtime::{RealtimeEvent, append_json, parse_server_event};
use call_worker::tools::{SessionTools, ToolDone, ToolReply};

#[derive(Debug, Parser)]
#[command(
    name = "cost-bench",
    about = "Model cost per call-minute, measured on realtime-sim"
)]
struct Args {
    /// `demo`, `long` or `all`.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Models to price the runs with.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "gpt-realtime,gpt-realtime-mini,gpt-realtime-1.5,gpt-realtime-2.1-mini"
    )]
    models: Vec<String>,
}

/// What one run measured.
struct Run {
    name: String,
    usage: Usage,
    /// Caller audio plus assistant audio, as the call would last.
    call_ms: u64,
    /// Input tokens of each response, in order.
    per_response_input: Vec<u64>,
    per_response_cached: Vec<u64>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let instructions =
        std::fs::read_to_string(switchboard_testkit::workspace_root().join("agents/front-desk.md"))
            .context("agents/front-desk.md")?;
    let mut runs = Vec::new();
    if matches!(args.scenario.as_str(), "demo" | "all") {
        let mut script = Script::demo();
        script.session.speed = 400.0;
        let turns = vec![(3_000, 700); script.hear.len()];
        runs.push(run("demo call", script, &instructions, None, &turns).await?);
    }
    if matches!(args.scenario.as_str(), "long" | "all") {
        let script = long_script(62)?;
        let turns = vec![(8_000, 700); 62];
        runs.push(
            run(
                "30-min call, truncation auto",
                script.clone(),
                &instructions,
                None,
                &turns,
            )
            .await?,
        );
        let truncation = Truncation::retention_ratio(0.8, Some(8_000));
        runs.push(
            run(
                "30-min call, retention 0.8 / 8k",
                script,
                &instructions,
                Some(truncation),
                &turns,
            )
            .await?,
        );
    }
    report(&runs, &args.models);
    Ok(())
}

/// A call of `turns` caller turns, each answered with 80 words (20 s at 250 ms a word).
fn long_script(turns: usize) -> anyhow::Result<Script> {
    let answer = "Let me go over that with you in detail so nothing is missed. ".repeat(7);
    let answer: String = answer
        .split_whitespace()
        .take(80)
        .collect::<Vec<_>>()
        .join(" ");
    let mut toml = String::from("[session]\nms_per_word = 250\nspeed = 400.0\nhear = [\n");
    for i in 0..turns {
        toml.push_str(&format!(
            "  \"This is question number {i} about my appointment, my insurance and the bill I received last month.\",\n"
        ));
    }
    toml.push_str("]\n");
    for _ in 0..turns {
        toml.push_str(&format!("[[response]]\nsay = \"{answer}\"\n"));
    }
    Ok(Script::from_toml_str(&toml)?)
}

fn agent(instructions: &str, truncation: Option<Truncation>) -> Arc<Agent> {
    let mut a = Agent::new("front-desk", instructions);
    a.greeting = Some(
        "Thanks for calling Acme Dental, this is the front desk. How can I help you today?".into(),
    );
    a.tools = vec!["lookup_customer".into(), "end_call".into()];
    a.noise_reduction = Some("near_field".into());
    a.truncation = truncation;
    a.filler_after = None;
    Arc::new(a)
}

fn tools(agent: &Agent) -> SessionTools {
    let mut tools = SessionTools::default();
    tools.functions.push(FunctionTool::new(
        "lookup_customer",
        "Find the caller by phone number.",
        serde_json::json!({"type":"object","properties":{"phone":{"type":"string"}},"required":["phone"]}),
    ));
    if let Some(f) = call_worker::tools::builtin_function("end_call", agent) {
        tools.functions.push(f);
    }
    tools
}

/// One call: the machine against a fresh simulator.
async fn run(
    name: &str,
    script: Script,
    instructions: &str,
    truncation: Option<Truncation>,
    turns: &[(usize, usize)],
) -> anyhow::Result<Run> {
    let sim = SimServer::start_with(
        "127.0.0.1:0",
        script,
        SimOptions {
            record: false,
            ..Default::default()
        },
    )
    .await?;
    let url = format!("{}?model=gpt-realtime", sim.url());
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let agent = agent(instructions, truncation);
    let setup = CallSetup {
        offer: CallOffer {
            call_sid: "CAcostbench".into(),
            ..Default::default()
        },
        agent: Arc::clone(&agent),
        worker_id: "cost-bench".into(),
        model: "gpt-realtime".into(),
        tool_timeout: Duration::from_secs(8),
        accepted_at_ms: 0,
    };
    let mut m = CallMachine::new(setup, Instant::now());
    m.start_session(tools(&agent));
    m.on_inbound(
        inbound_frame::Frame::Start(StreamStart {
            stream_sid: "MZcostbench".into(),
            ..Default::default()
        }),
        Instant::now(),
    );
    let mut out = Out::default();
    let mut turns: VecDeque<(usize, usize)> = turns.iter().copied().collect();
    let mut caller_ms = 0u64;
    let mut chunk = 0u32;
    let mut ended: Option<Usage> = None;
    let mut per_response_input = Vec::new();
    let mut per_response_cached = Vec::new();
    loop {
        out.execute(&mut m, &mut ws, &mut ended).await?;
        if ended.is_some() {
            break;
        }
        let Some(msg) = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("the simulator went quiet")?
        else {
            anyhow::bail!("the simulator closed the socket");
        };
        let Message::Text(text) = msg? else { continue };
        let event = parse_server_event(text.as_str())?;
        let done = match &event {
            RealtimeEvent::Server(ev) => match ev.as_ref() {
                ServerEvent::ResponseDone { response, .. } => {
                    if let Some(u) = &response.usage {
                        let d = u.input_token_details.clone().unwrap_or_default();
                        per_response_input.push(u.input_tokens);
                        per_response_cached.push(d.cached_tokens);
                    }
                    true
                }
                ServerEvent::Error { error, .. } => {
                    anyhow::bail!("the simulator refused something: {error:?}")
                }
                _ => false,
            },
            _ => false,
        };
        m.on_realtime(event, Instant::now());
        out.execute(&mut m, &mut ws, &mut ended).await?;
        // The response that called a tool is followed by the tool round's own response;
        // after any other, the caller speaks next.
        if done && std::mem::take(&mut out.tool_answered) {
            continue;
        }
        if done {
            match turns.pop_front() {
                Some((speech_ms, silence_ms)) => {
                    for frame in caller_turn(speech_ms, silence_ms) {
                        chunk += 1;
                        m.on_inbound(
                            inbound_frame::Frame::Audio(InboundAudio {
                                payload: frame.into(),
                                chunk,
                                ..Default::default()
                            }),
                            Instant::now(),
                        );
                    }
                    caller_ms += (speech_ms + silence_ms) as u64;
                }
                None => m.on_inbound(
                    inbound_frame::Frame::Stop(StreamStop::default()),
                    Instant::now(),
                ),
            }
        }
    }
    sim.shutdown().await;
    let usage = ended.unwrap_or_default();
    Ok(Run {
        name: name.to_owned(),
        usage,
        call_ms: caller_ms + out.assistant_bytes / 8,
        per_response_input,
        per_response_cached,
    })
}

/// What the bench does with the machine's effects.
#[derive(Default)]
struct Out {
    assistant_bytes: u64,
    /// A tool was answered since the last `response.done`.
    tool_answered: bool,
}

impl Out {
    async fn execute<S>(
        &mut self,
        m: &mut CallMachine,
        ws: &mut S,
        ended: &mut Option<Usage>,
    ) -> anyhow::Result<()>
    where
        S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
    {
        let mut queue: VecDeque<Effect> = VecDeque::new();
        m.drain_effects_into(&mut queue);
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Realtime(ev) => ws.send(Message::text(ev.to_json())).await?,
                Effect::Audio(audio) => ws.send(Message::text(append_json(&audio))).await?,
                Effect::Out(outbound_frame::Frame::Audio(a)) => {
                    self.assistant_bytes += a.payload.len() as u64;
                }
                // The caller hears everything at once.
                Effect::Out(outbound_frame::Frame::Mark(mark)) => {
                    m.on_inbound(
                        inbound_frame::Frame::Mark(MarkEcho { name: mark.name }),
                        Instant::now(),
                    );
                }
                Effect::Event(Body::Ended(e)) => *ended = Some(*e.usage.unwrap_or_default()),
                Effect::CallTool(ToolCall {
                    call_id,
                    name,
                    arguments,
                    ..
                }) => {
                    self.tool_answered = true;
                    m.on_tool_done(
                        ToolDone {
                            call_id,
                            name,
                            arguments,
                            reply: ToolReply::Output(
                                r#"{"name":"Maria Garcia","phone":"+15550001234","last_visit":"2025-03-02"}"#
                                    .into(),
                            ),
                            outcome: None,
                            latency_ms: 0,
                        },
                        Instant::now(),
                    );
                }
                _ => {}
            }
            m.drain_effects_into(&mut queue);
        }
        Ok(())
    }
}

/// 20 ms mu-law frames: a 300 Hz tone for `speech_ms`, then silence.
fn caller_turn(speech_ms: usize, silence_ms: usize) -> Vec<Vec<u8>> {
    use switchboard_twilio::mulaw;
    let amplitude = 0.3 * std::f32::consts::SQRT_2 * 32767.0;
    let mut samples: Vec<u8> = (0..speech_ms * 8)
        .map(|i| {
            let t = i as f32 / 8000.0;
            mulaw::encode((amplitude * (std::f32::consts::TAU * 300.0 * t).sin()) as i16)
        })
        .collect();
    samples.extend(std::iter::repeat_n(mulaw::SILENCE, silence_ms * 8));
    samples.chunks(160).map(<[u8]>::to_vec).collect()
}

fn report(runs: &[Run], models: &[String]) {
    let prices = Prices::builtin();
    println!("## tokens\n");
    println!(
        "| run | call length | responses | input tokens / response (mean, last) | cached share of input | input audio / text | output audio / text | transcription in / out |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let u = &r.usage;
        let n = r.per_response_input.len().max(1) as u64;
        let mean = r.per_response_input.iter().sum::<u64>() / n;
        let last = r.per_response_input.last().copied().unwrap_or_default();
        let cached: u64 = r.per_response_cached.iter().sum();
        let input: u64 = r.per_response_input.iter().sum();
        println!(
            "| {} | {:.1} min | {} | {mean}, {last} | {:.0}% | {} / {} | {} / {} | {} / {} |",
            r.name,
            r.call_ms as f64 / 60_000.0,
            r.per_response_input.len(),
            100.0 * cached as f64 / input.max(1) as f64,
            u.input_audio_tokens,
            u.input_text_tokens,
            u.output_audio_tokens,
            u.output_text_tokens,
            u.transcription_input_audio_tokens,
            u.transcription_output_tokens,
        );
    }
    println!("\n## model cost per call-minute (USD; transcription included)\n");
    print!("| run |");
    for m in models {
        print!(" {m} |");
    }
    println!();
    print!("|---|");
    for _ in models {
        print!("---:|");
    }
    println!();
    for r in runs {
        print!("| {} |", r.name);
        for model in models {
            let mut u = r.usage.clone();
            u.model = model.clone();
            let b = prices.breakdown(&u);
            let per_min = b.total_usd / (r.call_ms as f64 / 60_000.0);
            let flag = if b.placeholder { "*" } else { "" };
            print!(" {per_min:.4}{flag} |");
        }
        println!();
    }
    println!("\n(* priced with a placeholder price from the built-in table)");
}
