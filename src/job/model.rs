//! The job file's types: what a user writes, with the Python SDK's defaults. The JSON Schema in
//! `schemas/job.schema.json` is generated from these types (doc comments become descriptions).

pub use super::llm::LlmSpec;
pub use super::sandbox::{
    CloudSandbox, DockerSandbox, LocalSandbox, Mount, PullPolicy, RemoteSandbox, RuntimeSandbox, Sandbox, Share,
    TargetType,
};
use super::values::{EnvString, HumanDuration, Usd, d300, is_false};
pub use super::values::{LITERAL_SECRET_MESSAGE, SecretRef};
use indexmap::IndexMap;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// An ohrun job: a sandbox, setup commands and the messages to send to the agent, one step each.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Job name; with the matrix values it makes each run's stable id. Letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// What the job is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Template variables, available as `{{ name }}` and `{{ vars.name }}`; `--var name=value` overrides them.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub vars: IndexMap<String, Value>,
    /// Fan-out: the cartesian product of the lists, plus `include`, minus `exclude`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<Box<Matrix>>,
    /// Where the agent-server runs.
    pub sandbox: Sandbox,
    /// The LLM the agent uses.
    pub llm: LlmSpec,
    /// The agent (the SDK's default agent).
    #[serde(default)]
    pub agent: AgentSpec,
    /// Shell commands run in the sandbox's working directory before the conversation starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup: Vec<Setup>,
    /// The messages sent to the agent, in order; each is one step that runs until the agent is done.
    pub steps: Vec<Step>,
    /// Budget and wall-clock limits of one run.
    #[serde(default)]
    pub limits: Limits,
    /// When to release the sandbox: `always` (default), `on_success` (keep it to debug a failure) or `never`.
    #[serde(default)]
    pub cleanup: CleanupPolicy,
    /// Where reports go.
    #[serde(default)]
    pub report: ReportSpec,
    /// Names of environment variables handed to the agent as secrets; their values are redacted everywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// A rehearsal script (path relative to the job file) used by `ohrun run --rehearse`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rehearsal: Option<String>,
    /// Retries of a run that failed for infrastructure reasons (never of an agent's or a job's failure).
    #[serde(default)]
    pub retries: Retries,
    /// Limits that hold across all the runs of one invocation.
    #[serde(default)]
    pub batch: BatchSpec,
    /// Checks of the agent's work once it has finished: each run gets a score and a verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Box<super::checks::VerifySpec>>,
    /// Trials of each run (each its own sandbox), for pass@k and flakiness; `--repeat` overrides it.
    #[serde(default = "JobSpec::default_repeat", skip_serializing_if = "JobSpec::is_one")]
    pub repeat: u32,
    /// A git repository cloned (on ohrun's side) into the working directory before setup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<Box<super::repo::RepoSpec>>,
    /// Files collected from the working directory before the sandbox is released, into the attempt's
    /// `artifacts/`: globs (`**` crosses directories, dotfiles match) or `{path, when}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<super::repo::ArtifactSpec>,
    /// The most bytes of artifacts one run keeps (`100MB`, default); what is over it is skipped and named.
    #[serde(
        default = "super::repo::ByteSize::default_artifacts_max",
        skip_serializing_if = "super::repo::is_default_artifacts_max"
    )]
    pub artifacts_max: super::repo::ByteSize,
    /// Deliver the agent's work: a branch pushed from ohrun's side and a pull request opened or updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver: Option<Box<super::deliver::DeliverSpec>>,
}

impl JobSpec {
    /// How many trials a run has: `--repeat`, else the job's `repeat`.
    pub fn trials(&self, repeat: Option<u32>) -> u32 {
        repeat.unwrap_or(self.repeat).max(1)
    }

    fn default_repeat() -> u32 {
        1
    }
    fn is_one(n: &u32) -> bool {
        *n == 1
    }
}

/// How often, and after how long, a run that failed for infrastructure reasons (the sandbox did not start,
/// the server was lost, a provider failed) is tried again. Each attempt keeps its own evidence.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Attempts after the first; 0 (the default) never retries. `--retries` overrides it.
    #[serde(default)]
    pub max: u32,
    /// Wait before the first retry; each further one waits twice as long (±25 %).
    #[serde(default = "Retries::default_backoff")]
    pub backoff: HumanDuration,
    /// Runtime API: when an attempt failed for lack of resources (not ready in time, out of memory), the next
    /// one asks for twice the `resource_factor` (at most 8).
    #[serde(default, skip_serializing_if = "is_false")]
    pub grow_resource_factor: bool,
}

impl Retries {
    fn default_backoff() -> HumanDuration {
        HumanDuration::secs(10)
    }
}

impl Default for Retries {
    fn default() -> Self {
        Retries { max: 0, backoff: Self::default_backoff(), grow_resource_factor: false }
    }
}

/// Limits of a whole batch (every run of one invocation).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// Most all the runs together may spend, in USD (earlier attempts and resumed batches included);
    /// `--max-cost` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<Usd>,
}

/// Matrix axes (a list of values each, scalars or objects, or `{file: path}`) and the `include` / `exclude`
/// lists.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Matrix {
    #[serde(flatten)]
    pub axes: IndexMap<String, Vec<Value>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<IndexMap<String, Value>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<IndexMap<String, Value>>,
}

impl<'de> Deserialize<'de> for Matrix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Matrix;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of axis names to lists of values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Matrix, A::Error> {
                let mut m = Matrix::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "include" => m.include = map.next_value()?,
                        "exclude" => m.exclude = map.next_value()?,
                        _ => {
                            let values: Vec<Value> = map.next_value()?;
                            if values.is_empty() {
                                return Err(de::Error::custom(format!(
                                    "matrix axis `{key}` has no values, so the matrix would be empty"
                                )));
                            }
                            m.axes.insert(key, values);
                        }
                    }
                }
                Ok(m)
            }
        }
        d.deserialize_map(V)
    }
}

impl JsonSchema for Matrix {
    fn schema_name() -> Cow<'static, str> {
        "Matrix".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Axes: each key is a list of values (scalars or objects). `include` adds or extends combinations, `exclude` removes those matching every given key.",
            "type": "object",
            "properties": {
                "include": {"type": "array", "items": {"type": "object"}},
                "exclude": {"type": "array", "items": {"type": "object"}}
            },
            "additionalProperties": {"anyOf": [
                {"type": "array", "minItems": 1},
                {"type": "object", "properties": {"file": {"type": "string"}}, "required": ["file"], "additionalProperties": false,
                 "description": "The axis' values from a file beside the job file: one per line, or a YAML/JSON list."}
            ]}
        })
    }
}

/// The SDK's default agent: `get_default_agent(llm, cli_mode=True)`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// CLI mode (no browser tools).
    #[serde(default = "AgentSpec::default_cli_mode")]
    pub cli_mode: bool,
    /// Tool names; the default agent's (`terminal`, `file_editor`, `task_tracker`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Text appended to the system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt_extra: Option<String>,
    /// Most agent iterations per step.
    #[serde(default = "AgentSpec::default_max_iterations")]
    pub max_iterations: u32,
    /// Summarise old context as the SDK's default agent does.
    #[serde(default = "AgentSpec::default_cli_mode")]
    pub condenser: bool,
}

impl AgentSpec {
    pub const DEFAULT_TOOLS: [&'static str; 3] = ["terminal", "file_editor", "task_tracker"];
    /// The tools ohrun's own agent-server has (`/server_info` `usable_tools`, browser off, plus the browser
    /// tool set a server with a browser adds): names outside it are refused before anything starts.
    pub const KNOWN_TOOLS: [&'static str; 18] = [
        "terminal",
        "file_editor",
        "task_tracker",
        "browser_tool_set",
        "ClassifyAndSwitchLLMTool",
        "ask_oracle",
        "task_tool_set",
        "task",
        "workflow_tool_set",
        "workflow",
        "start_child_conversation",
        "edit",
        "list_directory",
        "read_file",
        "write_file",
        "glob",
        "grep",
        "planning_file_editor",
    ];
    pub const KNOWN_TOOLS_VERSION: &'static str = "1.58.2";
    fn default_cli_mode() -> bool {
        true
    }
    fn default_max_iterations() -> u32 {
        500
    }
}

impl Default for AgentSpec {
    fn default() -> Self {
        AgentSpec { cli_mode: true, tools: None, system_prompt_extra: None, max_iterations: 500, condenser: true }
    }
}

/// A setup command with its options (a bare string is the same as `{run: string}`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupCommand {
    /// The command, run by `/bin/sh -c`.
    pub run: String,
    /// Directory to run in, relative to the sandbox's working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<EnvString>,
    /// Longest the command may run.
    #[serde(default = "SetupCommand::default_timeout")]
    pub timeout: HumanDuration,
    /// Environment for this command (values may refer to ohrun's environment: `${TOKEN}`).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, EnvString>,
    /// A non-zero exit does not fail the run.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_failure: bool,
}

impl SetupCommand {
    fn default_timeout() -> HumanDuration {
        d300()
    }
}

/// One entry of `setup`: a command string or a [`SetupCommand`] map.
#[derive(Clone, Debug, Serialize)]
#[serde(transparent)]
pub struct Setup(pub SetupCommand);

impl std::ops::Deref for Setup {
    type Target = SetupCommand;
    fn deref(&self) -> &SetupCommand {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Setup {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Setup;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command string or a map with `run`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Setup, E> {
                Ok(Setup(SetupCommand {
                    run: v.to_string(),
                    cwd: None,
                    timeout: SetupCommand::default_timeout(),
                    env: IndexMap::new(),
                    allow_failure: false,
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Setup, A::Error> {
                // Through the same MapAccess, so error paths stay exact.
                SetupCommand::deserialize(MapAccessDeserializer::new(map)).map(Setup)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Setup {
    fn schema_name() -> Cow<'static, str> {
        "Setup".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let map = generator.subschema_for::<SetupCommand>();
        json_schema!({"anyOf": [{"type": "string"}, map]})
    }
}

/// One message to the agent, and how to wait for it.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The message: text, or `{file: path}` relative to the job file.
    pub message: Message,
    /// Longest the agent may work on this step.
    #[serde(default = "Step::default_timeout")]
    pub timeout: HumanDuration,
    /// After the server says the run is over, also wait until no event arrived for this long (the seed's
    /// "2 s of silence"); off unless set. `true` means 2s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_for: Option<QuietFor>,
    /// Longest ohrun waits for late events and costs after the step ended.
    #[serde(default = "Step::default_max_wait")]
    pub max_wait: HumanDuration,
    /// What to do when the agent ends its turn by asking the user something.
    #[serde(default)]
    pub on_question: OnQuestion,
    /// Checks run right after this step (same shape as `verify.checks`; `on_fail` says whether a failed
    /// required one ends the run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<super::checks::CheckSpec>,
}

impl Step {
    fn default_timeout() -> HumanDuration {
        HumanDuration::secs(30 * 60)
    }
    fn default_max_wait() -> HumanDuration {
        HumanDuration::secs(10)
    }
}

/// Message text, inline or from a file.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Message {
    Inline(String),
    File {
        /// Path relative to the job file.
        file: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageFile {
    file: String,
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Message;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("message text or `{file: path}`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Message, E> {
                Ok(Message::Inline(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Message, A::Error> {
                let MessageFile { file } = MessageFile::deserialize(MapAccessDeserializer::new(map))?;
                Ok(Message::File { file })
            }
        }
        d.deserialize_any(V)
    }
}

/// `true` (2 s) or a duration.
#[derive(Clone, Copy, Debug, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct QuietFor(pub HumanDuration);

impl QuietFor {
    pub const DEFAULT: HumanDuration = HumanDuration::secs(2);
}

impl<'de> Deserialize<'de> for QuietFor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match v {
            Value::Bool(true) => Ok(QuietFor(Self::DEFAULT)),
            Value::Bool(false) => Ok(QuietFor(HumanDuration::secs(0))),
            other => HumanDuration::deserialize(other).map(QuietFor).map_err(de::Error::custom),
        }
    }
}

/// What to do when the agent ends its turn with a question instead of finishing.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum OnQuestion {
    /// End the step, record the question, and go on with the next step.
    #[default]
    End,
    /// Fail the run.
    Fail,
    /// Answer with this text and let the agent go on (at most `max_replies` times per step).
    Reply {
        text: String,
        #[serde(default = "OnQuestion::default_max_replies")]
        max_replies: u32,
    },
}

impl OnQuestion {
    fn default_max_replies() -> u32 {
        3
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most the run may spend, in USD; the step that crosses it is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<Usd>,
    /// Longest the whole run may take, provisioning and cleanup included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CleanupPolicy {
    #[default]
    Always,
    OnSuccess,
    Never,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportSpec {
    /// Directory of each run (templated, `${VAR}` expanded; relative to the current directory): its final
    /// `run.json`, and `attempt-N/` with each attempt's evidence. Must differ between the runs of a matrix.
    /// Default: `RUN_ID` inside the batch directory (`ohrun-reports/JOB/RUN_ID`, or `--out DIR/RUN_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<EnvString>,
    /// Record what changed in the working directory after setup and after each step (`steps/N.diff`
    /// beside run.json: `git status`-like list and a unified diff of text files, size-capped). On by default.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub diffs: bool,
}

impl Default for ReportSpec {
    fn default() -> Self {
        ReportSpec { dir: None, diffs: true }
    }
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
