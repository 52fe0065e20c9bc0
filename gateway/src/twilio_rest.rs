//! Twilio's REST API, the parts call control needs: create a call, update a live call (new
//! TwiML, or `Status=completed`).
//!
//! Requests go to `TWILIO_API_BASE` (so tests can point it at a fake) with HTTP Basic auth
//! `AccountSid:AuthToken` and form bodies, as Twilio documents. Callers spawn these requests:
//! nothing on a media socket ever waits for Twilio.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use switchboard_service::redact::Secret;

/// Twilio's API version in every path.
const API_VERSION: &str = "2010-04-01";
/// Twilio answers in well under a second; a hung request must not pile up tasks.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Twilio's error code for "the requested resource was not found".
const NOT_FOUND_CODE: u32 = 20404;

/// What went wrong, for deciding what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestErrorKind {
    /// No answer (connection, timeout, TLS).
    Network,
    /// Twilio refused our credentials (401/403).
    Auth,
    /// The resource does not exist (404 / 20404).
    NotFound,
    /// Twilio refused the request itself (other 4xx: bad number, unverified caller id, ...).
    Rejected,
    /// Twilio failed (5xx).
    Server,
    /// An answer we could not read.
    Decode,
}

/// A failed REST request.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("Twilio REST request failed: {0}")]
    Network(#[source] reqwest::Error),
    #[error("Twilio answered {status}: {message} (code {code})")]
    Status {
        status: u16,
        /// Twilio's error code (0 when the body had none).
        code: u32,
        message: String,
    },
    #[error("unreadable Twilio answer: {0}")]
    Decode(String),
}

impl RestError {
    /// The error's kind.
    pub fn kind(&self) -> RestErrorKind {
        match self {
            Self::Network(_) => RestErrorKind::Network,
            Self::Decode(_) => RestErrorKind::Decode,
            Self::Status { status, code, .. } => match status {
                401 | 403 => RestErrorKind::Auth,
                404 => RestErrorKind::NotFound,
                _ if *code == NOT_FOUND_CODE => RestErrorKind::NotFound,
                500.. => RestErrorKind::Server,
                _ => RestErrorKind::Rejected,
            },
        }
    }
}

/// A call to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCall {
    pub to: String,
    pub from: String,
    /// Absolute URL Twilio fetches the call's TwiML from once answered.
    pub url: String,
    /// Absolute URL for status callbacks.
    pub status_callback: String,
}

/// A call to create that runs `twiml` once answered (a warm transfer's call to the human).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTwimlCall {
    pub to: String,
    pub from: String,
    pub twiml: String,
    /// How long it rings (`Timeout`).
    pub timeout_seconds: u32,
    /// Absolute URL for its `answered` and `completed` status callbacks.
    pub status_callback: String,
}

/// The created call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CreatedCall {
    pub sid: String,
    #[serde(default)]
    pub status: String,
}

/// How a live call is changed.
#[derive(Clone, PartialEq, Eq)]
pub enum CallUpdate {
    /// Replace what the call is doing with this TwiML document.
    Twiml(String),
    /// End the call (`Status=completed`).
    Complete,
}

impl fmt::Debug for CallUpdate {
    /// The TwiML of a transfer holds the number dialed, so logs get its size only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Twiml(doc) => write!(f, "Twiml({} bytes)", doc.len()),
            Self::Complete => f.write_str("Complete"),
        }
    }
}

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Updated {
    Applied,
    /// The call had ended already (Twilio answered 404 / 20404): nothing left to do.
    AlreadyEnded,
}

/// Twilio's JSON error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<u32>,
    #[serde(default)]
    message: Option<String>,
}

/// A Twilio REST client for one account (cheap to clone).
#[derive(Clone)]
pub struct TwilioRest {
    http: reqwest::Client,
    base: String,
    account_sid: String,
    auth_token: Secret,
}

impl fmt::Debug for TwilioRest {
    /// Leaves the auth token out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioRest")
            .field("base", &self.base)
            .field("account_sid", &self.account_sid)
            .finish_non_exhaustive()
    }
}

impl TwilioRest {
    /// A client for `account_sid` against `base` (e.g. `https://api.twilio.com`).
    pub fn new(base: &str, account_sid: &str, auth_token: &Secret) -> Result<Self, RestError> {
        // reqwest needs the process-wide TLS provider; the binary installs this same one with
        // its logging, so this only matters for embedders.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(RestError::Network)?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.clone(),
        })
    }

    /// `.../Accounts/{AccountSid}/Calls.json`.
    pub fn calls_url(&self) -> String {
        format!(
            "{}/{API_VERSION}/Accounts/{}/Calls.json",
            self.base, self.account_sid
        )
    }

    /// `.../Accounts/{AccountSid}/Calls/{CallSid}.json`.
    pub fn call_url(&self, call_sid: &str) -> String {
        format!(
            "{}/{API_VERSION}/Accounts/{}/Calls/{call_sid}.json",
            self.base, self.account_sid
        )
    }

    /// Places a call; Twilio reports its progress to `status_callback`.
    pub async fn create_call(&self, call: &NewCall) -> Result<CreatedCall, RestError> {
        self.create_call_with(call, &[]).await
    }

    /// Places a call with `extra` parameters of Twilio's Calls resource (answering-machine
    /// detection, ring timeout) after the ones [`TwilioRest::create_call`] sends.
    pub async fn create_call_with(
        &self,
        call: &NewCall,
        extra: &[(&str, &str)],
    ) -> Result<CreatedCall, RestError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("To", &call.to),
            ("From", &call.from),
            ("Url", &call.url),
            ("StatusCallback", &call.status_callback),
            ("StatusCallbackMethod", "POST"),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "ringing"),
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "completed"),
        ];
        form.extend_from_slice(extra);
        let body = self.post(&self.calls_url(), &form).await?;
        serde_json::from_slice(&body).map_err(|e| RestError::Decode(e.to_string()))
    }

    /// Places a call that runs `call.twiml` when answered; Twilio reports its answer and its
    /// end (`completed`, `busy`, `no-answer`, `failed`, `canceled`) to `call.status_callback`.
    pub async fn create_twiml_call(&self, call: &NewTwimlCall) -> Result<CreatedCall, RestError> {
        let timeout = call.timeout_seconds.to_string();
        let form: Vec<(&str, &str)> = vec![
            ("To", &call.to),
            ("From", &call.from),
            ("Twiml", &call.twiml),
            ("Timeout", &timeout),
            ("StatusCallback", &call.status_callback),
            ("StatusCallbackMethod", "POST"),
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "completed"),
        ];
        let body = self.post(&self.calls_url(), &form).await?;
        serde_json::from_slice(&body).map_err(|e| RestError::Decode(e.to_string()))
    }

    /// Changes a live call. A call that already ended is not an error.
    pub async fn update_call(
        &self,
        call_sid: &str,
        update: &CallUpdate,
    ) -> Result<Updated, RestError> {
        let form: Vec<(&str, &str)> = match update {
            CallUpdate::Twiml(twiml) => vec![("Twiml", twiml)],
            CallUpdate::Complete => vec![("Status", "completed")],
        };
        match self.post(&self.call_url(call_sid), &form).await {
            Ok(_) => Ok(Updated::Applied),
            Err(e) if e.kind() == RestErrorKind::NotFound => Ok(Updated::AlreadyEnded),
            Err(e) => Err(e),
        }
    }

    async fn post(&self, url: &str, form: &[(&str, &str)]) -> Result<bytes::Bytes, RestError> {
        let response = self
            .http
            .post(url)
            .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
            .form(form)
            .send()
            .await
            .map_err(RestError::Network)?;
        let status = response.status();
        let body = response.bytes().await.map_err(RestError::Network)?;
        if status.is_success() {
            return Ok(body);
        }
        let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        let (code, message) = match parsed {
            Some(e) => (
                e.code.unwrap_or(0),
                e.message.unwrap_or_else(|| status.to_string()),
            ),
            None => (
                0,
                String::from_utf8_lossy(&body).chars().take(200).collect(),
            ),
        };
        Err(RestError::Status {
            status: status.as_u16(),
            code,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, code: u32) -> RestError {
        RestError::Status {
            status,
            code,
            message: String::new(),
        }
    }

    #[test]
    fn kinds_follow_status_and_code() {
        assert_eq!(status(404, 20404).kind(), RestErrorKind::NotFound);
        assert_eq!(status(400, 20404).kind(), RestErrorKind::NotFound);
        assert_eq!(status(401, 20003).kind(), RestErrorKind::Auth);
        assert_eq!(status(400, 21211).kind(), RestErrorKind::Rejected);
        assert_eq!(status(503, 0).kind(), RestErrorKind::Server);
        assert_eq!(RestError::Decode("x".into()).kind(), RestErrorKind::Decode);
    }

    #[test]
    fn urls_follow_twilios_layout() {
        let rest =
            TwilioRest::new("https://api.twilio.com/", "AC1", &Secret::new("sekrit")).unwrap();
        assert_eq!(
            rest.calls_url(),
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Calls.json"
        );
        assert_eq!(
            rest.call_url("CA9"),
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Calls/CA9.json"
        );
        assert!(!format!("{rest:?}").contains("sekrit"));
    }

    #[test]
    fn updates_never_print_the_number_dialed() {
        let update = CallUpdate::Twiml("<Response><Dial>+15550002222</Dial></Response>".into());
        let printed = format!("{update:?}");
        assert!(!printed.contains("5550002222"), "{printed}");
        assert_eq!(format!("{:?}", CallUpdate::Complete), "Complete");
    }
}
