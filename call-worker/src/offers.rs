//! Taking calls: the answer to `voice.calls.offer`.
//!
//! Workers share the offer subject in the queue group `call-workers`, so each offer reaches one
//! of them. A worker declines when it is draining, when it is at `MAX_CALLS` (a semaphore: a hard
//! cap, never exceeded), or when no agent answers the dialed number; the gateway then tries
//! elsewhere or tells the caller everyone is busy. Otherwise it claims the offered epoch of the
//! call (see [`crate::ownership`]; `claim_lost` if another worker's claim won, so an offer that
//! timed out and was offered again is served once), starts the call actor, which subscribes to
//! the call's subjects, and only then answers `accepted` with the epoch.
//!
//! A takeover reads the call back from `VOICE_EVENTS` first, one request per event: it runs in a
//! task of its own (holding its capacity slot), so the desk goes on answering other offers while
//! a worker that died with many calls has them all re-offered at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use switchboard_service::redact::MaskedPhone;

use async_nats::Message;
use futures::StreamExt;
use switchboard_proto::event::DeclineReason;
use switchboard_proto::subject::validate_call_sid;
use switchboard_proto::{CallOffer, Message as _, OfferReply};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::{Agent, Agents};
use crate::call::{self, CallContext};
use crate::ownership::{self, ClaimFor};
use crate::takeover;
use switchboard_service::events::ClaimError;

/// How long a draining worker keeps declining offers before it unsubscribes, and how long it
/// then still answers (declines) offers already delivered to it.
const DRAIN_DECLINE_WINDOW: Duration = Duration::from_secs(1);

/// What to answer an offer.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Take the call with this agent.
    Accept(Arc<Agent>),
    /// We already run this call under the offered epoch (a repeated offer): answer `accepted`
    /// again.
    AlreadyOurs(String),
    /// Take the call over from its previous owner: the agent comes from the call's events.
    TakeOver,
    /// Decline with this reason.
    Decline(DeclineReason),
}

/// A call running here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// Its agent when it was accepted.
    pub agent_id: String,
    /// The epoch this worker claimed.
    pub epoch: u32,
}

/// Decides an offer. `free_slots` is how many more calls the worker may take; `active` maps the
/// calls running here to their agents and epochs.
pub fn decide(
    offer: &CallOffer,
    draining: bool,
    free_slots: usize,
    agents: &Agents,
    active: &HashMap<String, Running>,
) -> Decision {
    if validate_call_sid(&offer.call_sid).is_err() {
        return Decision::Decline(DeclineReason::BadOffer);
    }
    if let Some(running) = active.get(&offer.call_sid) {
        // An offer of another epoch for a call still running here: the gateway gave up on this
        // owner, and another worker may take the call (our actor stops when it learns so).
        if running.epoch != offer.epoch {
            return Decision::Decline(DeclineReason::ClaimLost);
        }
        return Decision::AlreadyOurs(running.agent_id.clone());
    }
    if draining {
        return Decision::Decline(DeclineReason::Draining);
    }
    if free_slots == 0 {
        return Decision::Decline(DeclineReason::AtCapacity);
    }
    if !offer.takeover.is_empty() || offer.epoch > 0 {
        return Decision::TakeOver;
    }
    let agent = if offer.agent_id.is_empty() {
        agents.route(&offer.to)
    } else {
        agents.by_id(&offer.agent_id)
    };
    match agent {
        Some(a) => Decision::Accept(for_contact(a, &offer.vars)),
        None => Decision::Decline(DeclineReason::NoAgent),
    }
}

/// `agent` as it serves a call with `vars` (see [`with_vars`]); the shared one without vars.
/// Every agent of the call gets them: the one it was accepted with, a handoff's target, and
/// the agent of a worker taking the call over (from the call's `started` event).
pub fn for_contact(agent: &Arc<Agent>, vars: &HashMap<String, String>) -> Arc<Agent> {
    if vars.is_empty() {
        Arc::clone(agent)
    } else {
        Arc::new(with_vars(agent, vars))
    }
}

/// `agent` with the facts about the person called (a campaign contact's variables) appended
/// to its instructions, in name order, so the instructions can refer to them by name.
pub fn with_vars(agent: &Agent, vars: &HashMap<String, String>) -> Agent {
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut instructions = agent.instructions.clone();
    instructions.push_str("\n\nAbout the person on this call:\n");
    for name in names {
        instructions.push_str(&format!("- {name}: {}\n", vars[name]));
    }
    Agent {
        instructions,
        ..agent.clone()
    }
}

/// The offer desk of a worker: owns the capacity and the table of calls running here.
pub struct Offers {
    ctx: Arc<CallContext>,
    /// The current routing table (replaced when the agents file is reloaded).
    agents: watch::Receiver<Arc<Agents>>,
    capacity: Arc<Semaphore>,
    calls: CancellationToken,
    /// Cancelled when the drain hands the running calls over to other workers.
    hand_over: CancellationToken,
    tracker: TaskTracker,
    active: HashMap<String, Running>,
    ended_tx: mpsc::UnboundedSender<String>,
    ended_rx: mpsc::UnboundedReceiver<String>,
    /// Calls whose takeover is running in a task.
    taking: HashSet<String>,
    /// Calls of `taking` whose actor already ended before the takeover's task reported.
    ended_early: HashSet<String>,
    taken_tx: mpsc::UnboundedSender<Taken>,
    taken_rx: mpsc::UnboundedReceiver<Taken>,
}

/// How a takeover task ended, reported to the desk.
struct Taken {
    call_sid: String,
    epoch: u32,
    result: Result<String, DeclineReason>,
}

/// What a takeover task needs from the desk.
struct TakeoverJob {
    ctx: Arc<CallContext>,
    agents: watch::Receiver<Arc<Agents>>,
    tracker: TaskTracker,
    calls: CancellationToken,
    hand_over: CancellationToken,
    ended_tx: mpsc::UnboundedSender<String>,
}

impl Offers {
    /// A desk taking at most `max_calls` calls. Call actors are spawned on `tracker`; cancelling
    /// `calls` ends every call (drain deadline); cancelling `hand_over` asks the gateways to hand
    /// every call to another worker.
    pub fn new(
        ctx: Arc<CallContext>,
        agents: watch::Receiver<Arc<Agents>>,
        max_calls: usize,
        calls: CancellationToken,
        hand_over: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        let (taken_tx, taken_rx) = mpsc::unbounded_channel();
        Self {
            ctx,
            agents,
            capacity: Arc::new(Semaphore::new(max_calls)),
            calls,
            hand_over,
            tracker,
            active: HashMap::new(),
            ended_tx,
            ended_rx,
            taking: HashSet::new(),
            ended_early: HashSet::new(),
            taken_tx,
            taken_rx,
        }
    }

    /// A call actor ended.
    fn ended(&mut self, call_sid: String) {
        self.active.remove(&call_sid);
        if self.taking.contains(&call_sid) {
            self.ended_early.insert(call_sid);
        }
    }

    /// A takeover task ended: the call is running here (unless it already ended) or not.
    fn taken(&mut self, taken: Taken) {
        self.taking.remove(&taken.call_sid);
        let ended = self.ended_early.remove(&taken.call_sid);
        if let Ok(agent_id) = taken.result
            && !ended
        {
            self.active.insert(
                taken.call_sid,
                Running {
                    agent_id,
                    epoch: taken.epoch,
                },
            );
        }
    }

    /// Answers offers until `stop` fires, then stops taking offers: for a moment every offer is
    /// declined with `draining` (gateways offer it again elsewhere), then the subscription is
    /// drained and whatever was already delivered is declined too.
    pub async fn run(
        mut self,
        mut offers: async_nats::Subscriber,
        mut takeovers: async_nats::Subscriber,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                msg = offers.next() => match msg {
                    Some(msg) => self.handle(msg, false, Said::Always).await,
                    None => {
                        tracing::warn!("offer subscription ended");
                        return;
                    }
                },
                Some(msg) = takeovers.next() => {
                    self.handle(msg, false, Said::OnlyAcceptance).await;
                }
                Some(sid) = self.ended_rx.recv() => self.ended(sid),
                Some(taken) = self.taken_rx.recv() => self.taken(taken),
            }
        }
        // A draining worker takes no call over; it would not have answered a takeover anyway.
        if let Err(e) = takeovers.unsubscribe().await {
            tracing::debug!(error = %e, "leaving the takeover subject failed");
        }
        // Decline first, unsubscribe after: a gateway offers a declined call to another worker
        // at once, while an offer that reaches us in the middle of unsubscribing can be dropped
        // by the client and leave the gateway waiting for its timeout.
        tracing::info!("draining: declining offers");
        let window = tokio::time::sleep(DRAIN_DECLINE_WINDOW);
        tokio::pin!(window);
        loop {
            tokio::select! {
                () = &mut window => break,
                msg = offers.next() => match msg {
                    Some(msg) => self.handle(msg, true, Said::Always).await,
                    None => return,
                },
            }
        }
        tracing::info!("draining: no more offers");
        if let Err(e) = offers.drain().await {
            tracing::warn!(error = %e, "draining the offer subscription failed");
        }
        while let Ok(Some(msg)) = tokio::time::timeout(DRAIN_DECLINE_WINDOW, offers.next()).await {
            self.handle(msg, true, Said::Always).await;
        }
    }

    async fn handle(&mut self, msg: Message, draining: bool, said: Said) {
        let Some(subject) = msg.reply.clone() else {
            tracing::warn!(subject = %msg.subject, "offer without a reply subject ignored");
            return;
        };
        let reply_to = ReplyTo { subject, said };
        while let Ok(sid) = self.ended_rx.try_recv() {
            self.ended(sid);
        }
        while let Ok(taken) = self.taken_rx.try_recv() {
            self.taken(taken);
        }
        let headers = msg.headers;
        let offer = match CallOffer::decode(msg.payload) {
            Ok(offer) => offer,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable call offer declined");
                self.reply(reply_to, "", 0, Err(DeclineReason::BadOffer))
                    .await;
                return;
            }
        };
        let call_sid = offer.call_sid.clone();
        let agents = Arc::clone(&self.agents.borrow());
        // Back-pressure: while call events pile up (the broker is slow or away), running calls
        // keep their events and new calls go to workers that can record them.
        let free = if self.ctx.publisher.is_congested() {
            tracing::warn!(
                backlog = self.ctx.publisher.backlog(),
                "call events are backing up; declining new calls"
            );
            0
        } else {
            self.capacity.available_permits()
        };
        let decision = if self.taking.contains(&call_sid) {
            // A repeated offer while this worker is taking the call over: the gateway gets the
            // answer of the first one, then the new owner's frames.
            Decision::Decline(DeclineReason::ClaimLost)
        } else {
            decide(&offer, draining, free, &agents, &self.active)
        };
        match decision {
            Decision::Decline(reason) => {
                tracing::info!(%call_sid, to = %MaskedPhone(&offer.to), agent_id = %offer.agent_id, %reason, "offer declined");
                self.reply(reply_to, &call_sid, offer.epoch, Err(reason))
                    .await;
            }
            Decision::AlreadyOurs(agent_id) => {
                tracing::info!(%call_sid, "repeated offer for a call running here");
                self.reply(reply_to, &call_sid, offer.epoch, Ok(&agent_id))
                    .await;
            }
            Decision::TakeOver => {
                let Ok(permit) = Arc::clone(&self.capacity).try_acquire_owned() else {
                    self.reply(
                        reply_to,
                        &call_sid,
                        offer.epoch,
                        Err(DeclineReason::AtCapacity),
                    )
                    .await;
                    return;
                };
                self.taking.insert(call_sid.clone());
                let job = TakeoverJob {
                    ctx: Arc::clone(&self.ctx),
                    agents: self.agents.clone(),
                    tracker: self.tracker.clone(),
                    calls: self.calls.child_token(),
                    hand_over: self.hand_over.child_token(),
                    ended_tx: self.ended_tx.clone(),
                };
                let taken_tx = self.taken_tx.clone();
                let ctx = Arc::clone(&self.ctx);
                self.tracker.spawn(async move {
                    let epoch = offer.epoch;
                    let result = take_over(job, offer, &agents, headers.as_ref(), permit).await;
                    answer(
                        &ctx,
                        reply_to,
                        &call_sid,
                        epoch,
                        result.as_deref().map_err(|r| *r),
                    )
                    .await;
                    match &result {
                        Ok(agent_id) => {
                            tracing::info!(%call_sid, epoch, %agent_id, "call taken over");
                        }
                        Err(reason) => {
                            tracing::info!(%call_sid, epoch, %reason, "takeover declined");
                        }
                    }
                    let _ = taken_tx.send(Taken {
                        call_sid,
                        epoch,
                        result,
                    });
                });
            }
            Decision::Accept(agent) => {
                // Offers are handled one at a time, so a slot seen free is still free.
                let epoch = offer.epoch;
                let Ok(permit) = Arc::clone(&self.capacity).try_acquire_owned() else {
                    self.reply(reply_to, &call_sid, epoch, Err(DeclineReason::AtCapacity))
                        .await;
                    return;
                };
                let claim = match claim(&self.ctx, &offer, &agent.id, 0, headers.as_ref()).await {
                    Ok(claim) => claim,
                    Err(reason) => {
                        self.reply(reply_to, &call_sid, epoch, Err(reason)).await;
                        return;
                    }
                };
                let spawned = call::spawn(
                    Arc::clone(&self.ctx),
                    offer,
                    Arc::clone(&agent),
                    &self.tracker,
                    call::CallSpawn {
                        agents: self.agents.clone(),
                        headers: headers.as_ref(),
                        permit,
                        cancel: self.calls.child_token(),
                        hand_over: self.hand_over.child_token(),
                        ended: self.ended_tx.clone(),
                        claim,
                        history: Vec::new(),
                        resumed: None,
                    },
                )
                .await;
                match spawned {
                    Ok(()) => {
                        tracing::info!(%call_sid, agent_id = %agent.id, "call accepted");
                        self.active.insert(
                            call_sid.clone(),
                            Running {
                                agent_id: agent.id.clone(),
                                epoch,
                            },
                        );
                        self.reply(reply_to, &call_sid, epoch, Ok(&agent.id)).await;
                    }
                    Err(e) => {
                        // Claimed but not served: the gateway hears nothing from us and offers
                        // the call again as a takeover.
                        tracing::error!(%call_sid, error = %e, "could not subscribe to the call; declined");
                        self.reply(reply_to, &call_sid, epoch, Err(DeclineReason::Error))
                            .await;
                    }
                }
            }
        }
    }

    async fn reply(
        &self,
        reply_to: ReplyTo,
        call_sid: &str,
        epoch: u32,
        result: Result<&str, DeclineReason>,
    ) {
        answer(&self.ctx, reply_to, call_sid, epoch, result).await;
    }
}

/// Which answers to an offer are said: a takeover offer goes to every worker, and only the one
/// that took the call answers it (the others' declines would race its acceptance to the
/// gateway, which takes the first answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Said {
    /// Acceptances and declines (an offer to the queue group).
    Always,
    /// Acceptances only (a takeover offer to every worker).
    OnlyAcceptance,
}

/// Where an offer's answer goes.
#[derive(Debug, Clone)]
struct ReplyTo {
    subject: async_nats::Subject,
    said: Said,
}

/// Answers an offer on `reply_to`.
async fn answer(
    ctx: &CallContext,
    reply_to: ReplyTo,
    call_sid: &str,
    epoch: u32,
    result: Result<&str, DeclineReason>,
) {
    let reply = match result {
        Ok(agent_id) => OfferReply {
            accepted: true,
            worker_id: ctx.worker_id.clone(),
            agent_id: agent_id.to_owned(),
            reason: String::new(),
            epoch,
        },
        Err(reason) => OfferReply {
            accepted: false,
            worker_id: ctx.worker_id.clone(),
            agent_id: String::new(),
            reason: reason.as_str().to_owned(),
            epoch,
        },
    };
    let (result, reason) = match result {
        Ok(_) => ("accepted", ""),
        Err(reason) => ("declined", reason.as_str()),
    };
    metrics::counter!(crate::metrics::OFFERS, "result" => result, "reason" => reason).increment(1);
    if !reply.accepted && reply_to.said == Said::OnlyAcceptance {
        return;
    }
    if let Err(e) = ctx
        .client
        .publish(reply_to.subject, reply.encode_to_vec().into())
        .await
    {
        tracing::warn!(%call_sid, error = %e, "answering the offer failed");
    }
}

/// Claims `offer`'s epoch for this worker, inside the offer's trace (`headers`).
async fn claim(
    ctx: &CallContext,
    offer: &CallOffer,
    agent_id: &str,
    previous: u64,
    headers: Option<&async_nats::HeaderMap>,
) -> Result<ownership::Claim, DeclineReason> {
    let js = async_nats::jetstream::new(ctx.client.clone());
    let claim = ClaimFor {
        worker_id: &ctx.worker_id,
        agent_id,
        previous,
    };
    ownership::claim(&js, &ctx.subjects, offer, claim, headers)
        .await
        .map_err(|e| {
            tracing::info!(call_sid = %offer.call_sid, epoch = offer.epoch, error = %e, "claiming the call failed; declined");
            match e {
                ClaimError::Lost => DeclineReason::ClaimLost,
                ClaimError::Publish(_) => DeclineReason::Error,
            }
        })
}

/// Takes a call over: reads its events, checks that the offered epoch follows the last owner's,
/// claims it and starts the actor with the rebuilt conversation. Returns the agent.
async fn take_over(
    job: TakeoverJob,
    mut offer: CallOffer,
    agents: &Agents,
    headers: Option<&async_nats::HeaderMap>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<String, DeclineReason> {
    let call_sid = offer.call_sid.clone();
    let js = async_nats::jetstream::new(job.ctx.client.clone());
    let log = takeover::read(&js, &job.ctx.subjects, &call_sid)
        .await
        .map_err(|e| {
            tracing::error!(%call_sid, error = %e, "reading the call back failed");
            DeclineReason::Error
        })?;
    let Some((previous, last)) = log.last_owner.clone() else {
        tracing::warn!(%call_sid, "takeover of a call that has no owner");
        return Err(DeclineReason::ClaimLost);
    };
    if last.epoch.checked_add(1) != Some(offer.epoch) {
        tracing::info!(%call_sid, offered = offer.epoch, last = last.epoch, "takeover of a stale epoch");
        return Err(DeclineReason::ClaimLost);
    }
    let rebuilt = takeover::rebuild_now(&log.events);
    if let Some(started) = &rebuilt.started
        && offer.vars.is_empty()
    {
        offer.vars.clone_from(&started.vars);
    }
    let Some(agent) = agents
        .by_id(&rebuilt.agent_id)
        .map(|agent| for_contact(agent, &offer.vars))
    else {
        tracing::warn!(%call_sid, agent_id = %rebuilt.agent_id, "the call's agent is not in this worker's agents file");
        return Err(DeclineReason::NoAgent);
    };
    if let Some(started) = &rebuilt.started {
        if offer.from.is_empty() {
            offer.from.clone_from(&started.from);
        }
        if offer.to.is_empty() {
            offer.to.clone_from(&started.to);
        }
        if offer.direction == 0 {
            offer.direction = started.direction;
        }
    }
    if offer.previous_worker_id.is_empty() {
        offer.previous_worker_id.clone_from(&last.worker_id);
    }
    let claim = claim(&job.ctx, &offer, &agent.id, previous, headers).await?;
    let agent_id = agent.id.clone();
    call::spawn(
        Arc::clone(&job.ctx),
        offer,
        agent,
        &job.tracker,
        call::CallSpawn {
            agents: job.agents,
            headers,
            permit,
            cancel: job.calls,
            hand_over: job.hand_over,
            ended: job.ended_tx,
            claim,
            history: rebuilt.history,
            resumed: Some(rebuilt.resumed),
        },
    )
    .await
    .map_err(|e| {
        tracing::error!(%call_sid, error = %e, "could not subscribe to the call");
        DeclineReason::Error
    })?;
    Ok(agent_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn agents() -> Agents {
        Agents::parse(
            "[[agent]]\nid='desk'\nnumbers=['+1555']\ninstructions='x'\n\
             [[agent]]\nid='sales'\ninstructions='y'",
            "agents.toml",
            Path::new("."),
        )
        .unwrap()
    }

    fn offer(sid: &str, to: &str, agent_id: &str) -> CallOffer {
        CallOffer {
            call_sid: sid.into(),
            to: to.into(),
            agent_id: agent_id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_routed_and_explicit_agents() {
        let a = agents();
        let none = HashMap::new();
        match decide(&offer("CA1", "+1555", ""), false, 1, &a, &none) {
            Decision::Accept(agent) => assert_eq!(agent.id, "desk"),
            other => panic!("{other:?}"),
        }
        match decide(&offer("CA1", "+1555", "sales"), false, 1, &a, &none) {
            Decision::Accept(agent) => assert_eq!(agent.id, "sales"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_contacts_vars_follow_the_agents_instructions() {
        let a = agents();
        let mut o = offer("CA1", "+1555", "sales");
        o.vars = HashMap::from([
            ("name".to_owned(), "Jane".to_owned()),
            ("appointment".to_owned(), "Tuesday 10:00".to_owned()),
        ]);
        match decide(&o, false, 1, &a, &HashMap::new()) {
            Decision::Accept(agent) => assert_eq!(
                agent.instructions,
                "y\n\nAbout the person on this call:\n- appointment: Tuesday 10:00\n- name: Jane\n"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_taken_over_call_keeps_its_contacts_vars() {
        use crate::call::machine::{CallMachine, CallSetup, Effect};
        use switchboard_proto::call_event::Body;
        let a = agents();
        let mut o = offer("CA1", "+1555", "sales");
        o.vars = HashMap::from([("name".to_owned(), "Jane".to_owned())]);
        let Decision::Accept(agent) = decide(&o, false, 1, &a, &HashMap::new()) else {
            panic!("accepted");
        };
        let setup = CallSetup {
            offer: o,
            agent: Arc::clone(&agent),
            worker_id: "w1".into(),
            model: "gpt-realtime".into(),
            tool_timeout: Duration::from_secs(8),
            accepted_at_ms: 1,
        };
        let mut m = CallMachine::new(setup, tokio::time::Instant::now());
        let log: Vec<switchboard_proto::CallEvent> = m
            .take_effects()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Event(body @ Body::Started(_)) => Some(switchboard_proto::CallEvent {
                    call_sid: "CA1".into(),
                    seq: 1,
                    at_ms: 1,
                    body: Some(body),
                }),
                _ => None,
            })
            .collect();
        // The new owner's agent, from what the call's events say.
        let rebuilt = takeover::rebuild(&log, 2);
        let vars = &rebuilt.started.expect("started").vars;
        let taken = for_contact(a.by_id(&rebuilt.agent_id).unwrap(), vars);
        assert_eq!(taken.instructions, agent.instructions);
        assert!(taken.instructions.contains("- name: Jane"));
    }

    #[test]
    fn declines_with_reasons() {
        let a = agents();
        let none = HashMap::new();
        let d = |o: &CallOffer, draining, free| decide(o, draining, free, &a, &none);
        let good = offer("CA1", "+1555", "");
        assert_eq!(
            d(&good, true, 5),
            Decision::Decline(DeclineReason::Draining)
        );
        assert_eq!(
            d(&good, false, 0),
            Decision::Decline(DeclineReason::AtCapacity)
        );
        assert_eq!(
            d(&offer("CA1", "+1999", ""), false, 1),
            Decision::Decline(DeclineReason::NoAgent)
        );
        assert_eq!(
            d(&offer("CA1", "+1555", "ghost"), false, 1),
            Decision::Decline(DeclineReason::NoAgent)
        );
        assert_eq!(
            d(&offer("CA.1", "+1555", ""), false, 1),
            Decision::Decline(DeclineReason::BadOffer)
        );
        assert_eq!(
            d(&offer("", "+1555", ""), false, 1),
            Decision::Decline(DeclineReason::BadOffer)
        );
    }

    #[test]
    fn repeated_offers_are_answered_again() {
        let a = agents();
        let mut active = HashMap::new();
        active.insert(
            "CA1".to_owned(),
            Running {
                agent_id: "desk".to_owned(),
                epoch: 0,
            },
        );
        assert_eq!(
            decide(&offer("CA1", "+1555", ""), true, 0, &a, &active),
            Decision::AlreadyOurs("desk".into())
        );
        // A takeover of a call still running here is not ours to answer.
        let mut takeover = offer("CA1", "+1555", "");
        takeover.epoch = 1;
        assert_eq!(
            decide(&takeover, false, 1, &a, &active),
            Decision::Decline(DeclineReason::ClaimLost)
        );
    }
}
