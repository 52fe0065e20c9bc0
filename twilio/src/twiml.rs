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
    pub fn connect_stream(mut self, url: &str, parameters: &[(&str, &str)]) -> Self {
        self.body.push_str("<Connect><Stream url=\"");
        self.body.push_str(&escape(url));
        self.body.push_str("\">");
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
    },
    /// Speak text.
    Say(String),
    /// Dial a number.
    Dial(String),
    /// Hang up.
    Hangup,
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
                        b"Number" => {
                            verbs.push(Verb::Dial(std::mem::take(&mut text).trim().to_owned()))
                        }
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
                "Stream" if stack.last().map(String::as_str) == Some("Connect") => {
                    verbs.push(Verb::ConnectStream {
                        url: attr("url")?,
                        parameters: Vec::new(),
                    });
                }
                "Parameter" => {
                    if let Some(Verb::ConnectStream { parameters, .. }) = verbs.last_mut() {
                        parameters.push((attr("name")?, attr("value")?));
                    }
                }
                "Hangup" => verbs.push(Verb::Hangup),
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
        assert_eq!(verbs[1], Verb::Dial("+15550002222".into()));
    }

    #[test]
    fn rejects_non_twiml() {
        assert!(Instructions::parse("hello").is_err());
        assert!(Instructions::parse("<Foo/>").is_err());
    }
}
