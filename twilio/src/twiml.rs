//! TwiML: the XML documents that tell Twilio what to do with a call.
//!
//! [`Response`] builds the few documents Switchboard answers with; [`Instructions::parse`] reads
//! them back (callsim follows them the way Twilio would).

use quick_xml::Reader;
use quick_xml::events::Event;

/// A TwiML `<Response>` under construction.
#[derive(Debug, Default, Clone)]
pub struct Response {
    body: String,
}

impl Response {
    /// An empty `<Response>`.
    pub fn new() -> Self {
        Self::default()
    }

    /// `<Connect><Stream url=..>` with `<Parameter>`s: a bidirectional media stream.
    pub fn connect_stream(self, url: &str, parameters: &[(&str, &str)]) -> Self {
        self.connect(&ConnectStream {
            url,
            parameters,
            action: None,
            status_callback: None,
        })
    }

    /// `<Connect action=..><Stream url=.. statusCallback=.. statusCallbackMethod="POST">` with
    /// `<Parameter>`s: a bidirectional media stream whose end Twilio reports to `action`, and
    /// whose start, stop and failure it reports to `status_callback`.
    pub fn connect(mut self, stream: &ConnectStream<'_>) -> Self {
        self.body.push_str("<Connect");
        if let Some(action) = stream.action {
            self.body.push_str(" action=\"");
            self.body.push_str(&escape(action));
            self.body.push_str("\" method=\"POST\"");
        }
        self.body.push_str("><Stream url=\"");
        self.body.push_str(&escape(stream.url));
        self.body.push('"');
        if let Some(callback) = stream.status_callback {
            self.body.push_str(" statusCallback=\"");
            self.body.push_str(&escape(callback));
            self.body.push_str("\" statusCallbackMethod=\"POST\"");
        }
        self.body.push('>');
        let parameters = stream.parameters;
        for (name, value) in parameters {
            self.body.push_str("<Parameter name=\"");
            self.body.push_str(&escape(name));
            self.body.push_str("\" value=\"");
            self.body.push_str(&escape(value));
            self.body.push_str("\"/>");
        }
        self.body.push_str("</Stream></Connect>");
        self
    }

    /// `<Say>text</Say>`.
    pub fn say(mut self, text: &str) -> Self {
        self.body.push_str("<Say>");
        self.body.push_str(&escape(text));
        self.body.push_str("</Say>");
        self
    }

    /// `<Dial><Number>..</Number></Dial>`: connect the caller to a phone number.
    pub fn dial(mut self, number: &str) -> Self {
        self.body.push_str("<Dial><Number>");
        self.body.push_str(&escape(number));
        self.body.push_str("</Number></Dial>");
        self
    }

    /// `<Dial timeout=.. action=.. method="POST"><Number statusCallbackEvent="answered"
    /// statusCallback=.. statusCallbackMethod="POST">..</Number></Dial>`: connect the caller to
    /// a phone number that rings for `timeout_seconds`; Twilio requests `action` when the dial
    /// ends (with `DialCallStatus`), and reports the human answering to `answered_callback`.
    pub fn dial_with(mut self, dial: &DialNumber<'_>) -> Self {
        self.body.push_str(&format!(
            "<Dial timeout=\"{}\" action=\"{}\" method=\"POST\">",
            dial.timeout_seconds,
            escape(dial.action)
        ));
        self.body
            .push_str("<Number statusCallbackEvent=\"answered\" statusCallback=\"");
        self.body.push_str(&escape(dial.answered_callback));
        self.body.push_str("\" statusCallbackMethod=\"POST\">");
        self.body.push_str(&escape(dial.number));
        self.body.push_str("</Number></Dial>");
        self
    }

    /// `<Dial action=.. method="POST"><Conference startConferenceOnEnter=..
    /// endConferenceOnExit="true">room</Conference></Dial>`: join conference `room`. A
    /// participant who does not start it waits with Twilio's hold music until one who does
    /// joins; the conference ends when a participant with `endConferenceOnExit` leaves.
    pub fn conference(mut self, room: &ConferenceRoom<'_>) -> Self {
        self.body.push_str("<Dial");
        if let Some(action) = room.action {
            self.body.push_str(" action=\"");
            self.body.push_str(&escape(action));
            self.body.push_str("\" method=\"POST\"");
        }
        self.body.push_str(&format!(
            "><Conference startConferenceOnEnter=\"{}\" endConferenceOnExit=\"true\">",
            room.starts
        ));
        self.body.push_str(&escape(room.name));
        self.body.push_str("</Conference></Dial>");
        self
    }

    /// `<Play digits=".."/>`: play DTMF tones on the call (see [`validate_digits`]).
    pub fn play_digits(mut self, digits: &str) -> Self {
        self.body.push_str("<Play digits=\"");
        self.body.push_str(&escape(digits));
        self.body.push_str("\"/>");
        self
    }

    /// `<Hangup/>`.
    pub fn hangup(mut self) -> Self {
        self.body.push_str("<Hangup/>");
        self
    }

    /// The XML document.
    pub fn build(&self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>{}</Response>",
            self.body
        )
    }
}

/// A `<Connect><Stream>` to build ([`Response::connect`]).
#[derive(Debug, Clone, Copy)]
pub struct ConnectStream<'a> {
    /// The `wss` URL of the media socket (no query string: Twilio refuses one).
    pub url: &'a str,
    /// `<Parameter>` name/value pairs, handed back in the stream's `start`.
    pub parameters: &'a [(&'a str, &'a str)],
    /// `<Connect action>`: requested (POST) when `<Connect>` ends. Absolute where the TwiML is
    /// sent in a REST update (Twilio error 15004 otherwise).
    pub action: Option<&'a str>,
    /// `<Stream statusCallback>`: `stream-started` / `stream-stopped` / `stream-error` (POST).
    pub status_callback: Option<&'a str>,
}

/// A `<Dial>` with a ring timeout and a fallback ([`Response::dial_with`]).
#[derive(Debug, Clone, Copy)]
pub struct DialNumber<'a> {
    /// The E.164 number dialed.
    pub number: &'a str,
    /// `<Dial timeout>`: seconds the number rings (Twilio takes 5 to 600).
    pub timeout_seconds: u32,
    /// `<Dial action>` (absolute in a REST update).
    pub action: &'a str,
    /// `<Number statusCallback>` for its `answered` event (absolute).
    pub answered_callback: &'a str,
}

/// A conference to join ([`Response::conference`]).
#[derive(Debug, Clone, Copy)]
pub struct ConferenceRoom<'a> {
    /// The conference's name (per account).
    pub name: &'a str,
    /// `startConferenceOnEnter`: false holds this participant until one who starts it joins.
    pub starts: bool,
    /// `<Dial action>` (absolute in a REST update).
    pub action: Option<&'a str>,
}

/// The most keys one `<Play digits>` carries here (a long account number with pauses fits).
pub const MAX_DIGITS: usize = 64;

/// Keys `<Play digits>` cannot play.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigitsError {
    #[error("no keys given")]
    Empty,
    #[error("at most {MAX_DIGITS} keys at a time")]
    TooLong,
    #[error("`{0}` is not a key (0-9, *, # and w, a half-second pause)")]
    NotAKey(char),
}

/// Checks keys for `<Play digits>`: 0-9, `*`, `#`, and `w` (Twilio's half-second pause).
pub fn validate_digits(digits: &str) -> Result<(), DigitsError> {
    if digits.is_empty() {
        return Err(DigitsError::Empty);
    }
    if digits.len() > MAX_DIGITS {
        return Err(DigitsError::TooLong);
    }
    match digits
        .chars()
        .find(|c| !(c.is_ascii_digit() || matches!(c, '*' | '#' | 'w')))
    {
        Some(bad) => Err(DigitsError::NotAKey(bad)),
        None => Ok(()),
    }
}

/// Escapes text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// What a TwiML document asks Twilio to do, in order. Serializable so simulators can report the
/// document they followed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    /// Open a bidirectional media stream.
    ConnectStream {
        url: String,
        parameters: Vec<(String, String)>,
        /// `<Connect action>` (None: absent).
        action: Option<String>,
        /// `<Stream statusCallback>` (None: absent).
        status_callback: Option<String>,
        /// `<Stream statusCallbackMethod>` (None: absent, which means POST).
        status_callback_method: Option<String>,
    },
    /// Speak text.
    Say(String),
    /// Dial a number.
    Dial {
        number: String,
        /// `<Dial timeout>` (None: absent, Twilio's 30 s).
        timeout_seconds: Option<u32>,
        /// `<Dial action>` (None: absent; the call ends with the dial).
        action: Option<String>,
        /// `<Number statusCallback>` (None: absent).
        status_callback: Option<String>,
        /// `<Number statusCallbackEvent>` (None: absent, which means `completed`).
        status_callback_event: Option<String>,
    },
    /// Play DTMF tones (`<Play digits>`).
    PlayDigits(String),
    /// Join a conference (`<Dial><Conference>`).
    Conference {
        name: String,
        /// `startConferenceOnEnter` (absent means true).
        starts: bool,
        /// `endConferenceOnExit` (absent means false).
        ends: bool,
        /// `<Dial action>`.
        action: Option<String>,
    },
    /// Hang up.
    Hangup,
}

impl Verb {
    /// A plain `<Dial><Number>` of `number`.
    pub fn dial(number: &str) -> Self {
        Self::Dial {
            number: number.to_owned(),
            timeout_seconds: None,
            action: None,
            status_callback: None,
            status_callback_event: None,
        }
    }
}

/// A parsed TwiML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instructions(pub Vec<Verb>);

/// A document that is not TwiML we understand.
#[derive(Debug, thiserror::Error)]
#[error("invalid TwiML: {0}")]
pub struct TwimlError(String);

impl Instructions {
    /// Reads the verbs of a `<Response>`.
    pub fn parse(xml: &str) -> Result<Self, TwimlError> {
        let err = |e: &dyn std::fmt::Display| TwimlError(e.to_string());
        let mut reader = Reader::from_str(xml);
        let mut verbs = Vec::new();
        let mut stack: Vec<String> = Vec::new();
        // The `action` of the `<Connect>` being read.
        let mut connect_action: Option<String> = None;
        // The `<Dial>` being read: its `timeout` and `action`.
        let mut dial: (Option<u32>, Option<String>) = (None, None);
        // The `<Number>` being read: its `statusCallback` and `statusCallbackEvent`.
        let mut number: (Option<String>, Option<String>) = (None, None);
        // The `<Conference>` being read: `startConferenceOnEnter`, `endConferenceOnExit`.
        let mut conference = (true, false);
        let mut text = String::new();
        let mut seen_response = false;
        loop {
            let (element, empty) = match reader.read_event().map_err(|e| err(&e))? {
                Event::Start(e) => (e, false),
                Event::Empty(e) => (e, true),
                Event::Text(t) => {
                    text.push_str(&t.decode().map_err(|e| err(&e))?);
                    continue;
                }
                Event::GeneralRef(r) => {
                    let name = r.decode().map_err(|e| err(&e))?;
                    let resolved = quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or_else(|| TwimlError(format!("unknown entity &{name};")))?;
                    text.push_str(resolved);
                    continue;
                }
                Event::End(e) => {
                    match e.name().as_ref() {
                        b"Say" => {
                            verbs.push(Verb::Say(std::mem::take(&mut text).trim().to_owned()))
                        }
                        b"Number" => verbs.push(Verb::Dial {
                            number: std::mem::take(&mut text).trim().to_owned(),
                            timeout_seconds: dial.0,
                            action: dial.1.clone(),
                            status_callback: number.0.take(),
                            status_callback_event: number.1.take(),
                        }),
                        b"Conference" => verbs.push(Verb::Conference {
                            name: std::mem::take(&mut text).trim().to_owned(),
                            starts: conference.0,
                            ends: conference.1,
                            action: dial.1.clone(),
                        }),
                        _ => {}
                    }
                    stack.pop();
                    continue;
                }
                Event::Eof => break,
                _ => continue,
            };
            let name = String::from_utf8_lossy(element.name().as_ref()).into_owned();
            let attr = |key: &str| -> Result<String, TwimlError> {
                for a in element.attributes() {
                    let a = a.map_err(|e| err(&e))?;
                    if a.key.as_ref() == key.as_bytes() {
                        return a
                            .unescape_value()
                            .map(|v| v.into_owned())
                            .map_err(|e| err(&e));
                    }
                }
                Ok(String::new())
            };
            match name.as_str() {
                "Response" => seen_response = true,
                "Connect" => {
                    let action = attr("action")?;
                    connect_action = (!action.is_empty()).then_some(action);
                }
                "Stream" if stack.last().map(String::as_str) == Some("Connect") => {
                    let optional = |v: String| (!v.is_empty()).then_some(v);
                    verbs.push(Verb::ConnectStream {
                        url: attr("url")?,
                        parameters: Vec::new(),
                        action: connect_action.clone(),
                        status_callback: optional(attr("statusCallback")?),
                        status_callback_method: optional(attr("statusCallbackMethod")?),
                    });
                }
                "Parameter" => {
                    if let Some(Verb::ConnectStream { parameters, .. }) = verbs.last_mut() {
                        parameters.push((attr("name")?, attr("value")?));
                    }
                }
                "Hangup" => verbs.push(Verb::Hangup),
                "Dial" => {
                    let optional = |v: String| (!v.is_empty()).then_some(v);
                    let timeout = optional(attr("timeout")?)
                        .map(|t| {
                            t.parse::<u32>()
                                .map_err(|_| TwimlError(format!("<Dial timeout=\"{t}\">")))
                        })
                        .transpose()?;
                    dial = (timeout, optional(attr("action")?));
                }
                "Number" => {
                    let optional = |v: String| (!v.is_empty()).then_some(v);
                    number = (
                        optional(attr("statusCallback")?),
                        optional(attr("statusCallbackEvent")?),
                    );
                }
                "Conference" => {
                    conference = (
                        attr("startConferenceOnEnter")? != "false",
                        attr("endConferenceOnExit")? == "true",
                    );
                }
                "Play" => {
                    let digits = attr("digits")?;
                    if !digits.is_empty() {
                        verbs.push(Verb::PlayDigits(digits));
                    }
                }
                _ => {}
            }
            text.clear();
            if !empty {
                stack.push(name);
            }
        }
        if !seen_response {
            return Err(TwimlError("no <Response> element".into()));
        }
        Ok(Self(verbs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_document_round_trips() {
        let xml = Response::new()
            .connect_stream(
                "wss://gw.example.com/media",
                &[("token", "a&b\"c"), ("agent", "x")],
            )
            .build();
        assert!(xml.starts_with("<?xml"));
        let Instructions(verbs) = Instructions::parse(&xml).unwrap();
        assert_eq!(
            verbs,
            vec![Verb::ConnectStream {
                url: "wss://gw.example.com/media".into(),
                parameters: vec![
                    ("token".into(), "a&b\"c".into()),
                    ("agent".into(), "x".into())
                ],
                action: None,
                status_callback: None,
                status_callback_method: None,
            }]
        );
    }

    #[test]
    fn connect_action_and_stream_status_callback_round_trip() {
        let xml = Response::new()
            .connect(&ConnectStream {
                url: "wss://gw.example.com/media",
                parameters: &[("token", "t")],
                action: Some("https://gw.example.com/twilio-connect-action?a=1&b=2"),
                status_callback: Some("https://gw.example.com/twilio-stream-status"),
            })
            .build();
        assert!(xml.contains("<Connect action=\"https://gw.example.com/twilio-connect-action?a=1&amp;b=2\" method=\"POST\">"), "{xml}");
        let Instructions(verbs) = Instructions::parse(&xml).unwrap();
        assert_eq!(
            verbs,
            vec![Verb::ConnectStream {
                url: "wss://gw.example.com/media".into(),
                parameters: vec![("token".into(), "t".into())],
                action: Some("https://gw.example.com/twilio-connect-action?a=1&b=2".into()),
                status_callback: Some("https://gw.example.com/twilio-stream-status".into()),
                status_callback_method: Some("POST".into()),
            }]
        );
    }

    #[test]
    fn busy_document_round_trips() {
        let xml = Response::new()
            .say("All agents are busy <sorry>.")
            .hangup()
            .build();
        let Instructions(verbs) = Instructions::parse(&xml).unwrap();
        assert_eq!(
            verbs,
            vec![
                Verb::Say("All agents are busy <sorry>.".into()),
                Verb::Hangup
            ]
        );
        let xml = Response::new()
            .say("Connecting")
            .dial("+15550002222")
            .build();
        let Instructions(verbs) = Instructions::parse(&xml).unwrap();
        assert_eq!(verbs[1], Verb::dial("+15550002222"));
    }

    #[test]
    fn dial_with_a_fallback_and_digits_round_trip() {
        let xml = Response::new()
            .play_digits("1w#")
            .dial_with(&DialNumber {
                number: "+15550002222",
                timeout_seconds: 12,
                action: "https://gw.example.com/twilio-dial-action?a=1&b=2",
                answered_callback: "https://gw.example.com/twilio-dial-status",
            })
            .build();
        let Instructions(verbs) = Instructions::parse(&xml).unwrap();
        assert_eq!(
            verbs,
            vec![
                Verb::PlayDigits("1w#".into()),
                Verb::Dial {
                    number: "+15550002222".into(),
                    timeout_seconds: Some(12),
                    action: Some("https://gw.example.com/twilio-dial-action?a=1&b=2".into()),
                    status_callback: Some("https://gw.example.com/twilio-dial-status".into()),
                    status_callback_event: Some("answered".into()),
                }
            ]
        );
    }

    #[test]
    fn conference_round_trips() {
        let xml = Response::new()
            .say("Maria wants to change her plan.")
            .conference(&ConferenceRoom {
                name: "CA1",
                starts: true,
                action: None,
            })
            .build();
        let Instructions(verbs) = Instructions::parse(&xml).unwrap();
        assert_eq!(
            verbs,
            vec![
                Verb::Say("Maria wants to change her plan.".into()),
                Verb::Conference {
                    name: "CA1".into(),
                    starts: true,
                    ends: true,
                    action: None
                }
            ]
        );
        let xml = Response::new()
            .conference(&ConferenceRoom {
                name: "CA1",
                starts: false,
                action: Some("https://gw.example.com/twilio-dial-action"),
            })
            .build();
        let Instructions(verbs) = Instructions::parse(&xml).unwrap();
        assert!(matches!(
            &verbs[0],
            Verb::Conference {
                starts: false,
                action: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn digits_are_keys_only() {
        assert_eq!(validate_digits("0123456789*#w"), Ok(()));
        assert_eq!(validate_digits(""), Err(DigitsError::Empty));
        assert_eq!(validate_digits("12a"), Err(DigitsError::NotAKey('a')));
        assert_eq!(validate_digits("1 2"), Err(DigitsError::NotAKey(' ')));
        assert_eq!(validate_digits("W"), Err(DigitsError::NotAKey('W')));
        assert_eq!(
            validate_digits(&"1".repeat(MAX_DIGITS + 1)),
            Err(DigitsError::TooLong)
        );
    }

    #[test]
    fn rejects_non_twiml() {
        assert!(Instructions::parse("hello").is_err());
        assert!(Instructions::parse("<Foo/>").is_err());
    }
}
