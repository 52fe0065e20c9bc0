//! Taking a call over after its worker died, with real processes: two call-worker processes,
//! a real nats-server, the Realtime simulator; the test plays the gateway. Worker A serves the
//! call, is killed with SIGKILL mid-conversation, and worker B takes the call over as epoch 1:
//! it rebuilds the conversation from the call's events, seeds a new Realtime session with it,
//! and the conversation goes on, with event numbers that never collide and an exact
//! `worker_active_calls`.

mod common;

use common::*;
use realtime_sim::{Script, SimServer};
use switchboard_proto::call_event::Body;
use switchboard_proto::event::{OwnerReason, epoch_of};
use switchboard_proto::outbound_frame::Frame;
use switchboard_proto::subject::Subjects;
use switchboard_proto::{CallOffer, Message as _, OfferReply, Role};
use switchboard_realtime::{ClientEvent, Item};
use switchboard_testkit::process::Service;
use switchboard_testkit::{NatsServer, eventually, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SCRIPT: &str = "[session]\nspeed = 20.0\n\
    hear = [\"What are your opening hours?\", \"And on Saturdays?\"]\n\
    [[response]]\nsay = \"We open at eight.\"\n\
    [[response]]\nsay = \"Saturdays until noon.\"\n";

struct Process {
    service: Service,
    addr: String,
}

async fn worker(
    nats: &NatsServer,
    sim: &SimServer,
    agents: &str,
    id: &str,
) -> anyhow::Result<Process> {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut service = Service::spawn(
        "call-worker",
        &[
            ("NATS_URL", nats.url().to_owned()),
            ("REALTIME_URL", sim.url()),
            ("AGENTS_FILE", agents.to_owned()),
            ("WORKER_ID", id.to_owned()),
            ("LISTEN", addr.clone()),
            ("DRAIN_SECONDS", "5".to_owned()),
        ],
    )?;
    service.wait_ready(&addr).await?;
    Ok(Process { service, addr })
}

/// The value of gauge `name` on the worker's `/metrics` (which must be served).
async fn gauge(addr: &str, name: &str) -> anyhow::Result<f64> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await?;
    anyhow::ensure!(
        text.starts_with("HTTP/1.1 200"),
        "/metrics: {}",
        text.lines().next().unwrap_or("")
    );
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0))
}

#[tokio::test]
async fn a_killed_workers_call_is_taken_over_and_goes_on() -> anyhow::Result<()> {
    let (nats, sim, _dir, agents, h) = Observer::start(SCRIPT, &[]).await?;

    let a = worker(&nats, &sim, &agents, "worker-a").await?;
    let sid = "CAtakeover1";
    let mut gw = h.call_taken_by_a(sid).await?;
    let mut echoed = 0;
    gw.receive_audio("We open at eight.".split(' ').count() * 250 * 8)
        .await?;
    gw.echo_all(&mut echoed).await?;
    assert_eq!(
        gw.owner.as_ref().map(|o| o.worker_id.as_str()),
        Some("worker-a")
    );
    assert_eq!(gauge(&a.addr, "worker_active_calls").await?, 1.0);
    h.events_until(sid, "both sides of the first turn", |evs| {
        let said = |role: Role| {
            evs.iter()
                .any(|e| matches!(&e.body, Some(Body::Transcript(t)) if t.role == role as i32))
        };
        said(Role::User) && said(Role::Assistant)
    })
    .await?;

    // Worker A dies.
    h.kill_owner(&a, sid).await?;

    let b = worker(&nats, &sim, &agents, "worker-b").await?;
    let takeover = |epoch| takeover_offer(sid, epoch);
    // A stale epoch is refused; the next one is taken.
    let stale = h.offer(takeover(2)).await?;
    assert_eq!(
        (stale.accepted, stale.reason.as_str()),
        (false, "claim_lost")
    );
    let reply = h.offer(takeover(1)).await?;
    assert!(reply.accepted, "{reply:?}");
    assert_eq!(
        (
            reply.worker_id.as_str(),
            reply.epoch,
            reply.agent_id.as_str()
        ),
        ("worker-b", 1, "front-desk")
    );
    gw.start_for(1, true).await?;

    // The new session was seeded with the conversation as text, audio output forced.
    let seeded = eventually(WAIT, "the second session seeded", || async {
        let sessions = sim.sessions().await;
        let s = sessions.get(1)?.clone();
        let items: Vec<Item> = s
            .client_events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::ConversationItemCreate { item, .. } => Some(item.clone()),
                _ => None,
            })
            .collect();
        (items.len() >= 2).then_some((s, items))
    })
    .await?;
    let (session, items) = seeded;
    assert_eq!(
        items[..2],
        [
            Item::user_text("What are your opening hours?"),
            Item::assistant_text("We open at eight.")
        ]
    );
    match session.client_events.first() {
        Some(ClientEvent::SessionUpdate { session, .. }) => {
            assert_eq!(
                session.output_modalities.as_deref(),
                Some(&["audio".to_owned()][..])
            );
        }
        other => panic!("session.update first, got {other:?}"),
    }
    // The caller heard the answer: nothing to say until the caller speaks again.
    assert!(
        !session.client_events.iter().any(is_response_create),
        "{:?}",
        session.client_events
    );

    // The conversation goes on with worker B, every frame of epoch 1.
    gw.speak(600).await?;
    gw.silence(700).await?;
    let mut audio = 0;
    while audio == 0 {
        let f = gw.raw(WAIT).await.expect("worker B answers");
        assert_eq!(f.epoch, 1, "{f:?}");
        if let Some(Frame::Audio(a)) = f.frame {
            audio += a.payload.len();
        }
    }
    assert_eq!(gauge(&b.addr, "worker_active_calls").await?, 1.0);
    h.events_until(sid, "worker B's record of the caller's turn", |evs| {
        evs.iter().any(|e| {
            epoch_of(e.seq) == 1
                && matches!(&e.body, Some(Body::Transcript(t)) if t.role == Role::User as i32)
        })
    })
    .await?;
    gw.stop().await?;
    let events = h
        .events_until(sid, "the end", |evs| {
            evs.iter().any(|e| matches!(e.body, Some(Body::Ended(_))))
        })
        .await?;

    // One record: both owners' claims, no seq twice, every event of B numbered in epoch 1,
    // and the end B's.
    let mut seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), events.len());
    let owners: Vec<(u32, String, String)> = events
        .iter()
        .filter_map(|e| match &e.body {
            Some(Body::Owner(o)) => Some((o.epoch, o.worker_id.clone(), o.reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        owners,
        [
            (0, "worker-a".into(), "offer".into()),
            (1, "worker-b".into(), "worker_lost".into())
        ]
    );
    let started = events
        .iter()
        .filter(|e| matches!(e.body, Some(Body::Started(_))))
        .count();
    assert_eq!(started, 1, "the call starts once");
    let ended: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.body, Some(Body::Ended(_))))
        .collect();
    assert_eq!(ended.len(), 1);
    assert_eq!(epoch_of(ended[0].seq), 1);
    let user_lines = events
        .iter()
        .filter(|e| matches!(&e.body, Some(Body::Transcript(t)) if t.role == Role::User as i32))
        .map(|e| epoch_of(e.seq))
        .collect::<Vec<_>>();
    assert_eq!(user_lines, [0, 1], "each owner recorded its caller turn");
    eventually(WAIT, "worker B's gauge back to 0", || async {
        (gauge(&b.addr, "worker_active_calls").await.ok()? == 0.0).then_some(())
    })
    .await?;
    Ok(())
}

/// The gateway's offer of `sid` to a new owner of `epoch` after worker A was lost: it knows
/// nothing of the call but its sid (the `started` and `owner` events hold the rest).
fn takeover_offer(sid: &str, epoch: u32) -> CallOffer {
    let now = switchboard_proto::now_ms();
    CallOffer {
        call_sid: sid.into(),
        gateway_id: "gw-test".into(),
        offered_at_ms: now,
        epoch,
        takeover: OwnerReason::WorkerLost.as_str().into(),
        previous_worker_id: "worker-a".into(),
        owner_silent_since_ms: now,
        ..Default::default()
    }
}

/// The instructions of the `session.update`s session `index` of the simulator got so far.
async fn instructions(sim: &SimServer, index: usize) -> Option<Vec<String>> {
    let sessions = sim.sessions().await;
    let updates: Vec<String> = sessions
        .get(index)?
        .client_events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::SessionUpdate { session, .. } => session.instructions.clone(),
            _ => None,
        })
        .collect();
    (!updates.is_empty()).then_some(updates)
}

#[tokio::test]
async fn a_campaign_calls_vars_reach_the_instructions_of_the_worker_taking_it_over()
-> anyhow::Result<()> {
    let (nats, sim, _dir, agents, h) = Observer::start(SCRIPT, &[]).await?;
    let a = worker(&nats, &sim, &agents, "worker-a").await?;
    let sid = "CAtakeovervars";
    let mut gw = Gateway::connect(&h.client, &h.subjects, sid).await?;
    let vars = std::collections::HashMap::from([
        ("name".to_owned(), "Jane Roe".to_owned()),
        ("appointment".to_owned(), "Tuesday 10:00".to_owned()),
    ]);
    let reply = h
        .offer(CallOffer {
            call_sid: sid.into(),
            from: "+15550001111".into(),
            to: "+15550001234".into(),
            direction: switchboard_proto::Direction::Outbound as i32,
            gateway_id: "gw-test".into(),
            offered_at_ms: switchboard_proto::now_ms(),
            agent_id: "front-desk".into(),
            vars,
            ..Default::default()
        })
        .await?;
    assert!(reply.accepted && reply.worker_id == "worker-a", "{reply:?}");
    gw.start().await?;
    let first = eventually(WAIT, "worker A's session configured", || {
        instructions(&sim, 0)
    })
    .await?;
    assert!(
        first[0].contains("- appointment: Tuesday 10:00\n- name: Jane Roe"),
        "{first:?}"
    );

    h.kill_owner(&a, sid).await?;
    let _b = worker(&nats, &sim, &agents, "worker-b").await?;
    let reply = h.offer(takeover_offer(sid, 1)).await?;
    assert!(reply.accepted && reply.worker_id == "worker-b", "{reply:?}");
    gw.start_for(1, true).await?;
    let second = eventually(WAIT, "worker B's session configured", || {
        instructions(&sim, 1)
    })
    .await?;
    assert_eq!(
        second[0], first[0],
        "the same instructions, the contact's vars included"
    );
    Ok(())
}

/// The test's view of NATS and the call log.
struct Observer {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    subjects: Subjects,
}

impl Observer {
    /// A nats-server, the simulator playing `script`, and an agents file (its path) whose agent
    /// may call `tools`.
    async fn start(
        script: &str,
        tools: &[&str],
    ) -> anyhow::Result<(NatsServer, SimServer, tempfile::TempDir, String, Observer)> {
        let nats = NatsServer::start().await?;
        let sim = SimServer::start("127.0.0.1:0", Script::from_toml_str(script)?).await?;
        let dir = tempfile::tempdir()?;
        let agents = dir.path().join("agents.toml");
        std::fs::write(&agents, agents_toml(None, tools))?;
        let client = async_nats::connect(nats.url()).await?;
        let observer = Observer {
            js: async_nats::jetstream::new(client.clone()),
            client,
            subjects: Subjects::default(),
        };
        Ok((nats, sim, dir, agents.display().to_string(), observer))
    }

    /// Opens the stream of a new call `sid` as the gateway, offers it (worker A must take it),
    /// starts the stream and lets the caller ask its question.
    async fn call_taken_by_a(&self, sid: &str) -> anyhow::Result<Gateway> {
        let mut gw = Gateway::connect(&self.client, &self.subjects, sid).await?;
        let reply = self
            .offer(CallOffer {
                call_sid: sid.into(),
                from: "+15550001234".into(),
                to: "+15550001111".into(),
                direction: switchboard_proto::Direction::Inbound as i32,
                gateway_id: "gw-test".into(),
                offered_at_ms: switchboard_proto::now_ms(),
                ..Default::default()
            })
            .await?;
        anyhow::ensure!(reply.accepted && reply.worker_id == "worker-a", "{reply:?}");
        gw.start().await?;
        gw.speak(600).await?;
        gw.silence(700).await?;
        Ok(gw)
    }

    /// Kills worker `a` (kill -9) and waits until its probe subscription for `sid` is gone:
    /// once the server has seen the socket close, a probe gets "no responders" at once (the
    /// gateway's fast path for a crash).
    async fn kill_owner(&self, a: &Process, sid: &str) -> anyhow::Result<()> {
        let pid = a.service.pid().expect("worker A runs");
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()?;
        assert!(killed.success());
        eventually(WAIT, "no responders for the dead owner", || async {
            let probe = self.client.request(
                self.subjects.call_owner(sid),
                switchboard_proto::OwnerProbe { epoch: 0 }
                    .encode_to_vec()
                    .into(),
            );
            let answer = tokio::time::timeout(std::time::Duration::from_millis(200), probe)
                .await
                .ok()?;
            matches!(answer, Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders)
                .then_some(())
        })
        .await
    }

    async fn offer(&self, offer: CallOffer) -> anyhow::Result<OfferReply> {
        let reply = tokio::time::timeout(
            WAIT,
            self.client
                .request(self.subjects.offer(), offer.encode_to_vec().into()),
        )
        .await??;
        Ok(OfferReply::decode(reply.payload)?)
    }

    async fn events_until(
        &self,
        call_sid: &str,
        what: &str,
        done: impl Fn(&[switchboard_proto::CallEvent]) -> bool,
    ) -> anyhow::Result<Vec<switchboard_proto::CallEvent>> {
        eventually(WAIT, what, || async {
            let log = call_worker::takeover::read(&self.js, &self.subjects, call_sid)
                .await
                .ok()?;
            done(&log.events).then_some(log.events)
        })
        .await
    }
}

const TOOL_SCRIPT: &str = "[session]\nspeed = 20.0\n\
    hear = [\"Book me for nine.\"]\n\
    [[response]]\ncall = { name = \"book_appointment\", arguments = '{\"time\":\"9:00\"}' }\n\
    [[response]]\nsay = \"You are booked.\"\n";

#[tokio::test]
async fn a_tool_in_flight_when_its_owner_dies_runs_once() -> anyhow::Result<()> {
    use std::collections::HashMap;
    use std::sync::Arc;
    use switchboard_proto::tool_invocation;
    use tokio::sync::Mutex;

    let (nats, sim, _dir, agents, h) = Observer::start(TOOL_SCRIPT, &["book_appointment"]).await?;
    let subjects = h.subjects.clone();

    // Worker A first: it creates the tool registry the tool service then registers in.
    let a = worker(&nats, &sim, &agents, "worker-a").await?;
    // A slow, idempotent tool that counts how often its handler runs, per call id.
    let runs: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let tool = tool_workers::Tool::new(
        "book_appointment",
        "Books an appointment.",
        serde_json::json!({"type": "object", "properties": {"time": {"type": "string"}}}),
        {
            let runs = Arc::clone(&runs);
            move |ctx: tool_workers::ToolContext, _args: serde_json::Value| {
                let runs = Arc::clone(&runs);
                async move {
                    *runs.lock().await.entry(ctx.call_id.clone()).or_default() += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
                    Ok(serde_json::json!({"booked": "9:00", "confirmation": "K7"}))
                }
            }
        },
    )?;
    let stop = tokio_util::sync::CancellationToken::new();
    let _serving = tool_workers::ToolServer::new()
        .tool(tool)
        .start(
            async_nats::connect(nats.url()).await?,
            &subjects,
            stop.clone(),
        )
        .await?;
    // The worker sees the tool once its registry watch has it.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let sid = "CAtakeover2";
    let mut gw = h.call_taken_by_a(sid).await?;
    // The call is written ahead, then worker A dies while the tool runs.
    let events = h
        .events_until(sid, "the dispatched tool call", |evs| {
            evs.iter()
                .any(|e| matches!(e.body, Some(Body::Dispatched(_))))
        })
        .await?;
    let call_id = events
        .iter()
        .find_map(|e| match &e.body {
            Some(Body::Dispatched(d)) => Some(d.call_id.clone()),
            _ => None,
        })
        .expect("dispatched");
    let pid = a.service.pid().expect("worker A runs");
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()?
            .success()
    );

    let _b = worker(&nats, &sim, &agents, "worker-b").await?;
    let reply = h
        .offer(CallOffer {
            call_sid: sid.into(),
            gateway_id: "gw-test".into(),
            epoch: 1,
            takeover: OwnerReason::WorkerLost.as_str().into(),
            previous_worker_id: "worker-a".into(),
            ..Default::default()
        })
        .await?;
    assert!(reply.accepted && reply.epoch == 1, "{reply:?}");
    gw.start_for(1, true).await?;

    // Worker B sends the same call again; the tool answers it from its first run.
    let events = h
        .events_until(sid, "the tool's result", |evs| {
            evs.iter().any(|e| matches!(e.body, Some(Body::Tool(_))))
        })
        .await?;
    let (seq, tool) = events
        .iter()
        .find_map(|e| match &e.body {
            Some(Body::Tool(t)) => Some((e.seq, t.clone())),
            _ => None,
        })
        .expect("tool");
    assert_eq!(tool.call_id, call_id);
    assert_eq!(epoch_of(seq), 1, "recorded by the new owner");
    assert!(matches!(&tool.result, Some(tool_invocation::Result::Output(o)) if o.contains("K7")));
    assert_eq!(
        runs.lock().await.get(&call_id).copied(),
        Some(1),
        "the handler ran once"
    );

    // The new session got the call and its output, then was asked to answer.
    let session = eventually(WAIT, "the output in the new session", || async {
        let s = sim.sessions().await.get(1)?.clone();
        s.client_events
            .iter()
            .any(|e| {
                matches!(e, ClientEvent::ConversationItemCreate { item: Item::FunctionCallOutput { call_id: c, .. }, .. } if *c == call_id)
            })
            .then_some(s)
    })
    .await?;
    let items: Vec<&Item> = session
        .client_events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::ConversationItemCreate { item, .. } => Some(item),
            _ => None,
        })
        .collect();
    assert!(
        items
            .iter()
            .any(|i| matches!(i, Item::FunctionCall { call_id: c, .. } if *c == call_id)),
        "{items:?}"
    );
    assert!(session.client_events.iter().any(is_response_create));
    stop.cancel();
    Ok(())
}

/// Offers until a worker answers within a second (a stopped worker in the queue group leaves
/// some offers unanswered).
async fn offer_answered(h: &Observer, offer: &CallOffer) -> anyhow::Result<OfferReply> {
    eventually(WAIT, "an answered offer", || async {
        let request = h
            .client
            .request(h.subjects.offer(), offer.encode_to_vec().into());
        let reply = tokio::time::timeout(std::time::Duration::from_secs(1), request)
            .await
            .ok()?
            .ok()?;
        let reply = OfferReply::decode(reply.payload).ok()?;
        reply.accepted.then_some(reply)
    })
    .await
}

#[tokio::test]
async fn a_paused_owner_taken_over_never_speaks_again() -> anyhow::Result<()> {
    let (nats, sim, _dir, agents, h) = Observer::start(SCRIPT, &[]).await?;
    let a = worker(&nats, &sim, &agents, "worker-a").await?;
    let sid = "CAtakeover3";
    let mut gw = h.call_taken_by_a(sid).await?;
    gw.receive_audio("We open at eight.".split(' ').count() * 250 * 8)
        .await?;

    // Worker A is paused (a partition, as far as the call can tell); B takes the call over.
    let pid = a.service.pid().expect("worker A runs").to_string();
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
    };
    assert!(signal("-STOP")?.success());
    let b = worker(&nats, &sim, &agents, "worker-b").await?;
    let takeover = CallOffer {
        call_sid: sid.into(),
        gateway_id: "gw-test".into(),
        epoch: 1,
        takeover: OwnerReason::WorkerLost.as_str().into(),
        previous_worker_id: "worker-a".into(),
        ..Default::default()
    };
    let reply = offer_answered(&h, &takeover).await?;
    assert_eq!((reply.worker_id.as_str(), reply.epoch), ("worker-b", 1));
    gw.start_for(1, true).await?;

    // A wakes up: it learns it lost the call and says nothing more (at most a heartbeat it
    // had due), while B serves the caller.
    assert!(signal("-CONT")?.success());
    eventually(WAIT, "worker A lets the call go", || async {
        (gauge(&a.addr, "worker_active_calls").await.ok()? == 0.0).then_some(())
    })
    .await?;
    gw.speak(600).await?;
    gw.silence(700).await?;
    let mut audio = 0;
    while audio == 0 {
        let f = gw.raw(WAIT).await.expect("worker B answers");
        match (&f.frame, f.epoch) {
            (Some(Frame::Audio(a)), 1) => audio += a.payload.len(),
            (Some(Frame::Heartbeat(hb)), 0) => assert_eq!(hb.worker_id, "worker-a"),
            (_, 1) => {}
            (other, epoch) => panic!("epoch {epoch} sent {other:?} after the takeover"),
        }
    }
    assert_eq!(gauge(&b.addr, "worker_active_calls").await?, 1.0);
    gw.stop().await?;
    let events = h
        .events_until(sid, "the end", |evs| {
            evs.iter().any(|e| matches!(e.body, Some(Body::Ended(_))))
        })
        .await?;
    let ends: Vec<u32> = events
        .iter()
        .filter(|e| matches!(e.body, Some(Body::Ended(_))))
        .map(|e| epoch_of(e.seq))
        .collect();
    assert_eq!(ends, [1], "only the new owner ends the call");
    Ok(())
}
