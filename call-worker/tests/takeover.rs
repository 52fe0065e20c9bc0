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
    let nats = NatsServer::start().await?;
    let sim = SimServer::start("127.0.0.1:0", Script::from_toml_str(SCRIPT)?).await?;
    let dir = tempfile::tempdir()?;
    let agents = dir.path().join("agents.toml");
    std::fs::write(&agents, agents_toml(None, &[]))?;
    let agents = agents.display().to_string();
    let client = async_nats::connect(nats.url()).await?;
    let js = async_nats::jetstream::new(client.clone());
    let subjects = Subjects::default();
    let h = Observer {
        client: client.clone(),
        js,
        subjects: subjects.clone(),
    };

    let a = worker(&nats, &sim, &agents, "worker-a").await?;
    let sid = "CAtakeover1";
    let mut gw = Gateway::connect(&client, &subjects, sid).await?;
    let reply = h
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
    assert!(reply.accepted && reply.worker_id == "worker-a", "{reply:?}");
    gw.start().await?;
    let mut echoed = 0;
    gw.speak(600).await?;
    gw.silence(700).await?;
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
    let pid = a.service.pid().expect("worker A runs");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()?;
    assert!(killed.success());
    // Its probe subscription went with it: "no responders" at once.
    let probe = client
        .request(
            subjects.call_owner(sid),
            switchboard_proto::OwnerProbe { epoch: 0 }
                .encode_to_vec()
                .into(),
        )
        .await;
    assert!(probe.is_err(), "a dead owner cannot answer");

    let b = worker(&nats, &sim, &agents, "worker-b").await?;
    let killed_at = switchboard_proto::now_ms();
    // A stale epoch is refused; the next one is taken.
    let takeover = |epoch| CallOffer {
        call_sid: sid.into(),
        gateway_id: "gw-test".into(),
        offered_at_ms: switchboard_proto::now_ms(),
        epoch,
        takeover: OwnerReason::WorkerLost.as_str().into(),
        previous_worker_id: "worker-a".into(),
        owner_silent_since_ms: killed_at,
        ..Default::default()
    };
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

/// The test's view of NATS and the call log.
struct Observer {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    subjects: Subjects,
}

impl Observer {
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
