//! [`ToolError`], the one Rust type for a failed tool call.
//!
//! A tool's handler returns it (the SDK calls it `ToolFailure`), the tool server sends it in a
//! [`ToolResult`](crate::ToolResult), the call-worker builds its own (a timeout, an unknown
//! tool) and tells the model, and the call record keeps it as the event's
//! [`ToolFailure`](crate::ToolFailure) (the same two fields, converted by `From`). Its code is
//! one of [`ToolErrorCode`] or a tool's own.

use std::fmt;

use crate::event::ToolErrorCode;
use crate::{ToolError, ToolFailure};

impl ToolError {
    /// A failure with any code (a tool may have its own).
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    /// A failure with one of the contract's codes.
    pub fn coded(code: ToolErrorCode, message: impl Into<String>) -> Self {
        Self::new(code.as_str(), message)
    }

    /// The arguments are unusable (`invalid_arguments`).
    pub fn invalid_arguments(message: impl Into<String>) -> Self {
        Self::coded(ToolErrorCode::InvalidArguments, message)
    }

    /// What was asked for does not exist (`not_found`).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::coded(ToolErrorCode::NotFound, message)
    }

    /// The tool failed (`failed`).
    pub fn failed(message: impl Into<String>) -> Self {
        Self::coded(ToolErrorCode::Failed, message)
    }

    /// A dependency is down (`unavailable`).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::coded(ToolErrorCode::Unavailable, message)
    }

    /// The contract's code, if it is one (a tool's own code is `None`).
    pub fn known_code(&self) -> Option<ToolErrorCode> {
        ToolErrorCode::parse(&self.code)
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ToolError {}

impl From<ToolError> for ToolFailure {
    fn from(e: ToolError) -> Self {
        Self {
            code: e.code,
            message: e.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_its_code_and_message_into_the_record() {
        let e = ToolError::not_found("no appointment on that day");
        assert_eq!(e.known_code(), Some(ToolErrorCode::NotFound));
        assert_eq!(e.to_string(), "not_found: no appointment on that day");
        let recorded = ToolFailure::from(e);
        assert_eq!(recorded.code, "not_found");
        assert_eq!(recorded.message, "no appointment on that day");
        assert_eq!(ToolError::new("card_declined", "x").known_code(), None);
    }
}
