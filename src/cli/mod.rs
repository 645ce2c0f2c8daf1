//! The command line: argument types (clap derive) and dispatch to one module per subcommand.

mod compare;
mod gc;
mod merge;
mod plan;
mod rehearse;
mod run;
mod setup;
mod validate;
mod verify;
mod view;

use crate::exit_code::ExitCode;
use crate::style::Style;
use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  ohrun jobs/local.yaml                 run a job (short for `ohrun run jobs/local.yaml`)
  ohrun run --rehearse jobs/local.yaml  run it with the scripted LLM: offline, no spend
  ohrun run jobs/multi-repo.yaml -j 4 --retries 2 --max-cost 20
                                        a batch: 4 runs at once, infrastructure failures retried, a budget
  ohrun run jobs/multi-repo.yaml --shard 2/3 --out shard-2
  ohrun run --resume ohrun-reports/multi-repo   rerun what did not succeed
  ohrun merge shard-1 shard-2 shard-3   one summary of the shards
  ohrun compare last-night tonight --fail-on regression
                                        what passed last night and fails now (exit 1 if any)
  ohrun gc --dry-run                    list what killed ohrun processes left running
  ohrun setup local                     install the managed agent-server ahead of time
  ohrun setup docker                    pull the official agent-server image ahead of time
  ohrun setup docker --build            build ohrun's own image instead (offline; may apt-get debootstrap)
  ohrun validate jobs/*.yaml            check job files without running anything
  ohrun plan jobs/multi-repo.yaml       list the runs a job expands to
  ohrun plan jobs/multi-repo.yaml --var branch=dev --json
  ohrun view ohrun-reports/multi-repo   write the batch's report.html (and its runs') and open it
  ohrun view ohrun-reports/multi-repo --serve   watch a running batch in the browser
  ohrun schema job > job.schema.json    the JSON Schema of job files";

#[derive(Debug, Parser)]
#[command(name = "ohrun", version, about = "Run OpenHands agent jobs declared in YAML.", after_help = format!("{EXAMPLES}\n\n{}", ExitCode::TABLE))]
pub struct Cli {
    /// More log output: -v what ohrun does (provisioning, retries), -vv every request, -vvv everything;
    /// RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run jobs: every run of each, concurrently — provision, set up, talk to the agent step by step,
    /// report, clean up — with a batch summary.
    Run(RunArgs),
    /// Check job files: syntax, keys, types, templates, matrix. Runs nothing.
    Validate(ValidateArgs),
    /// Show the runs a job file expands to: id, sandbox, matrix values, steps. No network.
    Plan(PlanArgs),
    /// Prepare a sandbox kind ahead of time: `local` installs the managed agent-server, `docker` pulls
    /// the official agent-server image (or builds ohrun's own where the pull fails). Both happen on first
    /// use otherwise.
    Setup {
        #[arg(value_parser = ["local", "docker"])]
        what: String,
        /// docker: build ohrun's own image offline instead of pulling (installs debootstrap with apt-get
        /// when it is missing and ohrun runs as root).
        #[arg(long)]
        build: bool,
    },
    /// Serve the scripted LLM (a rehearsal script) on loopback until Ctrl-C; prints its base URL.
    Rehearse(RehearseArgs),
    /// Combine batch directories (the shards of one plan) into one summary.json and junit.xml.
    Merge(MergeArgs),
    /// Compare two batches run by run (matched by id and trial): regressions, fixes, the change in pass
    /// rate with McNemar's exact test, score, cost, tokens and duration; a table (or --json) and
    /// compare.html.
    Compare(CompareArgs),
    /// Remove what ohrun processes that are gone (killed, crashed) left behind: agent-servers and their
    /// state, containers, Cloud and Runtime sandboxes named in the sandbox ledger. Exit 5 if any could not
    /// be removed (with --dry-run: if any is left).
    Gc(GcArgs),
    /// Write report.html for a batch directory (and each of its runs) or a run directory, print its path
    /// and open it in the browser when there is a display; `--serve` serves the directory on 127.0.0.1,
    /// its pages following the reports while a batch runs.
    View(ViewArgs),
    /// Regrade a finished batch (or run) without the agent: each run's checks again in a fresh sandbox with
    /// its saved final patch, a new `verify-N/` beside its old verdict. `--patch empty` (no change) and
    /// `--patch FILE` (a reference solution) validate the checks themselves.
    Verify(VerifyArgs),
    /// Print a JSON Schema: `job` (job files), `report` (run.json), `summary` (summary.json), `compare`
    /// (`compare --json`) or `rehearsal` (rehearsal scripts).
    Schema {
        #[arg(default_value = "job", value_parser = clap::builder::PossibleValuesParser::new(crate::schema::NAMES))]
        name: String,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// Override a template variable declared under `vars:` (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Refuse a matrix that expands to more runs than this.
    #[arg(long, default_value_t = crate::job::DEFAULT_MAX_RUNS)]
    pub max_runs: usize,
}

impl JobArgs {
    /// The options to plan `files` with: with several, none renders another's secrets.
    pub fn plan_options(&self, files: &[PathBuf]) -> crate::job::PlanOptions {
        let hidden_env = if files.len() > 1 { crate::job::secret_env_names(files) } else { Default::default() };
        crate::job::PlanOptions { vars: self.vars.clone(), max_runs: self.max_runs, hidden_env }
    }
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Job files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub job: JobArgs,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Job files (with `--resume DIR`, the batch's own are used when none is given).
    pub files: Vec<PathBuf>,
    /// Replace the LLM with ohrun's scripted endpoint: each job's `rehearsal` script, or SCRIPT.
    #[arg(long, value_name = "SCRIPT", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub rehearse: Option<String>,
    /// Print one JSON line per finished run on stdout, and a last one with the totals.
    #[arg(long)]
    pub json: bool,
    /// How many runs at once (default: 2 for local and docker sandboxes, 4 for the others).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// How many runs beyond `--jobs` may provision their sandbox and run their setup ahead, then wait
    /// for a place (default: half of `--jobs`, rounded up, for cloud and runtime sandboxes; 0 for the others).
    #[arg(long, value_name = "N")]
    pub prefetch: Option<usize>,
    /// Start no new run once one has failed.
    #[arg(long)]
    pub fail_fast: bool,
    /// A dry run of `deliver:`: no branch is pushed, no pull request opened, no comment posted (run.json
    /// says so).
    #[arg(long)]
    pub no_deliver: bool,
    /// Retries of a run that failed for infrastructure reasons (overrides the jobs' `retries.max`).
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// The most the whole batch may spend, in USD (overrides the jobs' `batch.max_cost`).
    #[arg(long, value_name = "USD", value_parser = parse_usd)]
    pub max_cost: Option<crate::money::Usd>,
    /// Run each run N times as trials, each in its own sandbox, for pass@k and flakiness (overrides the
    /// jobs' `repeat`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeat: Option<u32>,
    /// The batch directory: batch.json, summary.json, junit.xml (default: `ohrun-reports/JOB`, or
    /// `ohrun-reports/batch` for several job files).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Rerun only what did not succeed in the batch directory DIR (default: the job's).
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    pub resume: Option<Option<PathBuf>>,
    /// Resume even though a job file changed since the batch started.
    #[arg(long, requires = "resume")]
    pub force: bool,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub job: JobArgs,
}

/// Which runs of the plan to take; `plan` and `run` take the same.
#[derive(Debug, Default, clap::Args)]
pub struct SelectArgs {
    /// Only shard I of N (`2/5`), stable by run id: N such invocations run every run exactly once.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Only the runs whose id contains TEXT (`*` matches anything), or whose matrix value KEY is one of
    /// the values (`repo=alpha,beta`); several filters must all match.
    #[arg(long, value_name = "TEXT|KEY=VALUES")]
    pub filter: Vec<String>,
}

impl SelectArgs {
    pub fn selection(&self) -> Result<crate::job::select::Selection, String> {
        crate::job::select::Selection::parse(self.shard.as_deref(), &self.filter)
    }
}

fn parse_usd(text: &str) -> Result<crate::money::Usd, String> {
    crate::money::Usd::parse(text)
}

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Batch directories (e.g. one per `--shard`).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Where the merged summary.json and junit.xml go.
    #[arg(long, value_name = "DIR", default_value = "ohrun-reports/merged")]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The earlier batch: a batch directory (of `run` or `merge`) or its summary.json.
    pub base: PathBuf,
    /// The later batch, compared with BASE.
    pub new: PathBuf,
    /// Print the comparison as JSON on stdout (`ohrun schema compare`) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Where compare.html goes (default: NEW's directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Exit 1 when any pair regressed (`regression`), or only when the pass rate dropped significantly at
    /// --alpha (`significant`); `never`: exit 0 whatever the result.
    #[arg(long, value_enum, default_value_t = crate::compare::FailOn::Never)]
    pub fail_on: crate::compare::FailOn,
    /// The significance level of McNemar's exact test (0 < alpha < 1).
    #[arg(long, default_value_t = 0.05, value_parser = parse_alpha)]
    pub alpha: f64,
}

fn parse_alpha(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(a) if a > 0.0 && a < 1.0 => Ok(a),
        _ => Err("a level between 0 and 1, such as 0.05".to_string()),
    }
}

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// List what is left behind; remove nothing (exit 5 when something is).
    #[arg(long)]
    pub dry_run: bool,
    /// Only what was created longer ago than this (e.g. `2h`).
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<humantime::Duration>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Count the ohrun process PID as gone where gc cannot tell whether it still runs (no procfs), so that
    /// what it left is removed. Repeatable; never applies to a process that is known to run.
    #[arg(long, value_name = "PID")]
    pub force_dead: Vec<u32>,
}

#[derive(Debug, clap::Args)]
pub struct ViewArgs {
    /// A batch directory (with summary.json) or a run's directory (with run.json).
    pub dir: PathBuf,
    /// Serve DIR on 127.0.0.1 until Ctrl-C: pages drawn from the reports at each request, reloading
    /// themselves when those change.
    #[arg(long)]
    pub serve: bool,
    /// Port for `--serve` (0: any free one).
    #[arg(long, default_value_t = 0, requires = "serve")]
    pub port: u16,
    /// Do not open a browser (one is opened only when $DISPLAY or $WAYLAND_DISPLAY is set).
    #[arg(long)]
    pub no_open: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// A batch directory (with summary.json) or a run's directory (with run.json).
    pub dir: PathBuf,
    /// What the checks get: `final` (each run's own final patch, the default), `empty` (no change: which
    /// checks pass anyway?) or a patch FILE (a reference solution: every check should pass).
    #[arg(long, value_name = "final|empty|FILE")]
    pub patch: Option<String>,
    /// Judges answer from the job's rehearsal script (or SCRIPT) instead of its LLM.
    #[arg(long, value_name = "SCRIPT", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub rehearse: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RehearseArgs {
    /// Rehearsal script (YAML); without one, every agent call is answered with `finish`.
    pub script: Option<PathBuf>,
    /// Port on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Job files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print the plan as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub job: JobArgs,
}

/// `ohrun FILE …` means `ohrun run FILE …`: a first argument that is not a subcommand but names a file.
fn with_implicit_run(mut args: Vec<String>) -> Vec<String> {
    let known: Vec<String> = Cli::command()
        .get_subcommands()
        .flat_map(|c| std::iter::once(c.get_name().to_string()).chain(c.get_all_aliases().map(str::to_string)))
        .chain(["help".to_string()])
        .collect();
    if let Some(pos) = args.iter().skip(1).position(|a| !a.starts_with('-')).map(|p| p + 1) {
        let first = &args[pos];
        let looks_like_file =
            first.ends_with(".yaml") || first.ends_with(".yml") || std::path::Path::new(first).is_file();
        if !known.contains(first) && looks_like_file {
            args.insert(pos, "run".to_string());
        }
    }
    args
}

fn init_tracing(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        (_, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("ohrun={level}")));
    // Logs go through the redactor like every other byte ohrun writes.
    let writer = || crate::report::redact::RedactingWriter::new(std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(Style::for_stderr() != Style::plain())
        .without_time()
        .try_init();
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let args = with_implicit_run(std::env::args().collect());
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::USAGE,
            };
        }
    };
    init_tracing(cli.verbose, cli.quiet);
    // One TLS provider for reqwest and the WebSocket client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let style = Style::for_stderr();
    match cli.command {
        Command::Run(args) => run::run(&args, style, cli.quiet),
        Command::Setup { what, build } => setup::run(&what, build),
        Command::Rehearse(args) => rehearse::run(&args),
        Command::Merge(args) => merge::run(&args, cli.quiet),
        Command::Compare(args) => compare::run(&args, cli.quiet),
        Command::Gc(args) => gc::run(&args, cli.quiet),
        Command::View(args) => view::run(&args, cli.quiet),
        Command::Validate(args) => validate::run(&args, style, cli.quiet),
        Command::Verify(args) => verify::run(&args, cli.quiet),
        Command::Plan(args) => plan::run(&args, style),
        Command::Schema { name } => match crate::schema::generate(&name) {
            Some(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            None => ExitCode::USAGE,
        },
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ohrun", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// The async runtime of the commands that need one, a worker per core: a batch of thousands of runs
/// parses their events and writes their reports on all of them. At least two, so one busy worker never
/// stalls the rest (timeouts, signals); at most eight: ohrun waits on the network, and more workers than
/// that only cost memory and wake-ups on a big machine shared with the sandboxes it runs. The threads
/// that take a worker's place while it writes a report (`report::disk::off_runtime`) are capped too: in a
/// burst of 10,000 run starts tokio's default (512) made a hundred threads and ~100 MB for nothing, the
/// disk being the bottleneck.
fn runtime() -> Result<tokio::runtime::Runtime, i32> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(workers).max_blocking_threads(4 * workers).enable_all();
    builder.build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::INFRA
    })
}

/// Prints a job file's problems to stderr.
pub fn print_job_error(err: &crate::job::JobError, style: Style) {
    for report in &err.reports {
        eprint!("{}", report.render(style));
    }
}

/// The JSON form of a job file's problems, for `--json` output.
pub fn job_error_json(err: &crate::job::JobError) -> serde_json::Value {
    err.diagnostics()
        .map(|(source, d)| {
            serde_json::json!({
                "file": source.name,
                "line": d.span.map(|s| s.line),
                "column": d.span.map(|s| s.col),
                "message": d.message,
                "hint": d.hint,
            })
        })
        .collect()
}

/// Runs of `plans` whose report folders would be the batch directory (`out`, else the default one), above
/// it, or inside another run's folder: printed, and true when there are any.
fn run_dir_problems(plans: &[crate::job::Plan], out: Option<&std::path::Path>) -> bool {
    run_dir_problems_of(plans.iter(), out)
}

fn run_dir_problems_of<'a>(plans: impl Iterator<Item = &'a crate::job::Plan>, out: Option<&std::path::Path>) -> bool {
    let plans: Vec<&crate::job::Plan> = plans.collect();
    let out = out.map(std::path::Path::to_path_buf).unwrap_or_else(|| default_out(&plans));
    let runs = plans.iter().flat_map(|p| p.runs.iter().map(|r| (r.id.as_str(), &r.spec)));
    let Err(problems) = crate::settings::check_run_dirs(runs, &out, &|n| std::env::var(n).ok()) else { return false };
    for p in &problems.problems {
        eprintln!("error: {p}");
    }
    eprintln!("  hint: give each run a directory of its own below the batch directory (`report.dir`), or leave it out");
    true
}

/// `ohrun-reports/JOB` for one job file, `ohrun-reports/batch` for several.
fn default_out<P: std::borrow::Borrow<crate::job::Plan>>(plans: &[P]) -> PathBuf {
    match plans {
        [one] => PathBuf::from("ohrun-reports").join(&one.borrow().job_name),
        _ => PathBuf::from("ohrun-reports/batch"),
    }
}

/// Makes this process's `/proc/PID/environ` (and memory) unreadable to other processes of the same user:
/// a local agent runs as that user, and ohrun's environment holds the tokens and keys it was given
/// (`GITHUB_TOKEN`, an LLM key). Its children are unaffected (an exec makes a process dumpable again).
pub(crate) fn keep_environment_private() {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes no pointers and only changes this process's own flag.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
    }
}
