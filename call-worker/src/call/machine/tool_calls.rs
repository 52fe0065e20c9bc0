//! The model's function calls: business tools, built-ins, handoffs, and their outputs.

use super::*;
use switchboard_agents::DestinationError;

/// The longest summary a warm transfer's human hears (Twilio says it; a few sentences).
pub const MAX_SUMMARY_CHARS: usize = 600;
use switchboard_proto::event::ToolErrorCode;

impl CallMachine {
    // ---------------------------------------------------------------- tools

    pub(super) fn start_tool_call(
        &mut self,
        response_id: &str,
        call_id: &str,
        name: &str,
        arguments: &str,
        now: Instant,
    ) {
        if !self
            .tools_rounds
            .start(response_id, call_id, name, arguments)
        {
            return;
        }
        self.observe(Observation::FunctionCall {
            call_id: call_id.to_owned(),
            tool: name.to_owned(),
        });
        if !self.tools.declared(name) {
            self.observe(Observation::ToolCall {
                tool: "unknown".into(),
                result: ToolCallResult::UnknownTool,
            });
            let reply = ToolReply::error(
                ToolErrorCode::UnknownTool,
                format!("There is no tool named `{name}` on this call."),
            );
            self.complete_tool(ToolDone::at_once(call_id, name, arguments, reply));
            return;
        }
        if name == HANDOFF {
            self.start_handoff(call_id, arguments, now);
            return;
        }
        if is_builtin(name) {
            let reply = self.run_builtin(name, arguments, now);
            // Built-ins finish at once: their `tool` span only records that they ran.
            let result = match &reply {
                ToolReply::Output(_) => "ok",
                ToolReply::Error(e) => e.code.as_str(),
            };
            self.observe(Observation::BuiltinTool {
                tool: name.to_owned(),
                call_id: call_id.to_owned(),
                result: result.to_owned(),
            });
            self.complete_tool(ToolDone::at_once(call_id, name, arguments, reply));
            return;
        }
        let timeout = self.tools.timeout(name, self.setup.tool_timeout);
        if let Some(after) = self.setup.agent.filler_after {
            self.tools_rounds.arm_filler(response_id, now + after);
        }
        // Written ahead: a worker taking the call over sends a dispatched call again.
        self.effects
            .push(Effect::Event(Body::Dispatched(ToolDispatched {
                redacted: Vec::new(),
                audio_end_ms: self.clock.last_speech_end(),
                call_id: call_id.to_owned(),
                name: name.to_owned(),
                arguments: arguments.to_owned(),
            })));
        self.effects.push(Effect::CallTool(ToolCall {
            call_sid: self.setup.offer.call_sid.clone(),
            call_id: call_id.to_owned(),
            name: name.to_owned(),
            arguments: arguments.to_owned(),
            agent_id: self.setup.agent.id.clone(),
            caller: self.setup.offer.party().to_owned(),
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        }));
    }

    pub(super) fn run_builtin(&mut self, name: &str, arguments: &str, now: Instant) -> ToolReply {
        match name {
            END_CALL => {
                self.begin_goodbye(Ending::EndCall, now);
                ToolReply::Output(
                    r#"{"ok":true,"note":"The call ends after your next reply. Say a short goodbye now."}"#
                        .into(),
                )
            }
            TRANSFER_CALL => {
                if self.goodbye.in_progress() || self.transfer.is_some() {
                    return ToolReply::error(ToolErrorCode::Unavailable, "The call is ending.");
                }
                let args: serde_json::Value = serde_json::from_str(arguments).unwrap_or_default();
                let department = args["department"].as_str();
                let agent = Arc::clone(&self.setup.agent);
                let (department, number) = match agent.transfer_destination(department) {
                    Ok(found) => found,
                    Err(e @ DestinationError::NotConfigured) => {
                        return ToolReply::error(ToolErrorCode::Unavailable, format!("{e}."));
                    }
                    Err(e @ DestinationError::UnknownDepartment(_)) => {
                        return ToolReply::error(ToolErrorCode::InvalidArguments, format!("{e}."));
                    }
                };
                let whisper = if agent.warm_transfer {
                    match args["summary"].as_str().map(str::trim) {
                        Some(s) if !s.is_empty() && s.chars().count() <= MAX_SUMMARY_CHARS => {
                            s.to_owned()
                        }
                        _ => {
                            return ToolReply::error(
                                ToolErrorCode::InvalidArguments,
                                format!(
                                    "`summary` must say in 1 to {MAX_SUMMARY_CHARS} characters \
                                     what the caller needs."
                                ),
                            );
                        }
                    }
                } else {
                    String::new()
                };
                // The human sees the line's own number calling.
                let offer = &self.setup.offer;
                let caller_id = if offer.party() == offer.from {
                    offer.to.clone()
                } else {
                    offer.from.clone()
                };
                if !self.outcome_set || self.transfer_outcome {
                    self.set_outcome(TRANSFERRED_OUTCOME, &department);
                    self.transfer_outcome = true;
                }
                let to = Destination { department, number };
                self.begin_goodbye(
                    Ending::Transfer {
                        to,
                        timeout: agent.transfer_timeout,
                        whisper,
                        caller_id,
                    },
                    now,
                );
                ToolReply::Output(
                    r#"{"ok":true,"note":"The caller is transferred after your next reply. Tell them briefly that you are connecting them. If nobody answers, they come back to you."}"#
                        .into(),
                )
            }
            SEND_DTMF => {
                if self.goodbye.in_progress() || self.transfer.is_some() {
                    return ToolReply::error(ToolErrorCode::Unavailable, "The call is ending.");
                }
                let args: serde_json::Value = serde_json::from_str(arguments).unwrap_or_default();
                let digits = args["digits"].as_str().unwrap_or_default();
                if let Err(e) = switchboard_twilio::twiml::validate_digits(digits) {
                    return ToolReply::error(
                        ToolErrorCode::InvalidArguments,
                        format!("`digits`: {e}."),
                    );
                }
                self.effects
                    .push(Effect::Out(outbound_frame::Frame::SendDigits(
                        switchboard_proto::SendDigits {
                            digits: digits.to_owned(),
                        },
                    )));
                ToolReply::Output(
                    r#"{"ok":true,"note":"The keys are pressed now; the line is back in a moment. Listen to what the menu says next."}"#
                        .into(),
                )
            }
            SET_OUTCOME => {
                self.transfer_outcome = false;
                let args: serde_json::Value = serde_json::from_str(arguments).unwrap_or_default();
                let outcome = args["outcome"].as_str().unwrap_or_default().trim();
                if outcome.is_empty() {
                    return ToolReply::error(
                        ToolErrorCode::InvalidArguments,
                        "`outcome` must be a non-empty string.",
                    );
                }
                let detail = args["detail"].as_str().unwrap_or_default();
                self.set_outcome(outcome, detail);
                ToolReply::Output(r#"{"ok":true}"#.into())
            }
            _ => ToolReply::error(
                ToolErrorCode::UnknownTool,
                format!("There is no tool named `{name}`."),
            ),
        }
    }

    /// Checks a `handoff` call and asks the actor for its target; a call that cannot be
    /// honoured is answered with a structured error at once (the model then tells the caller).
    pub(super) fn start_handoff(&mut self, call_id: &str, arguments: &str, now: Instant) {
        let args: serde_json::Value = serde_json::from_str(arguments).unwrap_or_default();
        let target = args["agent"].as_str().unwrap_or_default().trim().to_owned();
        let reason = args["reason"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let allowed = &self.setup.agent.handoff_to;
        let refused = if self.handoff.is_some() {
            Some(ToolReply::error(
                ToolErrorCode::Busy,
                "Another handoff is already in progress.",
            ))
        } else if self.goodbye.in_progress() {
            Some(ToolReply::error(
                ToolErrorCode::Unavailable,
                "The call is ending.",
            ))
        } else if !allowed.contains(&target) {
            let choices = allowed.join(", ");
            Some(ToolReply::error(
                if target.is_empty() {
                    ToolErrorCode::InvalidArguments
                } else {
                    ToolErrorCode::UnknownAgent
                },
                format!(
                    "`agent` must be one of: {}.",
                    if choices.is_empty() {
                        "(none)"
                    } else {
                        &choices
                    }
                ),
            ))
        } else {
            None
        };
        if let Some(reply) = refused {
            self.observe(Observation::ToolCall {
                tool: HANDOFF.into(),
                result: ToolCallResult::Error,
            });
            self.complete_tool(ToolDone::at_once(call_id, HANDOFF, arguments, reply));
            return;
        }
        self.effects.push(Effect::Handoff {
            call_id: call_id.to_owned(),
            agent_id: target.clone(),
        });
        self.handoff = Some(PendingHandoff {
            call_id: call_id.to_owned(),
            arguments: arguments.to_owned(),
            target,
            reason,
            started: now,
        });
    }

    /// The target of a `handoff` call is resolved: the agent from the current agents table with
    /// its session tools, or the error to give the model (the agent is gone from a reloaded
    /// file, say).
    ///
    /// On success the call switches agents: one `session.update` carries the target's
    /// instructions, tools and turn detection (sent at once, so the response that follows the
    /// function output already runs as the new agent; skipped while a lost session awaits its
    /// replacement, which is configured for the new agent anyway). The voice is left alone: a
    /// GA session cannot change it after it produced audio, so the whole call keeps the first
    /// agent's voice. The target's greeting is not spoken: the conversation goes on. Timers
    /// follow the target: `max_call_seconds` counts from the start of the call,
    /// `idle_timeout_seconds` from now.
    pub fn on_handoff(
        &mut self,
        call_id: &str,
        target: Result<(Arc<Agent>, SessionTools), ToolReply>,
        now: Instant,
    ) {
        if self.session.is_ended() {
            return;
        }
        let Some(pending) = self.handoff.take_if(|h| h.call_id == call_id) else {
            return;
        };
        let mut record = None;
        let reply = match target {
            Err(reply) => {
                self.observe(Observation::HandoffRefused {
                    target: pending.target.clone(),
                    reply: format!("{reply:?}"),
                });
                reply
            }
            Ok((agent, tools)) => {
                self.observe(Observation::Handoff {
                    from: self.setup.agent.id.clone(),
                    to: agent.id.clone(),
                    reason: pending.reason.clone(),
                });
                self.setup.agent = Arc::clone(&agent);
                self.tools = tools;
                if !self.goodbye.in_progress() {
                    self.max_deadline = agent.max_call.map(|d| self.accepted_at + d);
                    self.idle_stage = 0;
                    self.idle_deadline = match (agent.idle_timeout, self.stream_started) {
                        (Some(idle), true) => Some(now + idle),
                        _ => None,
                    };
                }
                if !self.session.reconnecting() {
                    let session = self.agent_session();
                    self.send_session(session);
                }
                record = Some(if pending.reason.is_empty() {
                    format!("Handed off to {}.", agent.id)
                } else {
                    format!("Handed off to {} ({}).", agent.id, pending.reason)
                });
                ToolReply::Output(serde_json::json!({"ok": true, "agent": agent.id}).to_string())
            }
        };
        self.observe(Observation::ToolCall {
            tool: HANDOFF.into(),
            result: tool_call_result(&reply),
        });
        let latency_ms = u32::try_from(now.saturating_duration_since(pending.started).as_millis())
            .unwrap_or(u32::MAX);
        self.complete_tool(ToolDone {
            call_id: pending.call_id,
            name: HANDOFF.to_owned(),
            arguments: pending.arguments,
            reply,
            outcome: None,
            latency_ms,
        });
        // After the tool event, so the record (and a replay) reads: the call, then the handoff.
        if let Some(text) = record {
            self.record_system(text, now);
        }
        self.pump();
    }

    pub(super) fn set_outcome(&mut self, outcome: &str, detail: &str) {
        self.outcome_set = true;
        self.effects.push(Effect::Event(Body::Outcome(CallOutcome {
            redacted: Vec::new(),
            outcome: outcome.to_owned(),
            detail: detail.to_owned(),
        })));
    }

    /// A business tool finished (from its task).
    pub fn on_tool_done(&mut self, done: ToolDone, _now: Instant) {
        if self.session.is_ended() {
            return;
        }
        self.observe(Observation::ToolCall {
            tool: done.name.clone(),
            result: tool_call_result(&done.reply),
        });
        // As the call saw it: NATS, the tool service and the handler together.
        self.observe(Observation::ToolLatency {
            tool: done.name.clone(),
            latency_ms: done.latency_ms,
        });
        if let Some(outcome) = done.outcome.clone() {
            self.set_outcome(&outcome, "");
        }
        self.complete_tool(done);
        self.pump();
    }

    pub(super) fn complete_tool(&mut self, done: ToolDone) {
        let result = match &done.reply {
            ToolReply::Output(text) => tool_invocation::Result::Output(text.clone()),
            ToolReply::Error(e) => tool_invocation::Result::Error(e.clone().into()),
        };
        self.effects.push(Effect::Event(Body::Tool(ToolInvocation {
            redacted: Vec::new(),
            call_id: done.call_id.clone(),
            name: done.name.clone(),
            arguments: done.arguments.clone(),
            result: Some(result),
            latency_ms: done.latency_ms,
        })));
        self.tools_rounds
            .finished(&done.call_id, done.reply.model_output());
    }

    /// Sends the outputs of every finished tool round, then exactly one `response.create`.
    /// Returns whether it sent anything.
    pub(super) fn flush_tool_outputs(&mut self) -> bool {
        let Some(items) = self.tools_rounds.take_complete() else {
            return false;
        };
        for item in items {
            self.send_event(ClientEvent::item_create(item));
        }
        let purpose = if self.goodbye.awaits_response() {
            Purpose::Goodbye
        } else {
            Purpose::Plain
        };
        self.send_response_create(purpose, None);
        true
    }
}
