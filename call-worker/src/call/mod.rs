//! The call actor: one task per call, owning that call's Realtime session.
//!
//! The task owns everything of the call (its `.in` subscription, its Realtime socket, its
//! [`machine::CallMachine`]) and `select!`s over the inputs: frames from the gateway, Realtime
//! events, finished tools, the heartbeat tick, the machine's timers and cancellation. Whatever the
//! machine decides comes back as effects, which the actor carries out without waiting on anything
//! slow: the Realtime writer is its own task, tools run in their own tasks, events are queued to
//! the shared [`EventPublisher`].
//!
//! The subscription to `voice.call.<sid>.in` is made in [`spawn`], before the offer is answered,
//! so the gateway's first frame can never arrive before anyone listens.
//!
//! When the Realtime session ends under a live call (the 60-minute cap, a network loss), the
//! machine asks for [`Effect::Reconnect`]: the actor drops the old socket, opens a new one and
//! hands the machine the conversation so far, rebuilt by [`crate::replay::items`] from the
//! call's own published events, so the caller keeps talking to the same agent after a short
//! pause. Too many losses in a row end the call (`model_error`).

pub mod machine;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use switchboard_proto::subject::Subjects;
use switchboard_proto::{
    CallOffer, InboundFrame, Message as _, OutboundFrame, ToolCall, outbound_frame,
};
use switchboard_service::events::EventPublisher;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::Agent;
use crate::events::CallEvents;
use crate::realtime::{self, RealtimeEvent, RealtimeSender, RealtimeSettings};
use crate::tools::{self, ToolDone};
use machine::{CallMachine, CallSetup, Effect};

/// How often the worker tells the gateway it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

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

/// Starts the actor of an accepted call: subscribes to its `.in` subject (before returning, so
/// the offer can be answered safely) and starts connecting to the model at once.
///
/// `permit` is the call's capacity slot, released when the actor ends; `ended` is told the
/// call sid then. `cancel` ends the call with reason `worker_shutdown`.
pub async fn spawn(
    ctx: Arc<CallContext>,
    offer: CallOffer,
    agent: Arc<Agent>,
    permit: OwnedSemaphorePermit,
    cancel: CancellationToken,
    tracker: &TaskTracker,
    ended: mpsc::UnboundedSender<String>,
) -> Result<(), async_nats::SubscribeError> {
    let inbound = ctx
        .client
        .subscribe(ctx.subjects.call_in(&offer.call_sid))
        .await?;
    let (rt_tx, rt_rx) = realtime::connect(&ctx.realtime, &offer.call_sid);
    let setup = CallSetup {
        offer,
        agent,
        worker_id: ctx.worker_id.clone(),
        model: ctx.realtime.model.clone(),
        tool_timeout: ctx.tool_timeout,
    };
    let actor = CallActor::new(ctx, setup, rt_tx, rt_rx, cancel);
    tracker.spawn(async move {
        let sid = actor.call_sid.clone();
        actor.run(inbound).await;
        drop(permit);
        let _ = ended.send(sid);
    });
    Ok(())
}

struct CallActor {
    ctx: Arc<CallContext>,
    call_sid: String,
    out_subject: String,
    out_seq: u64,
    machine: CallMachine,
    events: CallEvents,
    realtime: RealtimeSender,
    rt_events: mpsc::Receiver<RealtimeEvent>,
    cancel: CancellationToken,
    /// Ends the call's tool tasks when the call ends.
    tasks: CancellationToken,
    tool_tx: mpsc::UnboundedSender<ToolDone>,
    tool_rx: mpsc::UnboundedReceiver<ToolDone>,
}

impl CallActor {
    fn new(
        ctx: Arc<CallContext>,
        setup: CallSetup,
        realtime: RealtimeSender,
        rt_events: mpsc::Receiver<RealtimeEvent>,
        cancel: CancellationToken,
    ) -> Self {
        let call_sid = setup.offer.call_sid.clone();
        let (tool_tx, tool_rx) = mpsc::unbounded_channel();
        Self {
            out_subject: ctx.subjects.call_out(&call_sid),
            events: CallEvents::new(&call_sid, ctx.publisher.clone()),
            machine: CallMachine::new(setup, Instant::now()),
            ctx,
            call_sid,
            out_seq: 0,
            realtime,
            rt_events,
            cancel,
            tasks: CancellationToken::new(),
            tool_tx,
            tool_rx,
        }
    }

    async fn run(mut self, mut inbound: async_nats::Subscriber) {
        metrics::gauge!("worker_active_calls").increment(1.0);
        let effects = self.machine.take_effects();
        self.execute(effects).await;

        let agent = self.machine.agent();
        let session_tools = tools::load(self.ctx.registry.as_ref(), &agent, &self.call_sid).await;
        self.machine.start_session(session_tools);
        let effects = self.machine.take_effects();
        self.execute(effects).await;

        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut shutting_down = false;
        while self.machine.ended().is_none() {
            let deadline = self.machine.next_deadline();
            tokio::select! {
                () = self.cancel.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    self.machine.shutdown(Instant::now());
                }
                msg = inbound.next() => match msg {
                    Some(msg) => match InboundFrame::decode(msg.payload) {
                        Ok(InboundFrame { frame: Some(frame), .. }) => {
                            self.machine.on_inbound(frame, Instant::now());
                        }
                        Ok(_) => {}
                        Err(e) => {
                            metrics::counter!("worker_bad_frames_total").increment(1);
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
                _ = heartbeat.tick() => {
                    let frame = outbound_frame::Frame::Heartbeat(switchboard_proto::Heartbeat {
                        worker_id: self.ctx.worker_id.clone(),
                    });
                    self.publish_out(frame).await;
                }
                () = sleep_until(deadline) => {
                    self.machine.on_timer(Instant::now());
                }
            }
            let effects = self.machine.take_effects();
            self.execute(effects).await;
        }
        self.tasks.cancel();
        self.realtime.close();
        let _ = inbound.unsubscribe().await;
        metrics::gauge!("worker_active_calls").decrement(1.0);
    }

    async fn execute(&mut self, effects: Vec<Effect>) {
        let mut queue = std::collections::VecDeque::from(effects);
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Realtime(ev) => self.realtime.send(&ev),
                Effect::Audio(b64) => self.realtime.append_audio(b64),
                Effect::Out(frame) => self.publish_out(frame).await,
                Effect::Event(body) => self.events.publish(body),
                Effect::CallTool {
                    call_id,
                    name,
                    arguments,
                    timeout,
                } => self.call_tool(call_id, name, arguments, timeout),
                Effect::CloseRealtime => self.realtime.close(),
                Effect::Reconnect => {
                    self.realtime.close();
                    let (tx, rx) = realtime::connect(&self.ctx.realtime, &self.call_sid);
                    self.realtime = tx;
                    self.rt_events = rx;
                    let replay = crate::replay::items(self.events.history());
                    tracing::info!(call_sid = %self.call_sid, items = replay.len(), "new realtime session; replaying the conversation");
                    self.machine.resume_session(replay);
                    queue.extend(self.machine.take_effects());
                }
            }
        }
    }

    async fn publish_out(&mut self, frame: outbound_frame::Frame) {
        self.out_seq += 1;
        let msg = OutboundFrame {
            seq: self.out_seq,
            frame: Some(frame),
        };
        if let Err(e) = self
            .ctx
            .client
            .publish(self.out_subject.clone(), msg.encode_to_vec().into())
            .await
        {
            metrics::counter!("worker_outbound_publish_errors_total").increment(1);
            tracing::warn!(call_sid = %self.call_sid, error = %e, "publishing an outbound frame failed");
        }
    }

    fn call_tool(&self, call_id: String, name: String, arguments: String, timeout: Duration) {
        let offer = self.machine.offer();
        let call = ToolCall {
            call_sid: self.call_sid.clone(),
            call_id: call_id.clone(),
            name: name.clone(),
            arguments: arguments.clone(),
            agent_id: self.machine.agent().id.clone(),
            caller: offer.from.clone(),
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        };
        let client = self.ctx.client.clone();
        let subject = self.ctx.subjects.tool(&name);
        let tx = self.tool_tx.clone();
        let tasks = self.tasks.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = tasks
                .run_until_cancelled(tools::call_business_tool(&client, subject, &call, timeout))
                .await;
            let Some((reply, outcome)) = result else {
                return;
            };
            let latency_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
            let _ = tx.send(ToolDone {
                call_id,
                name,
                arguments,
                reply,
                outcome,
                latency_ms,
            });
        });
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
