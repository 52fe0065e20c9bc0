//! The form fields of Twilio's voice webhook and call status callbacks.
//!
//! Twilio adds fields at any time, so parsing is lenient: the fields we use are picked out, and the
//! full list of pairs is kept for signature validation (which must cover every field received).

/// The fields of a voice webhook or status callback that Switchboard uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallForm {
    pub call_sid: String,
    pub account_sid: String,
    pub from: String,
    pub to: String,
    pub call_status: String,
    pub direction: String,
    /// Status callbacks: seconds the call lasted (terminal events).
    pub call_duration: Option<u32>,
    /// Status callbacks: order of the callback, from 0.
    pub sequence_number: Option<u32>,
}

/// A webhook form that lacks a field every Twilio call request has.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("missing form field `{0}`")]
pub struct MissingField(pub &'static str);

impl CallForm {
    /// Picks the known fields out of the decoded form pairs.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, MissingField> {
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        Ok(Self {
            call_sid: get("CallSid").ok_or(MissingField("CallSid"))?,
            account_sid: get("AccountSid").unwrap_or_default(),
            from: get("From").unwrap_or_default(),
            to: get("To").unwrap_or_default(),
            call_status: get("CallStatus").unwrap_or_default(),
            direction: get("Direction").unwrap_or_default(),
            call_duration: get("CallDuration").and_then(|v| v.parse().ok()),
            sequence_number: get("SequenceNumber").and_then(|v| v.parse().ok()),
        })
    }

    /// The form pairs Twilio would send for this call (used by simulators).
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = vec![
            ("CallSid".to_owned(), self.call_sid.clone()),
            ("AccountSid".to_owned(), self.account_sid.clone()),
            ("From".to_owned(), self.from.clone()),
            ("To".to_owned(), self.to.clone()),
            ("CallStatus".to_owned(), self.call_status.clone()),
            ("Direction".to_owned(), self.direction.clone()),
            ("ApiVersion".to_owned(), "2010-04-01".to_owned()),
        ];
        if let Some(d) = self.call_duration {
            pairs.push(("CallDuration".to_owned(), d.to_string()));
        }
        if let Some(n) = self.sequence_number {
            pairs.push(("SequenceNumber".to_owned(), n.to_string()));
        }
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_fields_and_requires_call_sid() {
        let form = CallForm {
            call_sid: "CA1".into(),
            from: "+1".into(),
            to: "+2".into(),
            call_status: "ringing".into(),
            direction: "inbound".into(),
            ..Default::default()
        };
        let mut pairs = form.to_pairs();
        pairs.push(("FromCity".into(), "X".into()));
        assert_eq!(CallForm::from_pairs(&pairs).unwrap(), form);
        pairs.retain(|(k, _)| k != "CallSid");
        assert_eq!(CallForm::from_pairs(&pairs), Err(MissingField("CallSid")));
    }
}
