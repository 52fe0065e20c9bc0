//! A call's webhook deliveries on its console page, in a real headless Chromium: the persister
//! (in-process, `NOTIFIER_URL` set) reads them from the notifier's delivery log and the page
//! shows each delivery's endpoint, event type, state, attempts, last status and last error,
//! under the console's Content-Security-Policy without a violation.
//!
//! Chromium is required (`scripts/setup` installs it); without it this test fails.

mod common;

use common::*;
use serde_json::json;
use switchboard_testkit::browser::{Browser, Cdp};

/// The persister in-process on the fixture's NATS and a database of its own.
struct Console {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), persister::RunError>>,
}

impl Console {
    async fn start(fx: &Fixture, notifier: &Notifier) -> anyhow::Result<Self> {
        let db = fx.pg.create_database("switchboard").await?;
        let listen = format!("127.0.0.1:{}", free_port());
        let config = persister::Config {
            listen: listen.parse()?,
            database_url: Secret::new(db),
            admin_token: Some(Secret::new(TOKEN)),
            public_url: None,
            session_ttl_seconds: persister::console_sessions::DEFAULT_TTL.as_secs(),
            prices: Default::default(),
            live_client_buffer: persister::live::DEFAULT_CLIENT_BUFFER,
            drain_seconds: 2,
            web_call: Default::default(),
            webhook_log: persister::webhook_log::WebhookLogArgs {
                notifier_url: Some(notifier.base.clone()),
            },
            nats: NatsArgs::for_url(fx.nats.url()),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(persister::run(config, async move {
            let _ = stopped.await;
        }));
        let base = format!("http://{listen}");
        let url = format!("{base}/readyz");
        eventually(Duration::from_secs(30), "persister ready", || {
            let req = fx.http.get(&url);
            async move { (req.send().await.ok()?.status() == 200).then_some(()) }
        })
        .await?;
        Ok(Self {
            base,
            stop: Some(stop),
            task,
        })
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().map(|s| s.send(()));
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .context("the persister did not stop")???;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_page_shows_its_webhook_deliveries() -> anyhow::Result<()> {
    let (_receiver, base) = Receiver::start().await?;
    // Nothing listens on the second endpoint (yet): its attempts fail with the connection
    // refused.
    let dead_port = free_port();
    let dead = format!("http://127.0.0.1:{dead_port}/dead");
    let file = [
        endpoint(
            &format!("{base}/crm"),
            &["call.started", "call.ended"],
            true,
        ),
        endpoint(&dead, &["call.outcome"], true),
    ]
    .concat();
    let fx = Fixture::new(&file, |c| c.webhook_max_attempts = 2).await?;
    let n = fx.start().await?;
    let console = Console::start(&fx, &n).await?;
    let sid = "CA00000000000000000000000000000W01";
    for e in call(sid) {
        fx.publish(&e).await?;
    }
    eventually(WAIT, "three deliveries settled", || async {
        let log = fx.log(&n, &format!("?call_sid={sid}")).await.ok()?;
        (log.len() == 3 && log.iter().all(|d| d["state"] != "pending")).then_some(())
    })
    .await?;

    // The API: the call's deliveries, and only to the signed in.
    let url = format!("{}/api/sessions/{sid}/webhooks", console.base);
    let unsigned = fx.http.get(&url).send().await?;
    anyhow::ensure!(unsigned.status() == 401, "{}", unsigned.status());
    let log: Value = fx
        .http
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let deliveries = log["deliveries"].as_array().context("deliveries")?;
    anyhow::ensure!(deliveries.len() == 3, "{log:#}");
    anyhow::ensure!(deliveries.iter().all(|d| d["call_sid"] == sid), "{log:#}");
    let other: Value = fx
        .http
        .get(format!("{}/api/sessions/CA-other/webhooks", console.base))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(other["deliveries"] == json!([]), "{other:#}");

    let browser = Browser::launch(&[])?;
    let result = drive(&console.base, sid, &dead, dead_port, &browser).await;
    browser.kill().await;
    result?;
    // The re-sent delivery's log keeps the two failed attempts and adds the third.
    let log = fx.log(&n, &format!("?call_sid={sid}")).await?;
    let outcome = log
        .iter()
        .find(|d| d["event_type"] == "call.outcome")
        .context("the outcome delivery")?;
    let statuses: Vec<&Value> = outcome["attempt_log"]
        .as_array()
        .context("attempt_log")?
        .iter()
        .map(|a| &a["status"])
        .collect();
    assert_eq!(
        statuses,
        [&Value::Null, &Value::Null, &json!(200)],
        "{outcome:#}"
    );
    console.stop().await?;
    n.stop().await
}

const WAIT: Duration = Duration::from_secs(30);

async fn drive(
    base: &str,
    sid: &str,
    dead: &str,
    dead_port: u16,
    browser: &Browser,
) -> anyhow::Result<()> {
    let mut cdp = browser.page().await?;
    cdp.call("Page.enable", json!({})).await?;
    cdp.call(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": "window.__csp = []; document.addEventListener('securitypolicyviolation', \
            (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"}),
    )
    .await?;
    cdp.call("Page.navigate", json!({"url": format!("{base}/login")}))
        .await?;
    cdp.wait_for("the sign-in form", "!!document.getElementById('token')")
        .await?;
    cdp.eval(&format!(
        "document.getElementById('token').value = {}; document.querySelector('form').submit(); true",
        json!(TOKEN)
    ))
    .await?;
    cdp.wait_for("the calls list", "location.pathname === '/sessions'")
        .await?;
    cdp.call(
        "Page.navigate",
        json!({"url": format!("{base}/sessions/{sid}")}),
    )
    .await?;
    cdp.wait_for(
        "the call's three deliveries",
        "document.querySelectorAll('#webhooks tr.delivery').length === 3",
    )
    .await?;
    let rows = cdp
        .eval(
            "[...document.querySelectorAll('#webhooks tr.delivery')].map((tr) => \
             [...tr.cells].map((td) => td.innerText))",
        )
        .await?;
    let rows: Vec<Vec<String>> = serde_json::from_value(rows)?;
    let row = |event: &str| {
        rows.iter()
            .find(|r| r[1] == event)
            .with_context(|| format!("no {event} row in {rows:?}"))
    };
    // Endpoint, event, state, attempts, last status, last error.
    let ended = row("call.ended")?;
    assert!(ended[0].ends_with("/crm"), "{ended:?}");
    assert_eq!(&ended[2..6], ["delivered", "1", "200", "—"], "{ended:?}");
    let started = row("call.started")?;
    assert_eq!(started[2], "delivered", "{started:?}");
    let outcome = row("call.outcome")?;
    assert_eq!(outcome[0], dead, "{outcome:?}");
    assert_eq!(&outcome[2..5], ["failed", "2", "—"], "{outcome:?}");
    assert!(
        outcome[5].to_lowercase().contains("refused"),
        "the last error says why: {outcome:?}"
    );
    // Oldest first: the call started before it ended.
    let position = |event: &str| rows.iter().position(|r| r[1] == event);
    assert!(
        position("call.started") < position("call.ended"),
        "{rows:?}"
    );

    // The endpoint comes back; the failed delivery is re-sent from the page.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", dead_port)).await?;
    let back = axum::Router::new().route("/dead", axum::routing::post(|| async { StatusCode::OK }));
    tokio::spawn(async move { axum::serve(listener, back).await });
    let outcome_row = "[...document.querySelectorAll('#webhooks tr.delivery')]\
        .find((tr) => tr.cells[1].innerText === 'call.outcome')";
    let only_failed_rows_offer_it = cdp
        .eval("[...document.querySelectorAll('#webhooks button.resend')].length")
        .await?;
    assert_eq!(only_failed_rows_offer_it, json!(1));
    cdp.eval(&format!(
        "{outcome_row}.querySelector('button.resend').click(); true"
    ))
    .await?;
    cdp.wait_for(
        "the re-sent delivery delivered",
        &format!("{outcome_row}?.cells[2].innerText === 'delivered'"),
    )
    .await?;
    let cells = cdp
        .eval(&format!(
            "[...{outcome_row}.cells].map((td) => td.innerText)"
        ))
        .await?;
    assert_eq!(cells[3], "1", "a fresh attempt budget: {cells}");
    assert_eq!(cells[4], "200", "{cells}");
    no_violations(&mut cdp).await?;
    cdp.screenshot("webhook-deliveries.png").await?;
    let _ = cdp.call("Browser.close", json!({})).await;
    Ok(())
}

async fn no_violations(cdp: &mut Cdp) -> anyhow::Result<()> {
    let seen = cdp.eval("window.__csp").await?;
    anyhow::ensure!(
        seen == json!([]),
        "the call page violated the Content-Security-Policy: {seen}"
    );
    Ok(())
}
