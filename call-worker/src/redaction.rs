//! The agent's `redact` list applied to what a call records.
//!
//! The call actor keeps the conversation in clear (the model and the tools need the caller's
//! number to book); only the copy of an event that leaves the worker is redacted, here, at the
//! one place events are published. The kinds replaced are recorded on the event itself
//! (`redacted`), so the record says what it no longer holds. A worker that takes a call over
//! rebuilds the conversation from the record, so after a takeover the model no longer knows a
//! redacted value.

use std::collections::BTreeSet;

use switchboard_proto::call_event::Body;
use switchboard_proto::tool_invocation;
use switchboard_service::pii::{PiiKind, Redactor};

/// Redacts the text-bearing fields of `body` in place.
pub fn redact_body(redactor: &Redactor, body: &mut Body) {
    if !redactor.is_active() {
        return;
    }
    match body {
        Body::Transcript(t) => {
            let kinds = text(redactor, &mut t.text);
            t.redacted = words(&kinds);
        }
        Body::Tool(t) => {
            let mut kinds = json(redactor, &mut t.arguments);
            match &mut t.result {
                Some(tool_invocation::Result::Output(output)) => {
                    kinds.extend(json(redactor, output));
                }
                Some(tool_invocation::Result::Error(error)) => {
                    kinds.extend(text(redactor, &mut error.message));
                }
                None => {}
            }
            t.redacted = words(&kinds);
        }
        Body::Dispatched(d) => {
            let kinds = json(redactor, &mut d.arguments);
            d.redacted = words(&kinds);
        }
        Body::Outcome(o) => {
            let kinds = text(redactor, &mut o.detail);
            o.redacted = words(&kinds);
        }
        Body::Started(_)
        | Body::Turn(_)
        | Body::Ended(_)
        | Body::Rejected(_)
        | Body::Status(_)
        | Body::Owner(_)
        | Body::Usage(_)
        | Body::Recording(_)
        | Body::Amd(_)
        | Body::Transfer(_) => {}
    }
}

fn text(redactor: &Redactor, field: &mut String) -> BTreeSet<PiiKind> {
    let r = redactor.text(field);
    if !r.kinds.is_empty() {
        *field = r.text;
    }
    r.kinds
}

fn json(redactor: &Redactor, field: &mut String) -> BTreeSet<PiiKind> {
    let r = redactor.json(field);
    if !r.kinds.is_empty() {
        *field = r.text;
    }
    r.kinds
}

fn words(kinds: &BTreeSet<PiiKind>) -> Vec<String> {
    kinds.iter().map(|k| k.as_str().to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::{CallOutcome, Role, ToolFailure, ToolInvocation, TranscriptEntry};

    fn phone_and_card() -> Redactor {
        Redactor::new([PiiKind::Phone, PiiKind::Card])
    }

    #[test]
    fn transcripts_lose_the_configured_kinds_and_say_so() {
        let mut body = Body::Transcript(TranscriptEntry {
            role: Role::User as i32,
            text: "It's 555-000-1234, card 4111 1111 1111 1111, mail a@b.co".into(),
            ..Default::default()
        });
        redact_body(&phone_and_card(), &mut body);
        let Body::Transcript(t) = body else {
            unreachable!()
        };
        assert_eq!(t.text, "It's [phone], card [card], mail a@b.co");
        assert_eq!(t.redacted, ["phone", "card"]);
    }

    #[test]
    fn tool_arguments_outputs_and_errors_are_redacted() {
        let mut body = Body::Tool(ToolInvocation {
            call_id: "c1".into(),
            name: "lookup_customer".into(),
            arguments: r#"{"phone":"+15550001234"}"#.into(),
            result: Some(tool_invocation::Result::Output(
                r#"{"name":"Ann","card":"4111111111111111"}"#.into(),
            )),
            ..Default::default()
        });
        redact_body(&phone_and_card(), &mut body);
        let Body::Tool(t) = body else { unreachable!() };
        assert_eq!(t.arguments, r#"{"phone":"[phone]"}"#);
        assert!(
            matches!(&t.result, Some(tool_invocation::Result::Output(o))
            if o == r#"{"card":"[card]","name":"Ann"}"#),
            "{:?}",
            t.result
        );
        assert_eq!(t.redacted, ["phone", "card"]);

        let mut failed = Body::Tool(ToolInvocation {
            arguments: "{}".into(),
            result: Some(tool_invocation::Result::Error(ToolFailure {
                code: "not_found".into(),
                message: "no customer at 555-000-1234".into(),
            })),
            ..Default::default()
        });
        redact_body(&phone_and_card(), &mut failed);
        let Body::Tool(t) = failed else {
            unreachable!()
        };
        assert!(matches!(&t.result, Some(tool_invocation::Result::Error(e))
            if e.message == "no customer at [phone]"));
        assert_eq!(t.arguments, "{}");
    }

    #[test]
    fn outcomes_are_redacted_and_an_inactive_redactor_changes_nothing() {
        let mut body = Body::Outcome(CallOutcome {
            outcome: "booked".into(),
            detail: "call back on 555-000-1234".into(),
            ..Default::default()
        });
        redact_body(&Redactor::default(), &mut body);
        assert!(matches!(&body, Body::Outcome(o) if o.detail == "call back on 555-000-1234"));
        redact_body(&phone_and_card(), &mut body);
        assert!(
            matches!(&body, Body::Outcome(o) if o.detail == "call back on [phone]" && o.redacted == ["phone"])
        );
    }
}
