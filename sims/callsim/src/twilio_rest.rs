//! A fake of Twilio's REST API for outbound calls and call control, backed by the call simulator.
//!
//! `Calls.json` creates a call and then places it the way Twilio does: status callbacks
//! `initiated`, `ringing`, `in-progress` (signed, with `SequenceNumber`), the signed voice
//! webhook at the given `Url` with `Direction=outbound-api`, the media stream playing the
//! configured caller script, and `completed` (with `CallDuration`) once the call is over.
//! `Calls/{sid}.json` updates a live call: `Status=completed` hangs it up; `Twiml` with a `<Dial>`
//! records the transfer target and ends the stream, as Twilio leaves `<Connect>` for the new
//! TwiML; `Twiml` with a `<Connect><Stream>` replaces the call's stream with a new one (the
//! document's `action` and `statusCallback` must be absolute URLs, as Twilio requires of TwiML in
//! an update: error 15004 otherwise). Every request is recorded for tests to inspect.
//!
//! What bulk dialing meets (outcomes per number, answering-machine verdicts, the account's
//! calls-per-second queue, 20429s) is [`crate::twilio_dialing`]'s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use switchboard_twilio::signature::Validator;
use switchboard_twilio::twiml::{Instructions, Verb};
use switchboard_twilio::webhook::CallForm;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{CallConfig, random_hex};
use crate::report::CallReport;
use crate::script::CallerScript;
use crate::twilio_dialing::{Dialing, Plan};

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestRequest {
    /// The path, e.g. `/2010-04-01/Accounts/AC../Calls.json`.
    pub path: String,
    /// The form pairs, in order.
    pub form: Vec<(String, String)>,
}

impl RestRequest {
    /// The first value of form field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What happened to one call the fake placed.
#[derive(Debug, Clone, Default)]
pub struct FakeCall {
    /// `queued`, `in-progress`, `completed`.
    pub status: String,
    /// The number a `<Dial>` update transferred the call to.
    pub transferred_to: Option<String>,
    /// TwiML documents the call was updated with.
    pub twiml: Vec<String>,
    /// The simulated call's report, once it ended.
    pub report: Option<CallReport>,
    /// A call created with `Twiml` (to a person, not the gateway): what its `<Say>` told the
    /// person who answered.
    pub said: Vec<String>,
    /// An error that prevented the simulated call, if any.
    pub error: Option<String>,
}

struct Inner {
    /// Gateway, public URL, account and auth token; `from`/`to`/`call_sid` come per call.
    cfg: CallConfig,
    script: CallerScript,
    http: reqwest::Client,
    requests: Mutex<Vec<RestRequest>>,
    calls: Mutex<HashMap<String, FakeCall>>,
    /// Ends a live call (hang-up or transfer).
    hangups: Mutex<HashMap<String, CancellationToken>>,
    /// Replaces a live call's TwiML with a new `<Connect><Stream>`.
    redirects: Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<String>>>,
    /// Outcomes, queueing and request limits of bulk dialing.
    dialing: Dialing,
    stop: CancellationToken,
    /// Every task the fake runs (its server, calls, dials, AMD callbacks).
    tasks: tokio_util::task::TaskTracker,
}

/// A running fake Twilio REST server.
pub struct FakeTwilio {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
    }
}

/// Why the fake could not start.
#[derive(Debug, thiserror::Error)]
pub enum FakeTwilioError {
    #[error("binding the fake Twilio API: {0}")]
    Bind(#[from] std::io::Error),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("invalid caller script: {0}")]
    Script(String),
}

impl FakeTwilio {
    /// Serves on 127.0.0.1:<random port>. `cfg` says which gateway answers calls (its `PUBLIC_URL`,
    /// account and auth token, which is also the API password); `script` is what every callee
    /// does once connected.
    pub async fn start(cfg: CallConfig, script: CallerScript) -> Result<Self, FakeTwilioError> {
        Self::start_on(
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
            cfg,
            script,
        )
        .await
    }

    /// Like [`FakeTwilio::start`], on `listen` (when the gateway must know the address first).
    pub async fn start_on(
        listen: SocketAddr,
        cfg: CallConfig,
        script: CallerScript,
    ) -> Result<Self, FakeTwilioError> {
        script
            .validate()
            .map_err(|e| FakeTwilioError::Script(e.to_string()))?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let inner = Arc::new(Inner {
            cfg,
            script,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(15))
                .build()?,
            requests: Mutex::new(Vec::new()),
            calls: Mutex::new(HashMap::new()),
            hangups: Mutex::new(HashMap::new()),
            redirects: Mutex::new(HashMap::new()),
            dialing: Dialing::default(),
            stop: CancellationToken::new(),
            tasks: tokio_util::task::TaskTracker::new(),
        });
        let app = Router::new()
            .route("/2010-04-01/Accounts/{account}/Calls.json", post(create))
            .route("/2010-04-01/Accounts/{account}/Calls/{call}", post(update))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let stop = inner.stop.clone();
        inner.tasks.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "fake Twilio API stopped");
            }
        });
        Ok(Self { addr, inner })
    }

    /// The base URL to give the gateway as `TWILIO_API_BASE`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub async fn requests(&self) -> Vec<RestRequest> {
        self.inner.requests.lock().await.clone()
    }

    /// The calls placed so far, by CallSid.
    pub async fn calls(&self) -> HashMap<String, FakeCall> {
        self.inner.calls.lock().await.clone()
    }

    /// Outcomes per number, the account's limits, and what bulk dialing did.
    pub fn dialing(&self) -> &Dialing {
        &self.inner.dialing
    }
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        axum::Json(
            serde_json::json!({ "code": code, "message": message, "status": status.as_u16() }),
        ),
    )
        .into_response()
}

/// Checks `Authorization: Basic AccountSid:AuthToken` and the account in the path.
fn authorized(inner: &Inner, headers: &HeaderMap, account: &str) -> bool {
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let expected = format!("{}:{}", inner.cfg.account_sid, inner.cfg.auth_token);
    decoded == expected.as_bytes() && account == inner.cfg.account_sid
}

fn parse_form(body: &[u8]) -> Option<Vec<(String, String)>> {
    serde_urlencoded::from_bytes(body).ok()
}

/// What every REST request goes through: the form is parsed, the request recorded (for tests
/// to inspect, authorized or not, as Twilio's request log would) and its credentials checked.
async fn receive(
    inner: &Inner,
    headers: &HeaderMap,
    account: &str,
    path: String,
    body: &[u8],
) -> Result<RestRequest, Response> {
    let Some(form) = parse_form(body) else {
        return Err(twilio_error(
            StatusCode::BAD_REQUEST,
            20001,
            "malformed form body",
        ));
    };
    let request = RestRequest { path, form };
    inner.requests.lock().await.push(request.clone());
    if !authorized(inner, headers, account) {
        return Err(twilio_error(
            StatusCode::UNAUTHORIZED,
            20003,
            "Authenticate",
        ));
    }
    Ok(request)
}

async fn create(
    State(inner): State<Arc<Inner>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let path = format!("/2010-04-01/Accounts/{account}/Calls.json");
    let request = match receive(&inner, &headers, &account, path, &body).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    let Some(_slot) = inner.dialing.enter().await else {
        return twilio_error(
            StatusCode::TOO_MANY_REQUESTS,
            20429,
            "Too Many Requests: concurrent request limit exceeded",
        );
    };
    tokio::time::sleep(inner.dialing.request_latency().await).await;
    if let (Some(to), Some(from), Some(twiml), None) = (
        request.get("To"),
        request.get("From"),
        request.get("Twiml"),
        request.get("Url"),
    ) {
        return create_person_call(&inner, &account, &request, to, from, twiml).await;
    }
    let (Some(to), Some(from), Some(url)) =
        (request.get("To"), request.get("From"), request.get("Url"))
    else {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21205,
            "To, From and Url are required",
        );
    };
    let Some(webhook_path) = public_path(&inner.cfg, url) else {
        return twilio_error(StatusCode::BAD_REQUEST, 21205, "Url is not the gateway's");
    };
    let amd = match crate::twilio_dialing::wants_async_amd(|k| request.get(k).map(str::to_owned)) {
        Ok(amd) => amd,
        Err(e) => return twilio_error(StatusCode::BAD_REQUEST, 21626, &e.to_string()),
    };
    let amd_path = request
        .get("AsyncAmdStatusCallback")
        .filter(|_| amd.is_some())
        .and_then(|u| public_path(&inner.cfg, u));
    let call_sid = format!("CA{}", random_hex());
    let plan = inner.dialing.plan(&call_sid, to, amd).await;
    let mut cfg = inner.cfg.clone();
    cfg.call_sid = Some(call_sid.clone());
    cfg.from = from.to_owned();
    cfg.to = to.to_owned();
    cfg.direction = "outbound-api".to_owned();
    cfg.webhook_path = webhook_path;
    let status_path = request
        .get("StatusCallback")
        .and_then(|u| public_path(&inner.cfg, u));
    let hangup = inner.stop.child_token();
    inner
        .hangups
        .lock()
        .await
        .insert(call_sid.clone(), hangup.clone());
    let (redirect, redirects) = tokio::sync::mpsc::unbounded_channel();
    inner
        .redirects
        .lock()
        .await
        .insert(call_sid.clone(), redirect);
    inner.calls.lock().await.insert(
        call_sid.clone(),
        FakeCall {
            status: "queued".to_owned(),
            ..Default::default()
        },
    );
    inner.tasks.spawn(run_call(
        inner.clone(),
        cfg,
        status_path,
        (plan, amd_path),
        hangup,
        redirects,
    ));
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({
            "sid": call_sid, "status": "queued", "to": to, "from": from,
            "account_sid": account, "direction": "outbound-api",
        })),
    )
        .into_response()
}

async fn update(
    State(inner): State<Arc<Inner>>,
    Path((account, call)): Path<(String, String)>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let path = format!("/2010-04-01/Accounts/{account}/Calls/{call}");
    let request = match receive(&inner, &headers, &account, path, &body).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    let Some(call_sid) = call.strip_suffix(".json") else {
        return twilio_error(StatusCode::NOT_FOUND, 20404, "not found");
    };
    let mut calls = inner.calls.lock().await;
    let Some(state) = calls.get_mut(call_sid).filter(|c| c.status != "completed") else {
        return twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        );
    };
    let mut end = request.get("Status") == Some("completed");
    let mut redirect = None;
    if let Some(twiml) = request.get("Twiml") {
        state.twiml.push(twiml.to_owned());
        match Instructions::parse(twiml) {
            Ok(Instructions(verbs)) => {
                if let Some(relative) = relative_url(&verbs) {
                    return twilio_error(
                        StatusCode::BAD_REQUEST,
                        15004,
                        &format!("TwiML in a call update needs absolute URLs: {relative}"),
                    );
                }
                // New TwiML replaces `<Connect>`: the stream ends either way. The call follows
                // a document that may lead to a new stream (a `<Connect><Stream>`, keys played
                // before one, a `<Dial>` whose action decides what comes next); any other ends
                // the call once it has run.
                if crate::call::continues(&verbs) {
                    redirect = Some(twiml.to_owned());
                } else {
                    end = true;
                }
                if let Some(to) = verbs.iter().find_map(|v| match v {
                    Verb::Dial { number, .. } => Some(number.clone()),
                    _ => None,
                }) {
                    state.transferred_to = Some(to);
                }
            }
            Err(e) => {
                return twilio_error(
                    StatusCode::BAD_REQUEST,
                    21220,
                    &format!("invalid TwiML: {e}"),
                );
            }
        }
    }
    drop(calls);
    if let Some(doc) = redirect
        && let Some(redirects) = inner.redirects.lock().await.get(call_sid)
    {
        let _ = redirects.send(doc);
    }
    if end && let Some(token) = inner.hangups.lock().await.get(call_sid) {
        token.cancel();
    }
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({ "sid": call_sid, "status": "in-progress" })),
    )
        .into_response()
}

/// `Calls.json` with `Twiml`: a call to a person (a warm transfer's human), who behaves as
/// the configured callees say ([`crate::dial`]): the call rings for `Timeout` (60 s when
/// absent, as Twilio's default), is answered or not, and its `StatusCallback` gets the
/// `answered` event (`CallStatus=in-progress`) and the final one (`completed`, or `busy`,
/// `no-answer`, `failed`), as requested in `StatusCallbackEvent`. An answered call runs its
/// TwiML: `<Say>` is recorded as heard, `<Dial><Conference>` joins the account's conference.
async fn create_person_call(
    inner: &Arc<Inner>,
    account: &str,
    request: &RestRequest,
    to: &str,
    from: &str,
    twiml: &str,
) -> Response {
    let verbs = match Instructions::parse(twiml) {
        Ok(Instructions(verbs)) => verbs,
        Err(e) => {
            return twilio_error(
                StatusCode::BAD_REQUEST,
                21220,
                &format!("invalid TwiML: {e}"),
            );
        }
    };
    let timeout = match request.get("Timeout").map(str::parse::<u64>) {
        None => std::time::Duration::from_secs(60),
        Some(Ok(s)) => std::time::Duration::from_secs(s),
        Some(Err(_)) => {
            return twilio_error(StatusCode::BAD_REQUEST, 21216, "Timeout is not a number");
        }
    };
    let events: Vec<String> = request
        .form
        .iter()
        .filter(|(k, _)| k == "StatusCallbackEvent")
        .map(|(_, v)| v.clone())
        .collect();
    let status_path = request
        .get("StatusCallback")
        .and_then(|u| public_path(&inner.cfg, u));
    let call_sid = format!("CA{}", random_hex());
    let mut cfg = inner.cfg.clone();
    cfg.call_sid = Some(call_sid.clone());
    cfg.from = from.to_owned();
    cfg.to = to.to_owned();
    inner.calls.lock().await.insert(
        call_sid.clone(),
        FakeCall {
            status: "queued".to_owned(),
            twiml: vec![twiml.to_owned()],
            ..Default::default()
        },
    );
    let plan = crate::dial::plan(cfg.callees.get(to), timeout);
    let (inner_, sid) = (inner.clone(), call_sid.clone());
    inner.tasks.spawn(async move {
        let inner = inner_;
        let event = |name: &str| {
            events.is_empty() && name == "completed" || events.iter().any(|e| e == name)
        };
        let mut seq = 0;
        if let Some(answered_at) = plan.answered_at {
            tokio::time::sleep(answered_at).await;
            set_status(&inner, &sid, "in-progress").await;
            if let (true, Some(path)) = (event("answered"), &status_path) {
                send_status(&inner, &cfg, path, "in-progress", seq, None).await;
                seq += 1;
            }
            for verb in &verbs {
                match verb {
                    Verb::Say(text) => {
                        if let Some(c) = inner.calls.lock().await.get_mut(&sid) {
                            c.said.push(text.clone());
                        }
                    }
                    Verb::Conference { name, starts, .. } if *starts => {
                        cfg.conferences.start(name).await;
                    }
                    _ => {}
                }
            }
            tokio::time::sleep(plan.wait.saturating_sub(answered_at)).await;
            for verb in &verbs {
                if let Verb::Conference {
                    name, ends: true, ..
                } = verb
                {
                    cfg.conferences.end(name).await;
                }
            }
        } else {
            tokio::time::sleep(plan.wait).await;
        }
        let status = plan.status;
        set_status(&inner, &sid, status).await;
        if let (true, Some(path)) = (event("completed"), &status_path) {
            let duration = plan
                .answered_at
                .map(|a| u32::try_from(plan.wait.saturating_sub(a).as_secs()).unwrap_or(u32::MAX));
            send_status(&inner, &cfg, path, status, seq, duration).await;
        }
    });
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({
            "sid": call_sid, "status": "queued", "to": to, "from": from,
            "account_sid": account, "direction": "outbound-api",
        })),
    )
        .into_response()
}

/// A URL of a `<Connect><Stream>` that is not absolute (`action`, `statusCallback`).
fn relative_url(verbs: &[Verb]) -> Option<String> {
    verbs.iter().find_map(|v| match v {
        Verb::ConnectStream {
            action,
            status_callback,
            ..
        } => [action, status_callback]
            .into_iter()
            .flatten()
            .find(|u| !(u.starts_with("https://") || u.starts_with("http://")))
            .cloned(),
        _ => None,
    })
}

/// The path (with query) of `url` under the gateway's public URL.
fn public_path(cfg: &CallConfig, url: &str) -> Option<String> {
    let rest = url.strip_prefix(cfg.public_base())?;
    (rest.starts_with('/')).then(|| rest.to_owned())
}

/// Places the call and reports its progress, as Twilio does.
async fn run_call(
    inner: Arc<Inner>,
    cfg: CallConfig,
    status_path: Option<String>,
    (plan, amd_path): (Plan, Option<String>),
    hangup: CancellationToken,
    redirects: crate::call::Redirects,
) {
    let call_sid = cfg.call_sid.clone().unwrap_or_default();
    tokio::time::sleep_until(plan.dequeue_at).await;
    inner.dialing.dequeued(&call_sid).await;
    let callback = |status: &'static str, seq: u32, duration: Option<u32>| {
        let (inner, cfg, status_path) = (inner.clone(), cfg.clone(), status_path.clone());
        async move {
            if let Some(path) = status_path {
                send_status(&inner, &cfg, &path, status, seq, duration).await;
            }
        }
    };
    callback("initiated", 0, None).await;
    callback("ringing", 1, None).await;
    if let Some(status) = plan.outcome.unanswered_status() {
        if status == "no-answer" {
            tokio::time::sleep(plan.ring).await;
        }
        set_status(&inner, &call_sid, status).await;
        inner.hangups.lock().await.remove(&call_sid);
        inner.redirects.lock().await.remove(&call_sid);
        inner.dialing.ended(&call_sid).await;
        callback(status, 2, Some(0)).await;
        return;
    }
    if let (Some((after, answered_by)), Some(path)) = (plan.verdict, amd_path) {
        let tasks = inner.tasks.clone();
        let (inner, cfg) = (inner.clone(), cfg.clone());
        tasks.spawn(async move {
            tokio::time::sleep(after).await;
            inner
                .dialing
                .verdict(&cfg.call_sid.clone().unwrap_or_default(), answered_by)
                .await;
            send_amd(&inner, &cfg, &path, answered_by.as_str(), after).await;
        });
    }
    set_status(&inner, &call_sid, "in-progress").await;
    callback("in-progress", 2, None).await;
    let answered = Instant::now();
    let result = crate::call::place_call_with(&cfg, &inner.script, &hangup, Some(redirects)).await;
    let duration = u32::try_from(answered.elapsed().as_secs()).unwrap_or(u32::MAX);
    {
        let mut calls = inner.calls.lock().await;
        let state = calls.entry(call_sid.clone()).or_default();
        state.status = "completed".to_owned();
        match result {
            Ok(report) => state.report = Some(report),
            Err(e) => state.error = Some(e.to_string()),
        }
    }
    inner.hangups.lock().await.remove(&call_sid);
    inner.redirects.lock().await.remove(&call_sid);
    inner.dialing.ended(&call_sid).await;
    callback("completed", 3, Some(duration)).await;
}

async fn set_status(inner: &Inner, call_sid: &str, status: &str) {
    if let Some(c) = inner.calls.lock().await.get_mut(call_sid) {
        c.status = status.to_owned();
    }
}

/// Posts the signed asynchronous AMD verdict to the gateway, with the fields Twilio sends.
async fn send_amd(
    inner: &Inner,
    cfg: &CallConfig,
    path: &str,
    answered_by: &str,
    took: std::time::Duration,
) {
    let pairs: Vec<(String, String)> = [
        ("CallSid", cfg.call_sid.clone().unwrap_or_default()),
        ("AccountSid", cfg.account_sid.clone()),
        ("AnsweredBy", answered_by.to_owned()),
        ("MachineDetectionDuration", took.as_millis().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    post_signed(inner, cfg, path, &pairs, "AMD callback").await;
}

/// Posts a signed callback to the gateway.
async fn post_signed(
    inner: &Inner,
    cfg: &CallConfig,
    path: &str,
    pairs: &[(String, String)],
    what: &str,
) {
    let validator = Validator::new(cfg.auth_token.clone(), cfg.public_base());
    let sent = inner
        .http
        .post(format!("{}{path}", cfg.gateway_base()))
        .header("X-Twilio-Signature", validator.sign(path, pairs))
        .form(pairs)
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!(status = %r.status(), what, "callback refused"),
        Err(error) => tracing::warn!(%error, what, "callback failed"),
    }
}

/// Posts one signed status callback to the gateway.
async fn send_status(
    inner: &Inner,
    cfg: &CallConfig,
    path: &str,
    status: &str,
    seq: u32,
    duration: Option<u32>,
) {
    let form = CallForm {
        call_sid: cfg.call_sid.clone().unwrap_or_default(),
        account_sid: cfg.account_sid.clone(),
        from: cfg.from.clone(),
        to: cfg.to.clone(),
        call_status: status.to_owned(),
        direction: "outbound-api".to_owned(),
        call_duration: duration,
        sequence_number: Some(seq),
    };
    post_signed(inner, cfg, path, &form.to_pairs(), "status callback").await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_twilio::twiml::{ConnectStream, Response};

    fn stream_doc(action: Option<&str>, status_callback: Option<&str>) -> Vec<Verb> {
        let xml = Response::new()
            .connect(&ConnectStream {
                url: "wss://gw.example.com/media",
                parameters: &[("token", "t")],
                action,
                status_callback,
            })
            .build();
        Instructions::parse(&xml).unwrap().0
    }

    #[test]
    fn twiml_in_an_update_needs_absolute_urls() {
        let absolute = "https://gw.example.com/twilio-connect-action?attach=1";
        let status = "https://gw.example.com/twilio-stream-status";
        assert_eq!(
            relative_url(&stream_doc(Some(absolute), Some(status))),
            None
        );
        assert_eq!(relative_url(&stream_doc(None, None)), None);
        assert_eq!(
            relative_url(&stream_doc(Some("/twilio-connect-action"), Some(status))),
            Some("/twilio-connect-action".to_owned())
        );
        assert_eq!(
            relative_url(&stream_doc(Some(absolute), Some("twilio-stream-status"))),
            Some("twilio-stream-status".to_owned())
        );
    }
}
