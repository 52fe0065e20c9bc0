//! The call actor: one task per call, owning that call's Realtime session.
//!
//! The task owns everything of the call (its `.in` subscription, its Realtime socket, its
//! [`machine::CallMachine`]) and `select!`s over the inputs: frames from the gateway, Realtime
//! events, finished tools, the heartbeat tick, the machine's timers and cancellation. Whatever the
//! machine decides comes back as effects, which the actor carries out without waiting on anything
//! slow: the Realtime writer is its own task, tools run in their own tasks, events are queued to
//! the shared [`EventPublisher`].
//!
//! The subscriptions to `voice.call.<sid>.in` and `voice.call.<sid>.owner` are made in
//! [`spawn`], before the offer is answered, so the gateway's first frame (or probe) can never
//! arrive before anyone listens.
//!
//! Ownership (see [`crate::ownership`]): the actor serves the call under the epoch the offer
//! desk claimed. Every frame it sends carries the epoch; it sends a heartbeat every
//! [`HEARTBEAT_INTERVAL`], answers the gateway's `OwnerProbe`s with `OwnerAck`, and announces
//! itself with an `Owner` frame on every `StreamStart` of its epoch. Once it learns that another
//! owner took the call (an event refused by the fence, a start or probe of a newer epoch) it
//! stops at once: no more frames, no `ended`, its Realtime session closed.
//!
//! When the Realtime session ends under a live call (the 60-minute cap, a network loss), the
//! machine asks for [`Effect::Reconnect`]: the actor drops the old socket, opens a new one and
//! hands the machine the conversation so far, rebuilt by [`crate::replay::items`] from the
//! call's own published events, so the caller keeps talking to the same agent after a short
//! pause. Too many losses in a row end the call (`model_error`).
//!
//! A `handoff` looks its target up in the worker's current agents table (the one new offers
//! route with) and resolves the target's tools in a task of its own, like business tools, then
//! hands both to the machine.
//!
//! Tracing: the actor runs inside the call's `call` span (fields `call_sid`, `agent`), whose
//! parent is the trace context of the offer's NATS headers, so everything the call publishes
//! (events included) belongs to the trace the gateway started. Children: `realtime.connect` per
//! (re)connect, `turn` per turn-latency event, `tool` per tool call (its context travels in the
//! ToolCall request's headers to the tool service). Nothing is traced per audio frame.

pub mod amd;
pub mod arbiter;
pub mod ending;
pub mod lifecycle;
pub mod machine;
pub mod observation;
pub mod recording;
pub mod session_check;
pub mod stream_clock;
pub mod tool_rounds;
pub mod transcripts;
pub mod transfer;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use switchboard_proto::call_event::Body;
use switchboard_proto::event::ToolErrorCode;
use switchboard_proto::subject::Subjects;
use switchboard_proto::{
    CallEnded, CallEvent, CallOffer, InboundFrame, Message as _, OutboundFrame, OwnerAck,
    OwnerProbe, ToolCall, inbound_frame, outbound_frame,
};
use switchboard_service::events::EventPublisher;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::agents::{Agent, Agents, HANDOFF};
use crate::events::CallEvents;
use crate::ownership::{Claim, Holding, Ownership, StartVerdict};
use crate::realtime::{self, RealtimeEvent, RealtimeSender, RealtimeSettings};
use crate::tools::{self, SessionTools, ToolDone, ToolReply};
use machine::{CallMachine, CallSetup, Effect};
use recording::{RECORDING_WAIT, Recordings, Waited};

/// How often the worker tells the gateway it is alive: the gateway probes an owner silent for
/// two intervals, so a dead one is noticed well within a second.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);

/// Messages each NATS subscription of the worker buffers (async-nats sets this per client, not
/// per subscription). It bounds a call's `.in` backlog when the call's actor falls behind: 256
/// frames are about 5 s of caller audio (50 frames a second), at most about 100 KiB per call,
/// and the Realtime writer holds another [`realtime::AUDIO_QUEUE_FRAMES`] and drops the oldest
/// of those. Audio older than that is worthless to the model, so beyond it async-nats drops new
/// messages (counted in `nats_slow_consumer_total`; the call counts the frames it never got in
/// `worker_inbound_audio_lost_total`) instead of memory growing with the backlog; the 8192 of
/// the other services would let one stalled call hold minutes of audio. The worker's other
/// subscription, offers, is answered in milliseconds, and an offer queued for seconds has been
/// given up by the gateway anyway; replies (tools, JetStream acks, registry reads) do not go
/// through per-subscription buffers.
pub const SUBSCRIPTION_CAPACITY: usize = 256;

/// What every call of this worker shares.
#[derive(Clone)]
pub struct CallContext {
    /// The NATS connection.
    pub client: async_nats::Client,
    /// Subject names.
    pub subjects: Subjects,
    /// Call events go here.
    pub publisher: EventPublisher,
    /// The tool registry (`None` if the bucket could not be opened; business tools are then
    /// left out).
    pub registry: Option<kv::Store>,
    /// Where the model is.
    pub realtime: RealtimeSettings,
    /// This worker.
    pub worker_id: String,
    /// Default business-tool deadline.
    pub tool_timeout: Duration,
}

/// What the actor needs besides the offer and its agent.
pub struct CallSpawn<'a> {
    /// The worker's current agents table: where a `handoff` finds its target.
    pub agents: watch::Receiver<Arc<Agents>>,
    /// The offer message's headers (trace context), if it had any.
    pub headers: Option<&'a async_nats::HeaderMap>,
    /// The call's capacity slot, released when the actor ends.
    pub permit: OwnedSemaphorePermit,
    /// Ends the call with reason `worker_shutdown`.
    pub cancel: CancellationToken,
    /// Asks the gateway to hand the call over to another worker (drain): the actor sends a
    /// `HandOver` frame and serves the call until a newer owner shows up.
    pub hand_over: CancellationToken,
    /// Told the call sid when the actor ends.
    pub ended: mpsc::UnboundedSender<String>,
    /// The epoch claimed for this worker, and the fence of its events.
    pub claim: Claim,
    /// The call's conversation events before this owner (empty for a new call).
    pub history: Vec<CallEvent>,
    /// For a call taken over: where the previous owner left it.
    pub resumed: Option<machine::Resumed>,
}

/// Starts the actor of an accepted call: subscribes to its `.in` subject (before returning, so
/// the offer can be answered safely) and starts connecting to the model at once.
pub async fn spawn(
    ctx: Arc<CallContext>,
    offer: CallOffer,
    agent: Arc<Agent>,
    tracker: &TaskTracker,
    rest: CallSpawn<'_>,
) -> Result<(), async_nats::SubscribeError> {
    let CallSpawn {
        agents,
        headers,
        permit,
        cancel,
        hand_over,
        ended,
        claim,
        history,
        resumed,
    } = rest;
    let inbound = ctx
        .client
        .subscribe(ctx.subjects.call_in(&offer.call_sid))
        .await?;
    let probes = ctx
        .client
        .subscribe(ctx.subjects.call_owner(&offer.call_sid))
        .await?;
    let span =
        tracing::info_span!(parent: None, "call", call_sid = %offer.call_sid, agent = %agent.id);
    if let Some(headers) = headers {
        switchboard_service::trace::set_parent(&span, headers);
    }
    // The agent may name its own model; the call keeps it for every session (a handoff cannot
    // change a session's model).
    let settings = RealtimeSettings {
        model: agent
            .model
            .clone()
            .unwrap_or_else(|| ctx.realtime.model.clone()),
        ..ctx.realtime.clone()
    };
    // The call's own tasks: its Realtime sockets, tool requests and handoff lookups. The call
    // is done (for the worker's drain) only when they are.
    let spawned = TaskTracker::new();
    let (rt_tx, rt_rx) = span.in_scope(|| realtime::connect(&settings, &offer.call_sid, &spawned));
    let setup = CallSetup {
        offer,
        agent,
        worker_id: ctx.worker_id.clone(),
        model: settings.model.clone(),
        tool_timeout: ctx.tool_timeout,
        accepted_at_ms: switchboard_proto::now_ms(),
    };
    let machine = match resumed {
        Some(resumed) => CallMachine::take_over(setup, resumed, Instant::now()),
        None => CallMachine::new(setup, Instant::now()),
    };
    let actor = CallActor::new(
        ctx,
        machine,
        settings,
        (rt_tx, rt_rx),
        (cancel, hand_over, spawned.clone()),
        agents,
        (claim, history),
    );
    tracker.spawn(
        async move {
            let sid = actor.call_sid.clone();
            actor.run(inbound, probes).await;
            drop(permit);
            let _ = ended.send(sid);
            // Cancelled or closed by the actor's end; a socket's close handshake is bounded.
            spawned.close();
            spawned.wait().await;
        }
        .instrument(span),
    );
    Ok(())
}

struct CallActor {
    ctx: Arc<CallContext>,
    call_sid: String,
    /// `voice.call.<sid>.out`; a `Subject` clones without allocating (two publishes per 100 ms
    /// of assistant audio).
    out_subject: async_nats::Subject,
    out_seq: u64,
    /// This owner's hold on the call.
    ownership: Ownership,
    /// Cancelled when JetStream refuses one of this owner's events.
    fenced: CancellationToken,
    /// Effects being carried out; kept between iterations so the media path reuses its buffer.
    queue: VecDeque<Effect>,
    machine: CallMachine,
    events: CallEvents,
    /// Where this call's model is (the worker's settings with the call's model).
    settings: RealtimeSettings,
    realtime: RealtimeSender,
    rt_events: mpsc::Receiver<RealtimeEvent>,
    cancel: CancellationToken,
    hand_over: CancellationToken,
    /// Ends the call's tool tasks when the call ends.
    tasks: CancellationToken,
    /// Where the call's own tasks run (see [`spawn`]).
    spawned: TaskTracker,
    tool_tx: mpsc::UnboundedSender<ToolDone>,
    tool_rx: mpsc::UnboundedReceiver<ToolDone>,
    agents: watch::Receiver<Arc<Agents>>,
    handoff_tx: mpsc::UnboundedSender<HandoffReady>,
    handoff_rx: mpsc::UnboundedReceiver<HandoffReady>,
    /// The streams' recordings, for `ended`.
    recordings: Recordings,
    /// `ended`, held until the last stream's recording is reported (see [`recording`]).
    held_end: Option<CallEnded>,
}

/// A handoff target with its resolved tools, for the `handoff` call `call_id`.
struct HandoffReady {
    call_id: String,
    agent: Arc<Agent>,
    tools: SessionTools,
}

impl CallActor {
    fn new(
        ctx: Arc<CallContext>,
        machine: CallMachine,
        settings: RealtimeSettings,
        (realtime, rt_events): (RealtimeSender, mpsc::Receiver<RealtimeEvent>),
        (cancel, hand_over, spawned): (CancellationToken, CancellationToken, TaskTracker),
        agents: watch::Receiver<Arc<Agents>>,
        (claim, history): (Claim, Vec<CallEvent>),
    ) -> Self {
        let call_sid = machine.offer().call_sid.clone();
        let fenced = claim.fence.lost().clone();
        let events = CallEvents::new(
            &call_sid,
            claim.epoch,
            ctx.publisher.clone(),
            claim.fence,
            history,
        );
        let mut events = events;
        events.redact(machine.agent().redact.iter().copied());
        let (tool_tx, tool_rx) = mpsc::unbounded_channel();
        let (handoff_tx, handoff_rx) = mpsc::unbounded_channel();
        Self {
            out_subject: ctx.subjects.call_out(&call_sid).into(),
            queue: VecDeque::new(),
            events,
            ownership: Ownership::new(claim.epoch),
            fenced,
            machine,
            ctx,
            call_sid,
            out_seq: 0,
            settings,
            realtime,
            rt_events,
            cancel,
            hand_over,
            tasks: CancellationToken::new(),
            spawned,
            tool_tx,
            tool_rx,
            agents,
            handoff_tx,
            handoff_rx,
            recordings: Recordings::default(),
            held_end: None,
        }
    }

    async fn run(
        mut self,
        mut inbound: async_nats::Subscriber,
        mut probes: async_nats::Subscriber,
    ) {
        metrics::gauge!(crate::metrics::ACTIVE_CALLS).increment(1.0);
        self.execute().await;

        let agent = self.machine.agent();
        let session_tools = tools::load(self.ctx.registry.as_ref(), &agent, &self.call_sid).await;
        if self.machine.is_takeover() {
            let replay = crate::replay::items(self.events.history());
            tracing::info!(call_sid = %self.call_sid, items = replay.len(), "call taken over; replaying the conversation");
            self.machine
                .take_over_session(session_tools, replay, Instant::now());
        } else {
            self.machine.start_session(session_tools);
        }
        self.execute().await;

        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // One timer for the machine's deadlines, moved when the deadline moves, rather than a new
        // timer registered on every frame.
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let mut shutting_down = false;
        // Moved on by every frame from the gateway once the stream started (Twilio sends media
        // every 20 ms): when it fires, the gateway is gone and no new stream was attached.
        let stream_gone = tokio::time::sleep(machine::REATTACH_WINDOW);
        // Made once, not per loop turn: a turn is usually one audio frame, and each `cancelled()`
        // made anew registers and removes a waiter under a lock.
        let cancelled = self.cancel.clone().cancelled_owned();
        let fenced = self.fenced.clone().cancelled_owned();
        let hand_over = self.hand_over.clone().cancelled_owned();
        tokio::pin!(stream_gone, cancelled, fenced, hand_over);
        while self.machine.ended().is_none() && self.ownership.holds() {
            let deadline = self.machine.next_deadline();
            if deadline != armed {
                if let Some(d) = deadline {
                    timer.as_mut().reset(d);
                }
                armed = deadline;
            }
            tokio::select! {
                () = &mut cancelled, if !shutting_down => {
                    shutting_down = true;
                    self.machine.shutdown(Instant::now());
                }
                // Ends the loop: the call is lost.
                () = &mut fenced => self.ownership.on_refused(),
                () = &mut hand_over, if self.ownership.holding() == Holding::Held => {
                    tracing::info!(call_sid = %self.call_sid, epoch = self.ownership.epoch(),
                        "draining: asking the gateway to hand the call over");
                    self.ownership.hand_over();
                    self.publish_out(outbound_frame::Frame::HandOver(switchboard_proto::HandOver {})).await;
                }
                Some(msg) = probes.next() => self.answer_probe(msg).await,
                () = &mut stream_gone, if self.machine.watches_stream() => {
                    self.machine.on_stream_gone(Instant::now());
                }
                msg = inbound.next() => match msg {
                    Some(msg) => match InboundFrame::decode(msg.payload) {
                        Ok(InboundFrame { frame: Some(frame), .. }) => {
                            stream_gone.as_mut().reset(Instant::now() + machine::REATTACH_WINDOW);
                            self.on_inbound(frame).await;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            metrics::counter!(crate::metrics::BAD_FRAMES).increment(1);
                            tracing::warn!(call_sid = %self.call_sid, error = %e, "undecodable inbound frame ignored");
                        }
                    },
                    None => self.machine.on_inbound_closed(Instant::now()),
                },
                ev = self.rt_events.recv() => {
                    let ev = ev.unwrap_or(RealtimeEvent::Closed { code: None, reason: "connection task ended".into() });
                    self.machine.on_realtime(ev, Instant::now());
                }
                Some(done) = self.tool_rx.recv() => {
                    self.machine.on_tool_done(done, Instant::now());
                }
                Some(ready) = self.handoff_rx.recv() => {
                    tracing::Span::current().record("agent", ready.agent.id.as_str());
                    self.events.redact(ready.agent.redact.iter().copied());
                    let target = Ok((ready.agent, ready.tools));
                    self.machine.on_handoff(&ready.call_id, target, Instant::now());
                }
                _ = heartbeat.tick() => {
                    let frame = outbound_frame::Frame::Heartbeat(switchboard_proto::Heartbeat {
                        worker_id: self.ctx.worker_id.clone(),
                    });
                    self.publish_out(frame).await;
                }
                () = &mut timer, if armed.is_some() => {
                    // Fired: a deadline that is still due re-arms (and fires) on the next turn.
                    armed = None;
                    self.machine.on_timer(Instant::now());
                }
            }
            self.execute().await;
        }
        if let Holding::Lost(by) = self.ownership.holding() {
            metrics::counter!(crate::metrics::CALLS_LOST).increment(1);
            tracing::warn!(call_sid = %self.call_sid, epoch = self.ownership.epoch(), ?by,
                "another owner took the call; stopping without ending it");
            self.queue.clear();
        }
        self.tasks.cancel();
        self.realtime.close();
        if let Some(ended) = self.held_end.take()
            && self.ownership.holds()
        {
            self.await_recording(&mut inbound).await;
            self.publish_ended(ended);
        }
        let _ = inbound.unsubscribe().await;
        let _ = probes.unsubscribe().await;
        metrics::gauge!(crate::metrics::ACTIVE_CALLS).decrement(1.0);
    }

    /// Waits (at most [`RECORDING_WAIT`]) for the gateway's report of the last stream's
    /// recording, taking only `StreamRecorded` frames: the call is over.
    async fn await_recording(&mut self, inbound: &mut async_nats::Subscriber) {
        let frames = inbound.filter_map(|msg| {
            let recorded = match InboundFrame::decode(msg.payload) {
                Ok(InboundFrame {
                    frame: Some(inbound_frame::Frame::Recorded(recorded)),
                    ..
                }) => Some(recorded),
                _ => None,
            };
            futures::future::ready(recorded)
        });
        let deadline = Instant::now() + RECORDING_WAIT;
        let waited = self.recordings.wait(frames, deadline, &self.cancel).await;
        if waited != Waited::Reported {
            tracing::debug!(call_sid = %self.call_sid, ?waited, "stopped waiting for the recording");
        }
    }

    /// Publishes `ended` with the last stream's recording, or says why it has none.
    fn publish_ended(&mut self, mut ended: CallEnded) {
        ended.recording = self.recordings.recording().map(Box::new);
        if let Some((reason, error)) = self.recordings.missing() {
            metrics::counter!(crate::metrics::ENDED_WITHOUT_RECORDING, "reason" => reason)
                .increment(1);
            tracing::warn!(call_sid = %self.call_sid, reason, error,
                "the call's end goes out without its recording");
        }
        self.events.publish(Body::Ended(ended));
    }

    /// A frame from the gateway: a start is checked against our epoch first; a recording's
    /// report is the actor's (for `ended`), not the machine's.
    async fn on_inbound(&mut self, frame: inbound_frame::Frame) {
        if let inbound_frame::Frame::Recorded(recorded) = frame {
            self.recordings.on_recorded(recorded);
            return;
        }
        if let inbound_frame::Frame::Start(start) = &frame {
            match self.ownership.on_start(start.epoch) {
                StartVerdict::Lost | StartVerdict::Stale => return,
                StartVerdict::Serve => {
                    self.recordings.on_start(start);
                    let agent = self.machine.agent();
                    let owner = outbound_frame::Frame::Owner(switchboard_proto::Owner {
                        worker_id: self.ctx.worker_id.clone(),
                        agent_id: agent.id.clone(),
                        apology: agent.apology.clone(),
                        transfer_to: agent.lost_call_transfer().unwrap_or_default().to_owned(),
                    });
                    self.publish_out(owner).await;
                }
            }
        }
        self.machine.on_inbound(frame, Instant::now());
    }

    /// Answers the gateway's `OwnerProbe` while we hold the call; a probe of a newer epoch
    /// tells us we lost it (and gets no answer).
    async fn answer_probe(&mut self, msg: async_nats::Message) {
        let probe = match OwnerProbe::decode(msg.payload) {
            Ok(probe) => probe,
            Err(e) => {
                metrics::counter!(crate::metrics::BAD_FRAMES).increment(1);
                tracing::warn!(call_sid = %self.call_sid, error = %e, "undecodable owner probe ignored");
                return;
            }
        };
        let (Some(epoch), Some(reply)) = (self.ownership.on_probe(probe.epoch), msg.reply) else {
            return;
        };
        let ack = OwnerAck {
            worker_id: self.ctx.worker_id.clone(),
            epoch,
        };
        if let Err(e) = self
            .ctx
            .client
            .publish(reply, ack.encode_to_vec().into())
            .await
        {
            tracing::warn!(call_sid = %self.call_sid, error = %e, "answering an owner probe failed");
        }
    }

    /// Carries out the machine's effects (and any they lead to).
    async fn execute(&mut self) {
        self.record_observations();
        self.machine.drain_effects_into(&mut self.queue);
        while self.ownership.holds()
            && let Some(effect) = self.queue.pop_front()
        {
            match effect {
                Effect::Realtime(ev) => self.realtime.send(&ev),
                Effect::Audio(audio) => self.realtime.append_audio(&audio),
                Effect::Out(frame) => self.publish_out(frame).await,
                Effect::Event(Body::Turn(turn)) => {
                    let span = tracing::info_span!("turn", kind = %turn.kind, latency_ms = turn.latency_ms);
                    let _entered = span.enter();
                    metrics::histogram!(crate::metrics::TURN_LATENCY, "kind" => turn.kind.clone())
                        .record(f64::from(turn.latency_ms) / 1000.0);
                    self.events.publish(Body::Turn(turn));
                }
                Effect::Event(Body::Ended(ended)) => {
                    let reason = switchboard_proto::event::EndReason::parse(&ended.reason);
                    if self.recordings.pending(reason) {
                        self.held_end = Some(ended);
                    } else {
                        self.publish_ended(ended);
                    }
                }
                Effect::Event(body) => self.events.publish(body),
                Effect::CallTool(call) => self.call_tool(call),
                Effect::CloseRealtime => self.realtime.close(),
                Effect::Reconnect => {
                    self.realtime.close();
                    let (tx, rx) = realtime::connect(&self.settings, &self.call_sid, &self.spawned);
                    self.realtime = tx;
                    self.rt_events = rx;
                    let replay = crate::replay::items(self.events.history());
                    tracing::info!(call_sid = %self.call_sid, items = replay.len(), "new realtime session; replaying the conversation");
                    self.machine.resume_session(replay);
                    self.machine.drain_effects_into(&mut self.queue);
                }
                Effect::Handoff { call_id, agent_id } => {
                    if let Err(reply) = self.handoff(call_id.clone(), &agent_id) {
                        self.machine
                            .on_handoff(&call_id, Err(reply), Instant::now());
                        self.machine.drain_effects_into(&mut self.queue);
                    }
                }
            }
        }
        self.record_observations();
    }

    /// Records what the machine observed (see [`observation`]).
    fn record_observations(&mut self) {
        let call_sid = self.machine.offer().call_sid.clone();
        for observation in self.machine.drain_observations() {
            observation.record(&call_sid);
        }
    }

    async fn publish_out(&mut self, frame: outbound_frame::Frame) {
        // A call that lost its ownership says nothing more: two workers never speak on one call.
        if !self.ownership.holds() {
            return;
        }
        self.out_seq += 1;
        let msg = OutboundFrame {
            seq: self.out_seq,
            epoch: self.ownership.epoch(),
            frame: Some(frame),
        };
        if let Err(e) = self
            .ctx
            .client
            .publish(self.out_subject.clone(), msg.encode_to_vec().into())
            .await
        {
            metrics::counter!(crate::metrics::OUTBOUND_PUBLISH_ERRORS).increment(1);
            tracing::warn!(call_sid = %self.call_sid, error = %e, "publishing an outbound frame failed");
        }
    }

    /// Finds the handoff target in the current agents table and resolves its tools in a task
    /// (registry reads must not hold up the call); the result comes back on `handoff_rx`.
    fn handoff(&self, call_id: String, agent_id: &str) -> Result<(), ToolReply> {
        // The target serves the same person: the contact's vars follow the call.
        let vars = &self.machine.offer().vars;
        let Some(agent) = self
            .agents
            .borrow()
            .by_id(agent_id)
            .map(|agent| crate::offers::for_contact(agent, vars))
        else {
            return Err(ToolReply::error(
                ToolErrorCode::Unavailable,
                format!("The agent `{agent_id}` is not available on this line right now."),
            ));
        };
        let span = tracing::info_span!("tool", name = HANDOFF, call_id = %call_id, result = "ok");
        let ctx = Arc::clone(&self.ctx);
        let call_sid = self.call_sid.clone();
        let tx = self.handoff_tx.clone();
        let tasks = self.tasks.clone();
        self.spawned.spawn(
            async move {
                let load = tools::load(ctx.registry.as_ref(), &agent, &call_sid);
                if let Some(tools) = tasks.run_until_cancelled(load).await {
                    let _ = tx.send(HandoffReady {
                        call_id,
                        agent,
                        tools,
                    });
                }
            }
            .instrument(span),
        );
        Ok(())
    }

    fn call_tool(&self, call: ToolCall) {
        let timeout = Duration::from_millis(u64::from(call.timeout_ms));
        let client = self.ctx.client.clone();
        let subject = self.ctx.subjects.tool(&call.name);
        let tx = self.tool_tx.clone();
        let tasks = self.tasks.clone();
        let span = tracing::info_span!("tool", name = %call.name, call_id = %call.call_id,
            result = tracing::field::Empty);
        // The tool service continues this trace from the request's headers.
        let headers = span.in_scope(switchboard_service::trace::headers);
        self.spawned.spawn(
            async move {
                let started = Instant::now();
                let request = tools::call_business_tool(&client, subject, &call, timeout, headers);
                let Some((reply, outcome)) = tasks.run_until_cancelled(request).await else {
                    return;
                };
                let result = match &reply {
                    ToolReply::Output(_) => "ok",
                    ToolReply::Error(e) => e.code.as_str(),
                };
                tracing::Span::current().record("result", result);
                let latency_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
                let _ = tx.send(ToolDone {
                    call_id: call.call_id,
                    name: call.name,
                    arguments: call.arguments,
                    reply,
                    outcome,
                    latency_ms,
                });
            }
            .instrument(span),
        );
    }
}
