//! Shared test harness: a real nats-server, the Realtime simulator in-process, a call-worker
//! in-process, and the test playing the gateway (frames to `.in`, frames from `.out`).
#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream;
use call_worker::{Config, Worker};
use futures::StreamExt;
use realtime_sim::{Script, SessionRecord, SimServer};
use switchboard_proto::subject::Subjects;
use switchboard_proto::{
    CallEvent, CallOffer, InboundFrame, Message as _, OfferReply, OutboundFrame, StreamStart,
    StreamStop, TOOLS_BUCKET, ToolSpec, call_event::Body, inbound_frame, outbound_frame,
};
use switchboard_realtime::ClientEvent;
use switchboard_testkit::{NatsServer, eventually};

/// How long a test waits for anything.
pub const WAIT: Duration = Duration::from_secs(10);

/// An agent for `+15550001111` (greeting configurable) and a default agent for other numbers.
pub fn agents_toml(greeting: Option<&str>, tools: &[&str]) -> String {
    let greeting = greeting
        .map(|g| format!("greeting = \"{g}\"\n"))
        .unwrap_or_default();
    let tools = tools
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[agent]]\nid = \"front-desk\"\nnumbers = [\"+15550001111\"]\n\
         instructions = \"You are the front desk of Acme Dental.\"\nvoice = \"cedar\"\n\
         {greeting}tools = [{tools}]\ntransfer_to = \"+15550002222\"\n"
    )
}

/// Everything one test needs.
pub struct Harness {
    pub nats: NatsServer,
    pub sim: SimServer,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub subjects: Subjects,
    pub worker: Option<Worker>,
    pub dir: tempfile::TempDir,
}

impl Harness {
    /// Starts nats-server, the simulator with `script` and a worker with `agents`; `tweak`
    /// adjusts the worker's config.
    pub async fn start(
        script: &str,
        agents: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let script = Script::from_toml_str(script).context("test script")?;
        let sim = SimServer::start("127.0.0.1:0", script).await?;
        let dir = tempfile::tempdir()?;
        let agents_file = dir.path().join("agents.toml");
        std::fs::write(&agents_file, agents)?;
        let mut config = Config::new(nats.url(), agents_file);
        config.realtime_url = sim.url();
        config.worker_id = Some("worker-test".into());
        config.tool_timeout_ms = 2000;
        tweak(&mut config);
        let worker = Worker::start(config).await?;
        let client = async_nats::connect(nats.url()).await?;
        let js = jetstream::new(client.clone());
        Ok(Self {
            nats,
            sim,
            client,
            js,
            subjects: Subjects::default(),
            worker: Some(worker),
            dir,
        })
    }

    pub fn worker(&self) -> &Worker {
        self.worker.as_ref().expect("worker running")
    }

    /// Offers a call to `to` and returns the worker's answer.
    pub async fn offer(&self, call_sid: &str, to: &str) -> anyhow::Result<OfferReply> {
        self.offer_with(CallOffer {
            call_sid: call_sid.into(),
            account_sid: "AC1".into(),
            from: "+15550001234".into(),
            to: to.into(),
            direction: switchboard_proto::Direction::Inbound as i32,
            gateway_id: "gw-test".into(),
            offered_at_ms: switchboard_proto::now_ms(),
            agent_id: String::new(),
            ..Default::default()
        })
        .await
    }

    pub async fn offer_with(&self, offer: CallOffer) -> anyhow::Result<OfferReply> {
        let reply = tokio::time::timeout(
            WAIT,
            self.client
                .request(self.subjects.offer(), offer.encode_to_vec().into()),
        )
        .await
        .context("offer timed out")??;
        Ok(OfferReply::decode(reply.payload)?)
    }

    /// Plays the gateway of `call_sid`: subscribes to `.out` first, as the real one does.
    pub async fn gateway(&self, call_sid: &str) -> anyhow::Result<Gateway> {
        Gateway::connect(&self.client, &self.subjects, call_sid).await
    }

    /// Registers a tool in the registry, as a tool service does.
    pub async fn register_tool(&self, name: &str, timeout_ms: u32) -> anyhow::Result<()> {
        let kv = self.js.get_key_value(TOOLS_BUCKET).await?;
        let spec = ToolSpec {
            name: name.into(),
            description: format!("The {name} tool."),
            parameters_schema:
                r#"{"type":"object","properties":{"phone":{"type":"string"}},"required":["phone"]}"#
                    .into(),
            timeout_ms,
            version: "test".into(),
        };
        kv.put(name, spec.encode_to_vec().into()).await?;
        Ok(())
    }

    /// Every stored event of a call, in stream order (each under its own `Nats-Msg-Id`).
    pub async fn stored_events(&self, call_sid: &str) -> anyhow::Result<Vec<CallEvent>> {
        let stored =
            switchboard_testkit::events::call_events(&self.js, &self.subjects, call_sid).await?;
        Ok(stored.into_iter().map(|s| s.event).collect())
    }

    /// Waits until the stored events of a call satisfy `done`.
    pub async fn events_until(
        &self,
        call_sid: &str,
        what: &str,
        done: impl Fn(&[CallEvent]) -> bool,
    ) -> anyhow::Result<Vec<CallEvent>> {
        eventually(WAIT, what, || async {
            let events = self.stored_events(call_sid).await.ok()?;
            done(&events).then_some(events)
        })
        .await
    }

    /// Waits for the `ended` event and returns all events of the call.
    pub async fn ended_events(&self, call_sid: &str) -> anyhow::Result<Vec<CallEvent>> {
        self.events_until(call_sid, "the ended event", |evs| {
            evs.iter().any(|e| matches!(e.body, Some(Body::Ended(_))))
        })
        .await
    }

    /// The simulator's record of the only session.
    pub async fn session(&self) -> anyhow::Result<SessionRecord> {
        let sessions = self.sim.sessions().await;
        match sessions.as_slice() {
            [one] => Ok(one.clone()),
            other => bail!("expected one realtime session, got {}", other.len()),
        }
    }

    /// Waits until the simulator's only session satisfies `done`.
    pub async fn session_until(
        &self,
        what: &str,
        done: impl Fn(&SessionRecord) -> bool,
    ) -> anyhow::Result<SessionRecord> {
        eventually(WAIT, what, || async {
            let s = self.session().await.ok()?;
            done(&s).then_some(s)
        })
        .await
    }
}

/// Client events of a given type.
pub fn client_events<'a>(
    s: &'a SessionRecord,
    pred: impl Fn(&ClientEvent) -> bool + 'a,
) -> Vec<&'a ClientEvent> {
    s.client_events.iter().filter(|e| pred(e)).collect()
}

pub fn is_response_create(e: &ClientEvent) -> bool {
    matches!(e, ClientEvent::ResponseCreate { .. })
}

pub fn is_truncate(e: &ClientEvent) -> bool {
    matches!(e, ClientEvent::ConversationItemTruncate { .. })
}

/// The test's side of a media stream.
pub struct Gateway {
    client: async_nats::Client,
    in_subject: String,
    pub call_sid: String,
    out: async_nats::Subscriber,
    seq: u64,
    /// Assistant audio bytes received so far.
    pub audio_bytes: usize,
    /// Marks received so far, with the audio bytes received before each.
    pub marks: Vec<(String, usize)>,
    /// Every frame received but heartbeats and `Owner` frames.
    pub frames: Vec<outbound_frame::Frame>,
    /// The last `Owner` frame received.
    pub owner: Option<switchboard_proto::Owner>,
}

impl Gateway {
    /// Plays the gateway of `call_sid` on `client`: subscribes to `.out` first, as the real
    /// one does.
    pub async fn connect(
        client: &async_nats::Client,
        subjects: &Subjects,
        call_sid: &str,
    ) -> anyhow::Result<Self> {
        let out = client.subscribe(subjects.call_out(call_sid)).await?;
        client.flush().await?;
        Ok(Gateway {
            client: client.clone(),
            in_subject: subjects.call_in(call_sid),
            call_sid: call_sid.into(),
            out,
            seq: 0,
            audio_bytes: 0,
            marks: Vec::new(),
            frames: Vec::new(),
            owner: None,
        })
    }

    pub async fn send(&mut self, frame: inbound_frame::Frame) -> anyhow::Result<()> {
        self.seq += 1;
        let msg = InboundFrame {
            seq: self.seq,
            frame: Some(frame),
        };
        self.client
            .publish(self.in_subject.clone(), msg.encode_to_vec().into())
            .await?;
        Ok(())
    }

    pub async fn start(&mut self) -> anyhow::Result<()> {
        self.start_for(0, false).await
    }

    /// Starts (or, `resumed`, starts again after a takeover) the stream for owner `epoch`.
    pub async fn start_for(&mut self, epoch: u32, resumed: bool) -> anyhow::Result<()> {
        let start = StreamStart {
            attach: 1,
            epoch,
            resumed,
            stream_sid: format!("MZ{}", self.call_sid),
            call_sid: self.call_sid.clone(),
            account_sid: "AC1".into(),
            custom_parameters: Default::default(),
            gateway_id: "gw-test".into(),
            started_at_ms: switchboard_proto::now_ms(),
            recorded: false,
        };
        self.send(inbound_frame::Frame::Start(start)).await
    }

    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.send(inbound_frame::Frame::Stop(StreamStop {
            reason: "stop".into(),
        }))
        .await
    }

    pub async fn echo(&mut self, mark: &str) -> anyhow::Result<()> {
        self.send(inbound_frame::Frame::Mark(switchboard_proto::MarkEcho {
            name: mark.into(),
        }))
        .await
    }

    async fn audio(&mut self, ms: u32, frame: impl Fn(usize) -> Vec<u8>) -> anyhow::Result<()> {
        for i in 0..(ms / 20) as usize {
            self.send(inbound_frame::Frame::Audio(
                switchboard_proto::InboundAudio {
                    replayed: false,
                    payload: frame(i).into(),
                    timestamp_ms: 0,
                    chunk: 0,
                },
            ))
            .await?;
            // A light pace: the simulator's VAD counts appended audio, not wall time.
            if i % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        self.client.flush().await?;
        Ok(())
    }

    /// Caller speech: a 440 Hz tone at RMS about 0.21 (VAD speech above 0.05).
    pub async fn speak(&mut self, ms: u32) -> anyhow::Result<()> {
        self.audio(ms, tone_frame).await
    }

    /// Caller silence.
    pub async fn silence(&mut self, ms: u32) -> anyhow::Result<()> {
        self.audio(ms, |_| vec![switchboard_twilio::mulaw::SILENCE; 160])
            .await
    }

    /// Receives the next frame but heartbeats and `Owner` frames (recording audio, marks and
    /// the owner).
    pub async fn next(&mut self, timeout: Duration) -> Option<outbound_frame::Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.out.next())
                .await
                .ok()??;
            let frame = OutboundFrame::decode(msg.payload).ok()?.frame?;
            match &frame {
                outbound_frame::Frame::Heartbeat(_) => continue,
                // Ownership bookkeeping, like heartbeats: kept aside.
                outbound_frame::Frame::Owner(o) => {
                    self.owner = Some(o.clone());
                    continue;
                }
                outbound_frame::Frame::Audio(a) => self.audio_bytes += a.payload.len(),
                outbound_frame::Frame::Mark(m) => {
                    self.marks.push((m.name.clone(), self.audio_bytes))
                }
                _ => {}
            }
            self.frames.push(frame.clone());
            return Some(frame);
        }
    }

    /// Receives frames until `done` holds for one of them.
    pub async fn until(
        &mut self,
        what: &str,
        done: impl Fn(&outbound_frame::Frame) -> bool,
    ) -> anyhow::Result<outbound_frame::Frame> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(f) if done(&f) => return Ok(f),
                Some(_) => {}
                None => bail!("timed out waiting on .out for {what}"),
            }
        }
    }

    /// Receives frames until `total` bytes of assistant audio arrived in all, and the mark
    /// after the last chunk too.
    pub async fn receive_audio(&mut self, total: usize) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let settled = self.audio_bytes >= total
                && self
                    .marks
                    .last()
                    .is_some_and(|(_, at)| *at == self.audio_bytes);
            if settled {
                if self.audio_bytes != total {
                    bail!("expected {total} bytes of audio, got {}", self.audio_bytes);
                }
                return Ok(());
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.next(left).await.is_none() {
                bail!("got {} of {total} bytes of audio", self.audio_bytes);
            }
        }
    }

    /// Receives frames until nothing new arrives for `quiet`.
    pub async fn drain(&mut self, quiet: Duration) {
        while self.next(quiet).await.is_some() {}
    }

    /// Echoes every mark received so far that is not yet echoed (instant playback).
    pub async fn echo_all(&mut self, echoed: &mut usize) -> anyhow::Result<()> {
        let names: Vec<String> = self.marks[*echoed..]
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        for n in names {
            self.echo(&n).await?;
        }
        *echoed = self.marks.len();
        Ok(())
    }

    /// The next frame of any kind (heartbeats included), whole.
    pub async fn raw(&mut self, timeout: Duration) -> Option<OutboundFrame> {
        let msg = tokio::time::timeout(timeout, self.out.next())
            .await
            .ok()??;
        OutboundFrame::decode(msg.payload).ok()
    }

    /// Waits for the first heartbeat frame.
    pub async fn heartbeat(&mut self) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.out.next())
                .await
                .context("no heartbeat")?
                .context(".out closed")?;
            if let Some(outbound_frame::Frame::Heartbeat(h)) =
                OutboundFrame::decode(msg.payload)?.frame
            {
                return Ok(h.worker_id);
            }
        }
    }
}

/// One 20 ms frame of a 440 Hz tone.
pub fn tone_frame(index: usize) -> Vec<u8> {
    (0..160)
        .map(|n| {
            let t = (index * 160 + n) as f64 / 8000.0;
            let s = (t * 440.0 * std::f64::consts::TAU).sin() * 0.3 * 32767.0;
            switchboard_twilio::mulaw::encode(s as i16)
        })
        .collect()
}

/// The bodies of events, in order.
pub fn bodies(events: &[CallEvent]) -> Vec<&Body> {
    events.iter().filter_map(|e| e.body.as_ref()).collect()
}

/// Asserts seq 1.. without gaps, the `owner` claim (epoch 0) first, `started` next and
/// `ended` last (when present).
pub fn assert_well_formed(events: &[CallEvent]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "seq must grow by one: {events:?}");
    }
    assert!(
        matches!(
            events.first().and_then(|e| e.body.as_ref()),
            Some(Body::Owner(o)) if o.epoch == 0
        ),
        "owner first"
    );
    assert!(
        matches!(
            events.get(1).and_then(|e| e.body.as_ref()),
            Some(Body::Started(_))
        ),
        "started next"
    );
    if let Some(pos) = events
        .iter()
        .position(|e| matches!(e.body, Some(Body::Ended(_))))
    {
        assert_eq!(pos, events.len() - 1, "ended last");
    }
}
