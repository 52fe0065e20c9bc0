//! The agents file (`AGENTS_FILE`, ARCHITECTURE.md section 6): which agent answers which number,
//! and how it behaves.
//!
//! The file is read once at start. Every mistake is reported with the file, the agent (its id, or
//! its position when the id itself is the problem) and the field, because the file is edited by
//! hand and mounted from a ConfigMap: an operator must be able to fix it from the error alone.
//!
//! The call-worker reads it for everything about a session; the gateway reads the same file for
//! what it must enforce itself (where a call may be transferred or dialed), so that a worker cannot
//! widen those lists.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use switchboard_proto::event::PiiKind;
use switchboard_proto::subject::validate_tool_name;
use switchboard_realtime::session::{
    EAGERNESS, NOISE_REDUCTION_TYPES, TRANSCRIPTION_MODELS, Transcription, Truncation,
    TurnDetection,
};

/// The number that selects the default agent.
pub const DEFAULT_NUMBER: &str = "*";
/// The voice used when an agent names none (OpenAI recommends `marin` or `cedar`).
pub const DEFAULT_VOICE: &str = "marin";
/// Server VAD defaults (ARCHITECTURE.md, openai-realtime.md section 2.1).
pub const DEFAULT_THRESHOLD: f32 = 0.5;
/// Audio kept before the detected start of speech.
pub const DEFAULT_PREFIX_PADDING_MS: u32 = 300;
/// Silence that ends a caller turn.
pub const DEFAULT_SILENCE_DURATION_MS: u32 = 500;

/// Built-in call-control tools, run inside the worker rather than by a tool service.
pub const END_CALL: &str = "end_call";
/// See [`END_CALL`].
pub const SET_OUTCOME: &str = "set_outcome";
/// See [`END_CALL`].
pub const TRANSFER_CALL: &str = "transfer_call";
/// Hands the call over to another agent of the file (one named in `handoff_to`): same call, same
/// Realtime session, the other agent's instructions and tools from then on. See [`END_CALL`].
pub const HANDOFF: &str = "handoff";
/// Presses keys on the line (Twilio `<Play digits>`), so the agent can work its way through an
/// automated menu. See [`END_CALL`].
pub const SEND_DTMF: &str = "send_dtmf";
/// How long a transfer rings before the caller comes back to the agent, unless the agent sets
/// `transfer_timeout_seconds` (Twilio's own `<Dial timeout>` default).
pub const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);
/// The `transfer_timeout_seconds` Twilio accepts for `<Dial timeout>`.
const TRANSFER_TIMEOUT_RANGE: std::ops::RangeInclusive<u32> = 5..=600;
/// How long an outbound call with answering-machine detection waits for the verdict before
/// greeting, unless the agent sets `amd_timeout_seconds`. Twilio's verdict on a person comes a
/// moment after their first words; a machine's comes after its greeting's beep, later than
/// this, and still makes the agent leave its voicemail message then.
pub const DEFAULT_AMD_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `amd_timeout_seconds`: Twilio's own `MachineDetectionTimeout` ends at 60 s.
pub const MAX_AMD_TIMEOUT_SECONDS: u32 = 60;
/// How long a business tool may run before the agent says a filler line, unless the agent sets
/// `filler_after_ms`.
pub const DEFAULT_FILLER_AFTER: Duration = Duration::from_millis(1500);
/// What the caller hears when the call is lost and no worker can take it over, unless the agent
/// sets `apology`.
pub const DEFAULT_APOLOGY: &str =
    "We're sorry, we are having technical difficulties and could not continue this call.";
/// The largest `filler_after_ms` accepted.
const MAX_FILLER_AFTER_MS: u32 = 60_000;
/// The caller's speech is transcribed with this model unless the agent names another (or turns
/// transcription off).
pub const DEFAULT_TRANSCRIPTION_MODEL: &str = "gpt-4o-mini-transcribe";
/// The largest `truncation.post_instructions_tokens` accepted (the largest context window of the
/// Realtime models in the SDK is not documented beyond `gpt-realtime`'s 32,768 tokens, so this
/// only stops typos).
const MAX_POST_INSTRUCTIONS_TOKENS: u64 = 1_000_000;
/// Every built-in tool name.
pub const BUILTIN_TOOLS: [&str; 5] = [END_CALL, SET_OUTCOME, TRANSFER_CALL, HANDOFF, SEND_DTMF];

/// A mistake in the agents file.
#[derive(Debug, thiserror::Error)]
pub enum AgentsError {
    /// The file could not be read.
    #[error("{file}: cannot read the agents file: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// The file is not TOML, or its top level is wrong.
    #[error("{file}: {message}")]
    File { file: String, message: String },
    /// One agent is wrong.
    #[error("{file}: {agent}: field `{field}`: {message}")]
    Agent {
        file: String,
        /// `agent "front-desk" (#1)`, or `agent #3` when the id is unknown.
        agent: String,
        field: String,
        message: String,
    },
}

/// How the model decides that the caller finished speaking (`audio.input.turn_detection`).
#[derive(Debug, Clone, PartialEq)]
pub enum TurnDetectionConfig {
    /// Voice activity detection on audio energy.
    ServerVad {
        threshold: f32,
        prefix_padding_ms: u32,
        silence_duration_ms: u32,
    },
    /// A model judges when the caller is done; `eagerness` is `low|medium|high|auto`.
    SemanticVad { eagerness: Option<String> },
}

impl Default for TurnDetectionConfig {
    fn default() -> Self {
        Self::ServerVad {
            threshold: DEFAULT_THRESHOLD,
            prefix_padding_ms: DEFAULT_PREFIX_PADDING_MS,
            silence_duration_ms: DEFAULT_SILENCE_DURATION_MS,
        }
    }
}

impl TurnDetectionConfig {
    /// The Realtime session setting. Both `create_response` and `interrupt_response` are on: the
    /// model answers each caller turn by itself and stops talking when the caller barges in.
    pub fn to_session(&self) -> TurnDetection {
        match self {
            Self::ServerVad {
                threshold,
                prefix_padding_ms,
                silence_duration_ms,
            } => TurnDetection::ServerVad {
                threshold: Some(*threshold),
                prefix_padding_ms: Some(*prefix_padding_ms),
                silence_duration_ms: Some(*silence_duration_ms),
                idle_timeout_ms: None,
                create_response: Some(true),
                interrupt_response: Some(true),
            },
            Self::SemanticVad { eagerness } => TurnDetection::SemanticVad {
                eagerness: eagerness.clone(),
                create_response: Some(true),
                interrupt_response: Some(true),
            },
        }
    }
}

/// One agent: what answers a number.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// Unique id, recorded with every call.
    pub id: String,
    /// Dialed numbers this agent answers; `*` makes it the default.
    pub numbers: Vec<String>,
    /// The system prompt (read from `instructions_file` when given that way).
    pub instructions: String,
    /// Output voice.
    pub voice: String,
    /// Spoken first, word for word; `None` waits for the caller.
    pub greeting: Option<String>,
    /// Tool names the model may call: built-ins and business tools.
    pub tools: Vec<String>,
    /// Where `transfer_call` sends the caller: the single-number form of `transfer_to`.
    pub transfer_to: Option<String>,
    /// The department form of `transfer_to` (a table of department name to number), in name
    /// order: the model picks a department, never a number.
    pub departments: Vec<Department>,
    /// How long a transfer rings before the caller comes back to the agent
    /// (`transfer_timeout_seconds`, Twilio's `<Dial timeout>`).
    pub transfer_timeout: Duration,
    /// Transfers are warm (`warm_transfer = true`): the caller holds while the human is called
    /// and hears the model's summary of the call first.
    pub warm_transfer: bool,
    /// What the caller hears (Twilio `<Say>`, spoken by the gateway) when the call's worker is
    /// lost and no other worker can take the call over, before the transfer of
    /// [`Agent::lost_call_transfer`] or the hang-up ([`DEFAULT_APOLOGY`] unless set).
    pub apology: String,
    /// The agents (ids of this file) that `handoff` may hand the call to; non-empty exactly when
    /// `handoff` is in `tools`.
    pub handoff_to: Vec<String>,
    /// The call is ended politely after this long.
    pub max_call: Option<Duration>,
    /// The caller is prompted, then the call ended, after this long without caller speech.
    pub idle_timeout: Option<Duration>,
    /// Turn detection of the Realtime session.
    pub turn_detection: TurnDetectionConfig,
    /// When a business tool has not answered after this long (and the model is silent), the
    /// agent says a short filler line; `None` never does (`filler_after_ms = 0`).
    pub filler_after: Option<Duration>,
    /// The Realtime model of calls this agent answers; `None` uses the worker's `REALTIME_MODEL`.
    /// A handoff keeps the call's model (a session cannot change it).
    pub model: Option<String>,
    /// `near_field` (a handset) or `far_field` (a speakerphone); `None` sends none.
    pub noise_reduction: Option<String>,
    /// How the caller's speech is transcribed for the record; `None` turns it off (the model
    /// still hears the caller, but no user transcripts are recorded).
    pub transcription: Option<Transcription>,
    /// What the server drops from a long conversation; `None` leaves the server's default
    /// (`auto`: only when the context window is full).
    pub truncation: Option<Truncation>,
    /// Kinds of personal data removed from the call's record (transcripts, tool arguments and
    /// outputs, outcome details) before it leaves the worker; empty keeps everything.
    pub redact: Vec<PiiKind>,
    /// Whether its calls are recorded (`record = false` where audio must not be kept; the
    /// default records). The agent the call was routed to decides for the whole call: a
    /// handoff does not start or stop a recording.
    pub record: bool,
    /// How long an outbound call with answering-machine detection holds its greeting for
    /// Twilio's verdict before greeting as if a person answered (`amd_timeout_seconds`,
    /// [`DEFAULT_AMD_TIMEOUT`] unless set).
    pub amd_timeout: Duration,
    /// Left after the beep when an answering machine picks up (`voicemail_message`, spoken in
    /// the agent's voice); `None` hangs up on a machine at once.
    pub voicemail_message: Option<String>,
}

/// One destination of a department-form `transfer_to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Department {
    /// What the model names, e.g. `sales`.
    pub name: String,
    /// The E.164 number dialed.
    pub number: String,
}

/// Why a transfer destination cannot be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("transfers are not set up for this line")]
    NotConfigured,
    #[error("`department` must be one of: {0}")]
    UnknownDepartment(String),
}

impl Agent {
    /// Where a transfer asked for `department` goes: the department's number, or the
    /// single-number `transfer_to` (which ignores `department`). Returns the department name
    /// (empty for the single-number form) and the number.
    pub fn transfer_destination(
        &self,
        department: Option<&str>,
    ) -> Result<(String, String), DestinationError> {
        if let Some(to) = &self.transfer_to {
            return Ok((String::new(), to.clone()));
        }
        if self.departments.is_empty() {
            return Err(DestinationError::NotConfigured);
        }
        let wanted = department.map(str::trim).unwrap_or_default();
        self.departments
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(wanted))
            .map(|d| (d.name.clone(), d.number.clone()))
            .ok_or_else(|| {
                let names: Vec<&str> = self.departments.iter().map(|d| d.name.as_str()).collect();
                DestinationError::UnknownDepartment(names.join(", "))
            })
    }

    /// Where the gateway transfers a call whose worker was lost when no other worker can take
    /// it over (after the apology): the single-number `transfer_to`, or with departments the
    /// first one in name order, so the caller still reaches a human. `None` hangs up.
    pub fn lost_call_transfer(&self) -> Option<&str> {
        self.transfer_to
            .as_deref()
            .or_else(|| self.departments.first().map(|d| d.number.as_str()))
    }

    /// Whether the agent may call `name`.
    pub fn allows_tool(&self, name: &str) -> bool {
        self.tools.iter().any(|t| t == name)
    }

    /// A minimal agent (tests and tools).
    pub fn new(id: &str, instructions: &str) -> Self {
        Self {
            id: id.to_owned(),
            numbers: Vec::new(),
            instructions: instructions.to_owned(),
            voice: DEFAULT_VOICE.to_owned(),
            greeting: None,
            tools: Vec::new(),
            transfer_to: None,
            departments: Vec::new(),
            transfer_timeout: DEFAULT_TRANSFER_TIMEOUT,
            warm_transfer: false,
            apology: DEFAULT_APOLOGY.to_owned(),
            handoff_to: Vec::new(),
            max_call: None,
            idle_timeout: None,
            turn_detection: TurnDetectionConfig::default(),
            filler_after: Some(DEFAULT_FILLER_AFTER),
            model: None,
            noise_reduction: None,
            transcription: Some(default_transcription()),
            truncation: None,
            redact: Vec::new(),
            record: true,
            amd_timeout: DEFAULT_AMD_TIMEOUT,
            voicemail_message: None,
        }
    }
}

fn default_transcription() -> Transcription {
    Transcription {
        model: DEFAULT_TRANSCRIPTION_MODEL.to_owned(),
        language: None,
        prompt: None,
    }
}

/// Every agent of the file, with the routing tables.
#[derive(Debug, Clone)]
pub struct Agents {
    file: PathBuf,
    /// The `instructions_file`s the agents were read from, in file order.
    instruction_files: Vec<PathBuf>,
    agents: Vec<Arc<Agent>>,
    by_number: HashMap<String, usize>,
    by_id: HashMap<String, usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    id: String,
    #[serde(default)]
    numbers: Vec<String>,
    instructions: Option<String>,
    instructions_file: Option<String>,
    voice: Option<String>,
    greeting: Option<String>,
    #[serde(default)]
    tools: Vec<String>,
    /// A number, or a table of department name to number.
    transfer_to: Option<toml::Value>,
    transfer_timeout_seconds: Option<u32>,
    #[serde(default)]
    warm_transfer: bool,
    apology: Option<String>,
    #[serde(default)]
    handoff_to: Vec<String>,
    max_call_seconds: Option<u32>,
    idle_timeout_seconds: Option<u32>,
    turn_detection: Option<RawTurnDetection>,
    filler_after_ms: Option<u32>,
    model: Option<String>,
    noise_reduction: Option<String>,
    /// `false` (off), `true` (the default model), or a table: [`RawTranscriptionTable`].
    transcription: Option<toml::Value>,
    /// `"auto"`, `"disabled"`, or a table: [`RawTruncationTable`].
    truncation: Option<toml::Value>,
    #[serde(default)]
    redact: Vec<String>,
    record: Option<bool>,
    amd_timeout_seconds: Option<u32>,
    voicemail_message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTranscriptionTable {
    model: Option<String>,
    language: Option<String>,
    prompt: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTruncationTable {
    retention_ratio: Option<f64>,
    post_instructions_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTurnDetection {
    #[serde(rename = "type")]
    kind: Option<String>,
    threshold: Option<f64>,
    silence_duration_ms: Option<u32>,
    prefix_padding_ms: Option<u32>,
    eagerness: Option<String>,
}

impl Agents {
    /// Reads and validates the agents file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, AgentsError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| AgentsError::Read {
            file: path.display().to_string(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, path, dir)
    }

    /// Parses agents from `text`; `file` names the source in errors and `dir` is where relative
    /// `instructions_file`s live.
    pub fn parse(text: &str, file: impl AsRef<Path>, dir: &Path) -> Result<Self, AgentsError> {
        let file = file.as_ref();
        let file_name = file.display().to_string();
        let file_err = |message: String| AgentsError::File {
            file: file_name.clone(),
            message,
        };
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| file_err(format!("not valid TOML: {}", e.to_string().trim_end())))?;
        if let Some(key) = table.keys().find(|k| k.as_str() != "agent") {
            return Err(file_err(format!(
                "unknown top-level key `{key}` (the file holds `[[agent]]` tables only)"
            )));
        }
        let list = match table.get("agent") {
            None => {
                return Err(file_err(
                    "no agents defined (add an `[[agent]]` table)".into(),
                ));
            }
            Some(toml::Value::Array(list)) => list,
            Some(_) => {
                return Err(file_err(
                    "`agent` must be an array of tables (`[[agent]]`)".into(),
                ));
            }
        };
        if list.is_empty() {
            return Err(file_err(
                "no agents defined (add an `[[agent]]` table)".into(),
            ));
        }

        let mut agents = Self {
            file: file.to_path_buf(),
            instruction_files: Vec::new(),
            agents: Vec::with_capacity(list.len()),
            by_number: HashMap::new(),
            by_id: HashMap::new(),
        };
        for (index, value) in list.iter().enumerate() {
            let label = agent_label(index, value.get("id").and_then(|v| v.as_str()));
            let err = |field: &str, message: String| AgentsError::Agent {
                file: file_name.clone(),
                agent: label.clone(),
                field: field.to_owned(),
                message,
            };
            let raw: RawAgent = value.clone().try_into().map_err(|e: toml::de::Error| {
                let (field, message) = serde_field_error(&e);
                err(&field, message)
            })?;
            if let Some(rel) = &raw.instructions_file {
                agents.instruction_files.push(dir.join(rel));
            }
            let agent = validate(raw, dir, &err)?;
            if agents.by_id.contains_key(&agent.id) {
                return Err(err("id", format!("duplicate agent id `{}`", agent.id)));
            }
            for number in &agent.numbers {
                if let Some(&other) = agents.by_number.get(number) {
                    return Err(err(
                        "numbers",
                        format!(
                            "number `{number}` is already answered by agent `{}`",
                            agents.agents[other].id
                        ),
                    ));
                }
            }
            let at = agents.agents.len();
            agents.by_id.insert(agent.id.clone(), at);
            for number in &agent.numbers {
                agents.by_number.insert(number.clone(), at);
            }
            agents.agents.push(Arc::new(agent));
        }
        // Handoff targets may come later in the file, so they are checked once all are known.
        for (index, agent) in agents.agents.iter().enumerate() {
            if let Some(unknown) = agent
                .handoff_to
                .iter()
                .find(|t| !agents.by_id.contains_key(t.as_str()))
            {
                return Err(AgentsError::Agent {
                    file: file_name.clone(),
                    agent: agent_label(index, Some(&agent.id)),
                    field: "handoff_to".into(),
                    message: format!("unknown agent `{unknown}` (no `[[agent]]` has this id)"),
                });
            }
        }
        Ok(agents)
    }

    /// The agent answering dialed number `to`: the exact number, else the default (`*`).
    pub fn route(&self, to: &str) -> Option<&Arc<Agent>> {
        self.by_number
            .get(to)
            .or_else(|| self.by_number.get(DEFAULT_NUMBER))
            .map(|&i| &self.agents[i])
    }

    /// The agent with this id.
    pub fn by_id(&self, id: &str) -> Option<&Arc<Agent>> {
        self.by_id.get(id).map(|&i| &self.agents[i])
    }

    /// Every number a call answered by agent `id` may be transferred to: the `transfer_to` of
    /// that agent and of every agent it can reach through `handoff_to` (handoffs chain). Empty
    /// for an unknown id.
    pub fn transfer_targets(&self, id: &str) -> Vec<&str> {
        let mut seen = HashSet::new();
        let mut queue: Vec<&str> = vec![id];
        let mut targets = Vec::new();
        while let Some(id) = queue.pop() {
            let Some(agent) = self.by_id(id).filter(|_| seen.insert(id)) else {
                continue;
            };
            let numbers = agent.transfer_to.iter().map(String::as_str);
            let departments = agent.departments.iter().map(|d| d.number.as_str());
            for to in numbers.chain(departments) {
                if !targets.contains(&to) {
                    targets.push(to);
                }
            }
            queue.extend(agent.handoff_to.iter().map(String::as_str));
        }
        targets
    }

    /// All agents, in file order.
    pub fn all(&self) -> &[Arc<Agent>] {
        &self.agents
    }

    /// The file they came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Every file the agents were read from: the agents file, then each `instructions_file`.
    /// A change to any of them changes the agents, so a reload watches them all.
    pub fn sources(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.file.as_path())
            .chain(self.instruction_files.iter().map(PathBuf::as_path))
    }

    /// The ids of the agents that list `tool`, in file order.
    pub fn listing(&self, tool: &str) -> Vec<&str> {
        self.agents
            .iter()
            .filter(|a| a.allows_tool(tool))
            .map(|a| a.id.as_str())
            .collect()
    }

    /// The business tools the agents list (built-ins left out), each once, in file order: the
    /// names that must be registered in `voice-tools` for the model to get them.
    pub fn business_tools(&self) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        self.agents
            .iter()
            .flat_map(|a| a.tools.iter())
            .map(String::as_str)
            .filter(|t| !BUILTIN_TOOLS.contains(t) && seen.insert(*t))
            .collect()
    }
}

fn agent_label(index: usize, id: Option<&str>) -> String {
    match id {
        Some(id) if !id.is_empty() => format!("agent \"{id}\" (#{})", index + 1),
        _ => format!("agent #{}", index + 1),
    }
}

/// Splits a serde error of one agent table into (field path, message). toml names the path of
/// type errors in its display (`in `turn_detection.threshold``); unknown and missing fields name
/// the field in the message.
fn serde_field_error(e: &toml::de::Error) -> (String, String) {
    let message = e.message().to_owned();
    let display = e.to_string();
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('`'))
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    let path = display
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("in `"))
        .and_then(|l| l.strip_suffix('`'))
        .map(str::to_owned);
    let field = quoted("unknown field ")
        .map(|f| match &path {
            Some(p) => format!("{p}.{f}"),
            None => f,
        })
        .or_else(|| quoted("missing field "))
        .or(path)
        .unwrap_or_else(|| "?".to_owned());
    (field, message)
}

type ErrFn<'a> = &'a dyn Fn(&str, String) -> AgentsError;

fn validate(mut raw: RawAgent, dir: &Path, err: ErrFn<'_>) -> Result<Agent, AgentsError> {
    let id_ok = !raw.id.is_empty()
        && raw.id.len() <= 64
        && raw
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !id_ok {
        return Err(err(
            "id",
            format!(
                "`{}` is not a valid id (1-64 characters of A-Z a-z 0-9 _ - .)",
                raw.id
            ),
        ));
    }

    let mut seen = HashSet::new();
    for number in &raw.numbers {
        if number.is_empty() || number.chars().any(char::is_whitespace) {
            return Err(err(
                "numbers",
                format!("`{number}` is not a phone number (E.164 like +15550001111, or `*`)"),
            ));
        }
        if !seen.insert(number.as_str()) {
            return Err(err("numbers", format!("`{number}` is listed twice")));
        }
    }

    let instructions = match (raw.instructions, raw.instructions_file) {
        (Some(_), Some(_)) => {
            return Err(err(
                "instructions_file",
                "give either `instructions` or `instructions_file`, not both".into(),
            ));
        }
        (None, None) => {
            return Err(err(
                "instructions",
                "missing: give `instructions` or `instructions_file`".into(),
            ));
        }
        (Some(text), None) => text,
        (None, Some(rel)) => {
            let path = dir.join(&rel);
            std::fs::read_to_string(&path).map_err(|e| {
                err(
                    "instructions_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?
        }
    };
    if instructions.trim().is_empty() {
        return Err(err("instructions", "must not be empty".into()));
    }

    let voice = raw.voice.unwrap_or_else(|| DEFAULT_VOICE.to_owned());
    if voice.trim().is_empty() {
        return Err(err("voice", "must not be empty".into()));
    }

    if let Some(greeting) = &raw.greeting {
        if greeting.trim().is_empty() {
            return Err(err(
                "greeting",
                "must not be empty (omit it to wait for the caller)".into(),
            ));
        }
        // The greeting is quoted inside the instruction that makes the model say it.
        if greeting.contains('"') {
            return Err(err("greeting", "must not contain double quotes".into()));
        }
    }

    let mut seen = HashSet::new();
    for tool in &raw.tools {
        validate_tool_name(tool).map_err(|e| {
            err(
                "tools",
                format!("{e} (tool names match ^[A-Za-z0-9_-]{{1,64}}$)"),
            )
        })?;
        if !seen.insert(tool.as_str()) {
            return Err(err("tools", format!("`{tool}` is listed twice")));
        }
    }
    if let Some(apology) = &raw.apology
        && apology.trim().is_empty()
    {
        return Err(err(
            "apology",
            "must not be empty (leave it out for the default)".into(),
        ));
    }
    let (transfer_to, departments) = transfer_destinations(raw.transfer_to.take(), err)?;
    let transfer_timeout = match raw.transfer_timeout_seconds {
        None => DEFAULT_TRANSFER_TIMEOUT,
        Some(s) if TRANSFER_TIMEOUT_RANGE.contains(&s) => Duration::from_secs(u64::from(s)),
        Some(s) => {
            return Err(err(
                "transfer_timeout_seconds",
                format!(
                    "{s} is outside {}..={} (Twilio's <Dial timeout>)",
                    TRANSFER_TIMEOUT_RANGE.start(),
                    TRANSFER_TIMEOUT_RANGE.end()
                ),
            ));
        }
    };
    if raw.tools.iter().any(|t| t == TRANSFER_CALL)
        && transfer_to.is_none()
        && departments.is_empty()
    {
        return Err(err(
            "transfer_to",
            "missing: `transfer_call` is in `tools`, so `transfer_to` must say where to transfer"
                .into(),
        ));
    }

    // `handoff_to` ids are checked against the whole file in `Agents::parse`.
    let lists_handoff = raw.tools.iter().any(|t| t == HANDOFF);
    if lists_handoff && raw.handoff_to.is_empty() {
        return Err(err(
            "handoff_to",
            "missing: `handoff` is in `tools`, so `handoff_to` must name the agents it may hand \
             the call to"
                .into(),
        ));
    }
    if !lists_handoff && !raw.handoff_to.is_empty() {
        return Err(err(
            "handoff_to",
            "`handoff_to` is set but `handoff` is not in `tools` (add it, or remove `handoff_to`)"
                .into(),
        ));
    }
    let mut seen = HashSet::new();
    for target in &raw.handoff_to {
        if *target == raw.id {
            return Err(err(
                "handoff_to",
                format!("`{target}` is this agent itself"),
            ));
        }
        if !seen.insert(target.as_str()) {
            return Err(err("handoff_to", format!("`{target}` is listed twice")));
        }
    }

    let seconds = |field: &str, v: Option<u32>| match v {
        Some(0) => Err(err(
            field,
            "must be at least 1 (omit it for no limit)".into(),
        )),
        Some(s) => Ok(Some(Duration::from_secs(u64::from(s)))),
        None => Ok(None),
    };
    let max_call = seconds("max_call_seconds", raw.max_call_seconds)?;
    let idle_timeout = seconds("idle_timeout_seconds", raw.idle_timeout_seconds)?;
    let amd_timeout = match raw.amd_timeout_seconds {
        None => DEFAULT_AMD_TIMEOUT,
        Some(s) if (1..=MAX_AMD_TIMEOUT_SECONDS).contains(&s) => Duration::from_secs(u64::from(s)),
        Some(_) => {
            return Err(err(
                "amd_timeout_seconds",
                format!("must be between 1 and {MAX_AMD_TIMEOUT_SECONDS}"),
            ));
        }
    };
    let voicemail_message = match raw.voicemail_message {
        Some(text) if text.trim().is_empty() => {
            return Err(err(
                "voicemail_message",
                "must not be empty (omit it to hang up on machines)".into(),
            ));
        }
        other => other,
    };

    let turn_detection = match raw.turn_detection {
        None => TurnDetectionConfig::default(),
        Some(td) => turn_detection(td, err)?,
    };
    let filler_after = match raw.filler_after_ms {
        None => Some(DEFAULT_FILLER_AFTER),
        Some(0) => None,
        Some(ms) if ms > MAX_FILLER_AFTER_MS => {
            return Err(err(
                "filler_after_ms",
                format!(
                    "must be at most {MAX_FILLER_AFTER_MS} (0 turns the filler line off), got {ms}"
                ),
            ));
        }
        Some(ms) => Some(Duration::from_millis(u64::from(ms))),
    };

    let model = match raw.model {
        None => None,
        Some(m) => {
            let ok = !m.is_empty()
                && m.len() <= 64
                && m.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if !ok {
                return Err(err(
                    "model",
                    format!(
                        "`{m}` is not a model id (1-64 characters of A-Z a-z 0-9 - . _, e.g. \
                         `gpt-realtime` or `gpt-realtime-mini`)"
                    ),
                ));
            }
            Some(m)
        }
    };
    let noise_reduction = match raw.noise_reduction.as_deref() {
        None | Some("off") => None,
        Some(n) if NOISE_REDUCTION_TYPES.contains(&n) => Some(n.to_owned()),
        Some(n) => {
            return Err(err(
                "noise_reduction",
                format!("`{n}` is not one of near_field, far_field, off"),
            ));
        }
    };
    let mut redact = Vec::new();
    for word in &raw.redact {
        match PiiKind::parse(word) {
            Some(kind) if !redact.contains(&kind) => redact.push(kind),
            Some(_) => {}
            None => {
                let known: Vec<&str> = PiiKind::ALL.iter().map(|k| k.as_str()).collect();
                return Err(err(
                    "redact",
                    format!("`{word}` is not one of {}", known.join(", ")),
                ));
            }
        }
    }
    let transcription = match raw.transcription {
        None | Some(toml::Value::Boolean(true)) => Some(default_transcription()),
        Some(toml::Value::Boolean(false)) => None,
        Some(table @ toml::Value::Table(_)) => {
            Some(transcription(sub_table(table, "transcription", err)?, err)?)
        }
        Some(other) => {
            return Err(err(
                "transcription",
                format!(
                    "expected `true`, `false` or a table (`[agent.transcription]`), got {}",
                    other.type_str()
                ),
            ));
        }
    };
    let truncation = match raw.truncation {
        None => None,
        Some(toml::Value::String(m)) if m == "auto" || m == "disabled" => Some(Truncation::Mode(m)),
        Some(table @ toml::Value::Table(_)) => {
            let t: RawTruncationTable = sub_table(table, "truncation", err)?;
            Some(truncation(t, err)?)
        }
        Some(m) => {
            return Err(err(
                "truncation",
                format!(
                    "{m} is not `auto` or `disabled` (or a table with `retention_ratio` and \
                     `post_instructions_tokens`)"
                ),
            ));
        }
    };

    Ok(Agent {
        id: raw.id,
        numbers: raw.numbers,
        instructions,
        voice,
        greeting: raw.greeting,
        tools: raw.tools,
        transfer_to,
        departments,
        transfer_timeout,
        warm_transfer: raw.warm_transfer,
        apology: raw.apology.unwrap_or_else(|| DEFAULT_APOLOGY.to_owned()),
        handoff_to: raw.handoff_to,
        max_call,
        idle_timeout,
        turn_detection,
        filler_after,
        model,
        noise_reduction,
        transcription,
        truncation,
        redact,
        record: raw.record.unwrap_or(true),
        amd_timeout,
        voicemail_message,
    })
}

/// `transfer_to`: a number, or a table of department name to number.
fn transfer_destinations(
    value: Option<toml::Value>,
    err: ErrFn<'_>,
) -> Result<(Option<String>, Vec<Department>), AgentsError> {
    let is_number = |to: &str| !to.is_empty() && !to.chars().any(char::is_whitespace);
    match value {
        None => Ok((None, Vec::new())),
        Some(toml::Value::String(to)) if is_number(&to) => Ok((Some(to), Vec::new())),
        Some(toml::Value::String(to)) => {
            Err(err("transfer_to", format!("`{to}` is not a phone number")))
        }
        Some(toml::Value::Table(table)) => {
            if table.is_empty() {
                return Err(err(
                    "transfer_to",
                    "names no department (give a number, or a table of department = number)".into(),
                ));
            }
            let mut departments = Vec::with_capacity(table.len());
            for (name, number) in table {
                let field = format!("transfer_to.{name}");
                // The model names the department in a tool call: the function-name alphabet
                // keeps it a plain word.
                if validate_tool_name(&name).is_err() {
                    return Err(err(
                        &field,
                        "a department name is 1-64 characters of A-Z a-z 0-9 _ -".into(),
                    ));
                }
                match number {
                    toml::Value::String(number) if is_number(&number) => {
                        departments.push(Department { name, number });
                    }
                    other => {
                        return Err(err(&field, format!("`{other}` is not a phone number")));
                    }
                }
            }
            Ok((None, departments))
        }
        Some(other) => Err(err(
            "transfer_to",
            format!("{other} is not a number or a table of department = number"),
        )),
    }
}

/// Deserializes the table of field `field`, naming `field.<key>` in its errors.
fn sub_table<T: serde::de::DeserializeOwned>(
    table: toml::Value,
    field: &str,
    err: ErrFn<'_>,
) -> Result<T, AgentsError> {
    table.try_into().map_err(|e: toml::de::Error| {
        let (inner, message) = serde_field_error(&e);
        err(&format!("{field}.{inner}"), message)
    })
}

fn truncation(t: RawTruncationTable, err: ErrFn<'_>) -> Result<Truncation, AgentsError> {
    let Some(ratio) = t.retention_ratio else {
        return Err(err(
            "truncation.retention_ratio",
            "missing: the share of the conversation kept when it is truncated (e.g. 0.8)".into(),
        ));
    };
    if !(ratio > 0.0 && ratio <= 1.0) {
        return Err(err(
            "truncation.retention_ratio",
            format!("must be above 0 and at most 1, got {ratio}"),
        ));
    }
    if let Some(tokens) = t.post_instructions_tokens
        && !(1..=MAX_POST_INSTRUCTIONS_TOKENS).contains(&tokens)
    {
        return Err(err(
            "truncation.post_instructions_tokens",
            format!("must be between 1 and {MAX_POST_INSTRUCTIONS_TOKENS}, got {tokens}"),
        ));
    }
    Ok(Truncation::retention_ratio(
        ratio,
        t.post_instructions_tokens,
    ))
}

fn transcription(t: RawTranscriptionTable, err: ErrFn<'_>) -> Result<Transcription, AgentsError> {
    let model = t
        .model
        .unwrap_or_else(|| DEFAULT_TRANSCRIPTION_MODEL.to_owned());
    if !TRANSCRIPTION_MODELS.contains(&model.as_str()) {
        return Err(err(
            "transcription.model",
            format!(
                "`{model}` is not one of {} (or `transcription = false` to turn it off)",
                TRANSCRIPTION_MODELS.join(", ")
            ),
        ));
    }
    if let Some(lang) = &t.language
        && !(lang.len() == 2 && lang.bytes().all(|b| b.is_ascii_lowercase()))
    {
        return Err(err(
            "transcription.language",
            format!("`{lang}` is not an ISO-639-1 code (two lower-case letters, e.g. `en`)"),
        ));
    }
    if let Some(prompt) = &t.prompt {
        if prompt.trim().is_empty() {
            return Err(err(
                "transcription.prompt",
                "must not be empty (omit it for none)".into(),
            ));
        }
        if model == "gpt-realtime-whisper" {
            return Err(err(
                "transcription.prompt",
                "`gpt-realtime-whisper` takes no prompt".into(),
            ));
        }
    }
    Ok(Transcription {
        model,
        language: t.language,
        prompt: t.prompt,
    })
}

fn turn_detection(
    td: RawTurnDetection,
    err: ErrFn<'_>,
) -> Result<TurnDetectionConfig, AgentsError> {
    match td.kind.as_deref().unwrap_or("server_vad") {
        "server_vad" => {
            if td.eagerness.is_some() {
                return Err(err(
                    "turn_detection.eagerness",
                    "only `semantic_vad` takes `eagerness`".into(),
                ));
            }
            let threshold = td.threshold.unwrap_or(f64::from(DEFAULT_THRESHOLD));
            if !(0.0..=1.0).contains(&threshold) {
                return Err(err(
                    "turn_detection.threshold",
                    format!("must be between 0 and 1, got {threshold}"),
                ));
            }
            Ok(TurnDetectionConfig::ServerVad {
                threshold: threshold as f32,
                prefix_padding_ms: td.prefix_padding_ms.unwrap_or(DEFAULT_PREFIX_PADDING_MS),
                silence_duration_ms: td
                    .silence_duration_ms
                    .unwrap_or(DEFAULT_SILENCE_DURATION_MS),
            })
        }
        "semantic_vad" => {
            for (field, set) in [
                ("threshold", td.threshold.is_some()),
                ("silence_duration_ms", td.silence_duration_ms.is_some()),
                ("prefix_padding_ms", td.prefix_padding_ms.is_some()),
            ] {
                if set {
                    return Err(err(
                        &format!("turn_detection.{field}"),
                        "only `server_vad` takes this field".into(),
                    ));
                }
            }
            if let Some(e) = &td.eagerness
                && !EAGERNESS.contains(&e.as_str())
            {
                return Err(err(
                    "turn_detection.eagerness",
                    format!("`{e}` is not one of low, medium, high, auto"),
                ));
            }
            Ok(TurnDetectionConfig::SemanticVad {
                eagerness: td.eagerness,
            })
        }
        other => Err(err(
            "turn_detection.type",
            format!("unknown type `{other}` (expected `server_vad` or `semantic_vad`)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/switchboard/agents.toml";

    fn parse(text: &str) -> Result<Agents, AgentsError> {
        Agents::parse(text, FILE, Path::new("/nonexistent-dir"))
    }

    /// Asserts that `text` fails with a message naming the file, the agent and the field.
    #[track_caller]
    fn fails(text: &str, agent: &str, field: &str) -> String {
        let e = parse(text).expect_err("should fail");
        let msg = e.to_string();
        assert!(msg.contains(FILE), "no file in {msg:?}");
        assert!(msg.contains(agent), "no agent {agent:?} in {msg:?}");
        assert!(
            msg.contains(&format!("`{field}`")),
            "no field {field:?} in {msg:?}"
        );
        msg
    }

    #[test]
    fn answering_machine_settings_default_and_parse() {
        let agents = parse("[[agent]]\nid='a'\ninstructions='x'\n").unwrap();
        let a = agents.by_id("a").unwrap();
        assert_eq!(a.amd_timeout, DEFAULT_AMD_TIMEOUT);
        assert_eq!(a.voicemail_message, None);
        let agents = parse(
            "[[agent]]\nid='a'\ninstructions='x'\namd_timeout_seconds=8\nvoicemail_message='Call us back.'\n",
        )
        .unwrap();
        let a = agents.by_id("a").unwrap();
        assert_eq!(a.amd_timeout, Duration::from_secs(8));
        assert_eq!(a.voicemail_message.as_deref(), Some("Call us back."));
    }

    const FULL: &str = r#"
[[agent]]
id = "front-desk"
numbers = ["+15550001111"]
instructions = "You are the front desk."
voice = "cedar"
greeting = "Thanks for calling Acme Dental, how can I help?"
tools = ["lookup_customer", "book_appointment", "set_outcome", "end_call", "transfer_call"]
transfer_to = "+15550002222"
apology = "Sorry, we lost you for a moment. Transferring you now."
max_call_seconds = 1800
idle_timeout_seconds = 30

[agent.turn_detection]
type = "server_vad"
threshold = 0.6
silence_duration_ms = 400
prefix_padding_ms = 200

[[agent]]
id = "fallback"
numbers = ["*"]
instructions = "You answer everything else."

[agent.turn_detection]
type = "semantic_vad"
eagerness = "high"
"#;

    #[test]
    fn parses_the_documented_example() {
        let agents = parse(FULL).unwrap();
        let fd = agents.by_id("front-desk").unwrap();
        assert_eq!(fd.voice, "cedar");
        assert_eq!(fd.tools.len(), 5);
        assert_eq!(fd.transfer_to.as_deref(), Some("+15550002222"));
        assert_eq!(
            fd.apology,
            "Sorry, we lost you for a moment. Transferring you now."
        );
        assert_eq!(agents.by_id("fallback").unwrap().apology, DEFAULT_APOLOGY);
        assert_eq!(fd.max_call, Some(Duration::from_secs(1800)));
        assert_eq!(fd.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(
            fd.turn_detection,
            TurnDetectionConfig::ServerVad {
                threshold: 0.6,
                prefix_padding_ms: 200,
                silence_duration_ms: 400
            }
        );
        let fb = agents.by_id("fallback").unwrap();
        assert_eq!(fb.voice, DEFAULT_VOICE);
        assert_eq!(
            fb.turn_detection.to_session(),
            TurnDetection::SemanticVad {
                eagerness: Some("high".into()),
                create_response: Some(true),
                interrupt_response: Some(true)
            }
        );
    }

    #[test]
    fn routes_exact_number_then_default() {
        let agents = parse(FULL).unwrap();
        assert_eq!(agents.route("+15550001111").unwrap().id, "front-desk");
        assert_eq!(agents.route("+19999999999").unwrap().id, "fallback");
        let only = parse("[[agent]]\nid='a'\nnumbers=['+1']\ninstructions='x'").unwrap();
        assert!(only.route("+2").is_none());
        assert!(only.by_id("nope").is_none());
    }

    #[test]
    fn default_turn_detection_is_server_vad() {
        let agents = parse("[[agent]]\nid='a'\ninstructions='x'").unwrap();
        assert_eq!(
            agents.all()[0].turn_detection.to_session(),
            TurnDetection::ServerVad {
                threshold: Some(0.5),
                prefix_padding_ms: Some(300),
                silence_duration_ms: Some(500),
                idle_timeout_ms: None,
                create_response: Some(true),
                interrupt_response: Some(true)
            }
        );
    }

    #[test]
    fn sources_and_business_tools() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fd.md"), "Be kind.").unwrap();
        let path = dir.path().join("agents.toml");
        std::fs::write(
            &path,
            "[[agent]]\nid='a'\ninstructions_file='fd.md'\ntools=['end_call','lookup','book']\n\
             [[agent]]\nid='b'\ninstructions='x'\nnumbers=['+1555']\ntools=['book','hours']",
        )
        .unwrap();
        let agents = Agents::load(&path).unwrap();
        let sources: Vec<_> = agents.sources().collect();
        assert_eq!(
            sources,
            [path.as_path(), dir.path().join("fd.md").as_path()]
        );
        assert_eq!(agents.business_tools(), ["lookup", "book", "hours"]);
        assert_eq!(agents.listing("book"), ["a", "b"]);
        assert!(agents.listing("nothing").is_empty());
    }

    #[test]
    fn reads_instructions_file_relative_to_the_agents_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fd.md"), "Be kind.").unwrap();
        let path = dir.path().join("agents.toml");
        std::fs::write(&path, "[[agent]]\nid='a'\ninstructions_file='fd.md'").unwrap();
        let agents = Agents::load(&path).unwrap();
        assert_eq!(agents.all()[0].instructions, "Be kind.");
        assert_eq!(agents.file(), path.as_path());
    }

    #[test]
    fn unreadable_instructions_file() {
        let msg = fails(
            "[[agent]]\nid='a'\ninstructions_file='missing.md'",
            "agent \"a\"",
            "instructions_file",
        );
        assert!(msg.contains("missing.md"), "{msg}");
    }

    #[test]
    fn missing_agents_file() {
        let e = Agents::load("/nonexistent/agents.toml").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/agents.toml"));
    }

    #[test]
    fn unknown_agent_field() {
        let msg = fails(
            "[[agent]]\nid='a'\ninstructions='x'\nvoise='marin'",
            "agent \"a\"",
            "voise",
        );
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn unknown_turn_detection_field() {
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\n[agent.turn_detection]\nthreshhold=0.5",
            "agent \"a\"",
            "turn_detection.threshhold",
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\nmax_call_seconds='long'",
            "agent \"a\"",
            "max_call_seconds",
        );
    }

    #[test]
    fn missing_id_names_the_agent_by_position() {
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\n[[agent]]\ninstructions='y'",
            "agent #2",
            "id",
        );
    }

    #[test]
    fn bad_id() {
        fails(
            "[[agent]]\nid='a b'\ninstructions='x'",
            "agent \"a b\"",
            "id",
        );
    }

    #[test]
    fn duplicate_ids() {
        let msg = fails(
            "[[agent]]\nid='a'\ninstructions='x'\n[[agent]]\nid='a'\ninstructions='y'",
            "(#2)",
            "id",
        );
        assert!(msg.contains("duplicate"), "{msg}");
    }

    #[test]
    fn duplicate_numbers() {
        let msg = fails(
            "[[agent]]\nid='a'\nnumbers=['+1']\ninstructions='x'\n\
             [[agent]]\nid='b'\nnumbers=['+2','+1']\ninstructions='y'",
            "agent \"b\"",
            "numbers",
        );
        assert!(msg.contains("`+1`") && msg.contains("`a`"), "{msg}");
        fails(
            "[[agent]]\nid='a'\nnumbers=['*']\ninstructions='x'\n\
             [[agent]]\nid='b'\nnumbers=['*']\ninstructions='y'",
            "agent \"b\"",
            "numbers",
        );
        fails(
            "[[agent]]\nid='a'\nnumbers=['+1', '+1']\ninstructions='x'",
            "agent \"a\"",
            "numbers",
        );
        fails(
            "[[agent]]\nid='a'\nnumbers=['+1 555']\ninstructions='x'",
            "agent \"a\"",
            "numbers",
        );
    }

    #[test]
    fn missing_instructions() {
        fails("[[agent]]\nid='a'", "agent \"a\"", "instructions");
        fails(
            "[[agent]]\nid='a'\ninstructions='  '",
            "agent \"a\"",
            "instructions",
        );
    }

    #[test]
    fn both_instructions_and_file() {
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\ninstructions_file='x.md'",
            "agent \"a\"",
            "instructions_file",
        );
    }

    #[test]
    fn bad_tool_names() {
        let msg = fails(
            "[[agent]]\nid='a'\ninstructions='x'\ntools=['lookup.customer']",
            "agent \"a\"",
            "tools",
        );
        assert!(msg.contains("lookup.customer"), "{msg}");
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\ntools=['end_call','end_call']",
            "agent \"a\"",
            "tools",
        );
    }

    #[test]
    fn an_empty_apology_is_refused() {
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\napology='  '",
            "agent \"a\"",
            "apology",
        );
    }

    #[test]
    fn transfer_to_may_name_departments() {
        let agents = parse(
            "[[agent]]\nid='a'\ninstructions='x'\ntools=['transfer_call','send_dtmf']\n\
             transfer_timeout_seconds=12\nwarm_transfer=true\n\
             transfer_to={ sales='+15550002222', billing='+15550003333' }\n",
        )
        .unwrap();
        let a = agents.by_id("a").unwrap();
        assert_eq!(a.transfer_to, None);
        assert_eq!(a.transfer_timeout, Duration::from_secs(12));
        assert!(a.warm_transfer);
        let names: Vec<&str> = a.departments.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["billing", "sales"]);
        assert_eq!(
            a.transfer_destination(Some("Sales")),
            Ok(("sales".into(), "+15550002222".into()))
        );
        assert_eq!(
            a.transfer_destination(Some("legal")),
            Err(DestinationError::UnknownDepartment("billing, sales".into()))
        );
        assert!(a.transfer_destination(None).is_err());
        // A lost call still reaches a human: the first department.
        assert_eq!(a.lost_call_transfer(), Some("+15550003333"));
        let mut targets = agents.transfer_targets("a");
        targets.sort_unstable();
        assert_eq!(targets, ["+15550002222", "+15550003333"]);
    }

    #[test]
    fn the_single_number_form_ignores_the_department() {
        let agents =
            parse("[[agent]]\nid='a'\ninstructions='x'\ntransfer_to='+15550002222'").unwrap();
        let a = agents.by_id("a").unwrap();
        assert_eq!(a.transfer_timeout, DEFAULT_TRANSFER_TIMEOUT);
        assert_eq!(
            a.transfer_destination(Some("sales")),
            Ok((String::new(), "+15550002222".into()))
        );
        assert_eq!(a.lost_call_transfer(), Some("+15550002222"));
        assert_eq!(
            Agent::new("b", "x").transfer_destination(None),
            Err(DestinationError::NotConfigured)
        );
        assert_eq!(Agent::new("b", "x").lost_call_transfer(), None);
    }

    #[test]
    fn bad_departments_and_timeouts_are_refused() {
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\ntransfer_to={ sales='+1 555' }",
            "agent \"a\"",
            "transfer_to.sales",
        );
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\ntransfer_to={ 'front desk'='+15550002222' }",
            "agent \"a\"",
            "transfer_to.front desk",
        );
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\ntransfer_to={}",
            "agent \"a\"",
            "transfer_to",
        );
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\ntransfer_to=5",
            "agent \"a\"",
            "transfer_to",
        );
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\ntransfer_to='+15550002222'\n\
             transfer_timeout_seconds=2",
            "agent \"a\"",
            "transfer_timeout_seconds",
        );
    }

    #[test]
    fn transfer_call_needs_transfer_to() {
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\ntools=['transfer_call']",
            "agent \"a\"",
            "transfer_to",
        );
    }

    #[test]
    fn handoff_targets() {
        let agents = parse(
            "[[agent]]\nid='desk'\ninstructions='x'\ntools=['handoff']\nhandoff_to=['billing']\n\
             [[agent]]\nid='billing'\ninstructions='y'",
        )
        .unwrap();
        assert_eq!(agents.by_id("desk").unwrap().handoff_to, vec!["billing"]);
        assert!(agents.by_id("billing").unwrap().handoff_to.is_empty());
    }

    #[test]
    fn transfer_targets_follow_handoff_chains() {
        let agents = parse(
            "[[agent]]\nid='desk'\ninstructions='x'\ntools=['handoff']\nhandoff_to=['billing']\n\
             transfer_to='+15550002222'\n\
             [[agent]]\nid='billing'\ninstructions='x'\ntools=['handoff']\nhandoff_to=['desk', 'legal']\n\
             transfer_to='+15550003333'\n\
             [[agent]]\nid='legal'\ninstructions='x'\ntransfer_to='+15550004444'\n\
             [[agent]]\nid='other'\ninstructions='x'\ntransfer_to='+15550009999'\n",
        )
        .unwrap();
        let mut desk = agents.transfer_targets("desk");
        desk.sort_unstable();
        assert_eq!(desk, ["+15550002222", "+15550003333", "+15550004444"]);
        assert_eq!(agents.transfer_targets("legal"), ["+15550004444"]);
        assert!(agents.transfer_targets("nobody").is_empty());
    }

    #[test]
    fn handoff_validation_names_file_agent_and_field() {
        let msg = fails(
            "[[agent]]\nid='desk'\ninstructions='x'\ntools=['handoff']\nhandoff_to=['biling']\n\
             [[agent]]\nid='billing'\ninstructions='y'",
            "agent \"desk\" (#1)",
            "handoff_to",
        );
        assert!(msg.contains("unknown agent `biling`"), "{msg}");
        let msg = fails(
            "[[agent]]\nid='desk'\ninstructions='x'\ntools=['handoff']",
            "agent \"desk\"",
            "handoff_to",
        );
        assert!(msg.contains("missing"), "{msg}");
        let msg = fails(
            "[[agent]]\nid='desk'\ninstructions='x'\nhandoff_to=['billing']\n\
             [[agent]]\nid='billing'\ninstructions='y'",
            "agent \"desk\"",
            "handoff_to",
        );
        assert!(msg.contains("`handoff` is not in `tools`"), "{msg}");
        let msg = fails(
            "[[agent]]\nid='desk'\ninstructions='x'\ntools=['handoff']\nhandoff_to=['desk']",
            "agent \"desk\"",
            "handoff_to",
        );
        assert!(msg.contains("itself"), "{msg}");
        fails(
            "[[agent]]\nid='desk'\ninstructions='x'\ntools=['handoff']\nhandoff_to=['b','b']\n\
             [[agent]]\nid='b'\ninstructions='y'",
            "agent \"desk\"",
            "handoff_to",
        );
    }

    #[test]
    fn threshold_out_of_range() {
        let msg = fails(
            "[[agent]]\nid='a'\ninstructions='x'\n[agent.turn_detection]\nthreshold=1.5",
            "agent \"a\"",
            "turn_detection.threshold",
        );
        assert!(msg.contains("1.5"), "{msg}");
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\n[agent.turn_detection]\nthreshold=-0.1",
            "agent \"a\"",
            "turn_detection.threshold",
        );
    }

    #[test]
    fn unknown_turn_detection_type() {
        let msg = fails(
            "[[agent]]\nid='a'\ninstructions='x'\n[agent.turn_detection]\ntype='push_to_talk'",
            "agent \"a\"",
            "turn_detection.type",
        );
        assert!(msg.contains("push_to_talk"), "{msg}");
    }

    #[test]
    fn semantic_vad_fields() {
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\n[agent.turn_detection]\ntype='semantic_vad'\nthreshold=0.5",
            "agent \"a\"",
            "turn_detection.threshold",
        );
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\n[agent.turn_detection]\ntype='semantic_vad'\neagerness='eager'",
            "agent \"a\"",
            "turn_detection.eagerness",
        );
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\n[agent.turn_detection]\neagerness='low'",
            "agent \"a\"",
            "turn_detection.eagerness",
        );
    }

    const BASE: &str = "[[agent]]\nid='a'\ninstructions='x'\n";

    #[test]
    fn the_shipped_agents_file_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../agents/agents.toml");
        let agents = Agents::load(path).unwrap_or_else(|e| panic!("{e}"));
        let desk = agents.by_id("front-desk").unwrap();
        assert_eq!(desk.noise_reduction.as_deref(), Some("near_field"));
    }

    #[test]
    fn calls_are_recorded_unless_the_agent_says_record_false() {
        assert!(parse(BASE).unwrap().by_id("a").unwrap().record);
        let off = parse(&format!("{BASE}record = false\n")).unwrap();
        assert!(!off.by_id("a").unwrap().record);
        fails(&format!("{BASE}record = 'no'\n"), "agent \"a\"", "record");
    }

    #[test]
    fn redact_lists_kinds_of_personal_data() {
        let agents = parse(&format!("{BASE}redact = ['phone', 'card', 'phone']\n")).unwrap();
        assert_eq!(
            agents.by_id("a").unwrap().redact,
            [PiiKind::Phone, PiiKind::Card]
        );
        let none = parse(BASE).unwrap();
        assert!(none.by_id("a").unwrap().redact.is_empty());
        let msg = fails(
            &format!("{BASE}redact = ['phone', 'address']\n"),
            "agent \"a\"",
            "redact",
        );
        assert!(
            msg.contains("`address` is not one of phone, email, card, ssn"),
            "{msg}"
        );
    }

    #[test]
    fn model_settings_parse() {
        let agents = parse(&format!(
            "{BASE}model = 'gpt-realtime-mini'\nnoise_reduction = 'far_field'\n\
             [agent.transcription]\nmodel = 'gpt-4o-transcribe'\nlanguage = 'de'\nprompt = 'Zahnarzt'\n\
             [agent.truncation]\nretention_ratio = 0.8\npost_instructions_tokens = 8000\n\
             [agent.turn_detection]\ntype = 'semantic_vad'\neagerness = 'low'\n"
        ))
        .unwrap();
        let a = agents.by_id("a").unwrap();
        assert_eq!(a.model.as_deref(), Some("gpt-realtime-mini"));
        assert_eq!(a.noise_reduction.as_deref(), Some("far_field"));
        assert_eq!(
            a.transcription,
            Some(Transcription {
                model: "gpt-4o-transcribe".into(),
                language: Some("de".into()),
                prompt: Some("Zahnarzt".into()),
            })
        );
        assert_eq!(
            a.truncation,
            Some(Truncation::retention_ratio(0.8, Some(8000)))
        );
        assert_eq!(
            a.turn_detection,
            TurnDetectionConfig::SemanticVad {
                eagerness: Some("low".into())
            }
        );
        // Defaults: the worker's model, no noise reduction, transcription on, server truncation.
        let d = parse(BASE).unwrap();
        let d = d.by_id("a").unwrap();
        assert_eq!(d.model, None);
        assert_eq!(d.noise_reduction, None);
        assert_eq!(
            d.transcription.as_ref().map(|t| t.model.as_str()),
            Some(DEFAULT_TRANSCRIPTION_MODEL)
        );
        assert_eq!(d.truncation, None);
        // Off switches.
        let off = parse(&format!(
            "{BASE}transcription = false\nnoise_reduction = 'off'\ntruncation = 'disabled'\n"
        ))
        .unwrap();
        let off = off.by_id("a").unwrap();
        assert_eq!(off.transcription, None);
        assert_eq!(off.noise_reduction, None);
        assert_eq!(off.truncation, Some(Truncation::Mode("disabled".into())));
    }

    #[test]
    fn model_settings_errors_name_the_field() {
        for (extra, field, says) in [
            ("model = 'gpt realtime'", "model", "not a model id"),
            (
                "noise_reduction = 'phone'",
                "noise_reduction",
                "near_field, far_field, off",
            ),
            (
                "[agent.transcription]\nmodel = 'whisper-2'",
                "transcription.model",
                "gpt-4o-mini-transcribe",
            ),
            (
                "[agent.transcription]\nlanguage = 'English'",
                "transcription.language",
                "ISO-639-1",
            ),
            (
                "[agent.transcription]\nmodel = 'gpt-realtime-whisper'\nprompt = 'x'",
                "transcription.prompt",
                "no prompt",
            ),
            (
                "[agent.transcription]\nlanguge = 'en'",
                "transcription.languge",
                "unknown field",
            ),
            (
                "truncation = 'sometimes'",
                "truncation",
                "`auto` or `disabled`",
            ),
            (
                "[agent.truncation]\npost_instructions_tokens = 8000",
                "truncation.retention_ratio",
                "missing",
            ),
            (
                "[agent.truncation]\nretention_ratio = 1.5",
                "truncation.retention_ratio",
                "at most 1",
            ),
            (
                "[agent.truncation]\nretention_ratio = 0.5\npost_instructions_tokens = 0",
                "truncation.post_instructions_tokens",
                "between 1 and",
            ),
            (
                "amd_timeout_seconds = 0",
                "amd_timeout_seconds",
                "between 1 and",
            ),
            (
                "amd_timeout_seconds = 61",
                "amd_timeout_seconds",
                "between 1 and",
            ),
            (
                "voicemail_message = ' '",
                "voicemail_message",
                "must not be empty",
            ),
        ] {
            let msg = fails(&format!("{BASE}{extra}\n"), "agent \"a\"", field);
            assert!(msg.contains(says), "{extra}: {msg}");
        }
    }

    #[test]
    fn zero_limits() {
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\nmax_call_seconds=0",
            "agent \"a\"",
            "max_call_seconds",
        );
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\nidle_timeout_seconds=0",
            "agent \"a\"",
            "idle_timeout_seconds",
        );
    }

    #[test]
    fn filler_after() {
        let parse = |extra: &str| {
            let text = format!("[[agent]]\nid='a'\ninstructions='x'\n{extra}");
            Agents::parse(&text, "agents.toml", Path::new(".")).map(|a| a.all()[0].filler_after)
        };
        assert_eq!(parse("").unwrap(), Some(DEFAULT_FILLER_AFTER));
        assert_eq!(parse("filler_after_ms = 0").unwrap(), None);
        assert_eq!(
            parse("filler_after_ms = 800").unwrap(),
            Some(Duration::from_millis(800))
        );
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\nfiller_after_ms=600000",
            "agent \"a\"",
            "filler_after_ms",
        );
    }

    #[test]
    fn greeting_rules() {
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\ngreeting='Say \"hi\"'",
            "agent \"a\"",
            "greeting",
        );
        fails(
            "[[agent]]\nid='a'\ninstructions='x'\ngreeting=''",
            "agent \"a\"",
            "greeting",
        );
    }

    #[test]
    fn file_level_errors_name_the_file() {
        for text in ["", "[[agent]", "agents = 1", "agent = 1", "agent = []"] {
            let msg = parse(text).unwrap_err().to_string();
            assert!(msg.starts_with(FILE), "{msg}");
        }
    }
}
