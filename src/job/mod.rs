//! Job files: parse (with positions), template, expand the matrix, validate. The result is a [`Plan`]:
//! every run with its stable id and its fully rendered, checked [`JobSpec`].

pub mod checks;
pub mod deliver;
pub mod expand;
pub mod llm;
mod matrix;
pub mod model;
pub mod parse;
mod per_run;
pub mod repo;
pub mod sandbox;
pub mod select;
pub mod source;
pub mod template;
pub mod validate;
pub mod values;

use crate::diagnostic::{Diagnostic, Report, Source, did_you_mean};
use expand::Combo;
use indexmap::IndexMap;
use matrix::{apply_var_overrides, check_matrix, load_matrix_files};
use model::{JobSpec, Matrix, Sandbox};
use parse::{Document, decode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use source::key;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use template::Templates;

/// How many runs a matrix may expand to unless `--max-runs` says otherwise.
pub const DEFAULT_MAX_RUNS: usize = 100_000;
/// Stop collecting after this many problems: the rest are usually echoes.
const MAX_DIAGNOSTICS: usize = 30;

#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// `--var name=value` arguments, as given.
    pub vars: Vec<String>,
    pub max_runs: usize,
    /// Environment variables templates may not render (`{{ env.X }}`) beside the job's own secrets: those
    /// the other job files of the batch read as `${X}` or list in `secrets:` ([`secret_env_names`]).
    pub hidden_env: HashSet<String>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions { vars: Vec::new(), max_runs: DEFAULT_MAX_RUNS, hidden_env: HashSet::new() }
    }
}

/// Every variable the job files read through `${X}` or list in `secrets:`: in a batch of several files,
/// none of them is rendered by any file's templates (`{{ env.X }}` would copy another job's secret into
/// a plan, a message or a report). A file that cannot be read or parsed adds nothing; planning it reports why.
pub fn secret_env_names(files: &[PathBuf]) -> HashSet<String> {
    let mut names = HashSet::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        if let Ok(doc) = parse::load(Source { name: file.display().to_string(), text }) {
            names.extend(referenced_env_names(&doc.value));
        }
    }
    names
}

#[derive(Debug)]
pub struct Plan {
    pub file: PathBuf,
    /// sha256 of the job file's bytes.
    pub file_hash: String,
    pub job_name: String,
    pub runs: Vec<PlannedRun>,
}

#[derive(Debug)]
pub struct PlannedRun {
    /// 1-based position in the plan.
    pub index: usize,
    pub id: String,
    pub matrix: Option<Combo>,
    pub spec: JobSpec,
}

/// Everything wrong with a job file (and its `--var` arguments), ready to print.
#[derive(Debug)]
pub struct JobError {
    pub reports: Vec<Report>,
}

impl JobError {
    fn single(source: Source, diags: Vec<Diagnostic>) -> JobError {
        JobError { reports: vec![Report { source, diagnostics: diags }] }
    }

    pub fn diagnostics(&self) -> impl Iterator<Item = (&Source, &Diagnostic)> {
        self.reports.iter().flat_map(|r| r.diagnostics.iter().map(move |d| (&r.source, d)))
    }
}

/// Reads, checks and expands a job file.
pub fn plan_file(file: &Path, opts: &PlanOptions) -> Result<Plan, JobError> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| {
        JobError::single(
            Source { name: name.clone(), text: String::new() },
            vec![
                Diagnostic::new(format!("cannot read the job file: {e}"))
                    .hint("check the path; `ohrun validate jobs/*.yaml` checks several at once"),
            ],
        )
    })?;
    let file_hash = Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let job_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    plan_text(Source { name, text }, &job_dir, opts).map(|(job_name, runs)| Plan {
        file: file.to_path_buf(),
        file_hash,
        job_name,
        runs,
    })
}

/// Checks and expands a job given as text; `job_dir` anchors its relative paths.
pub fn plan_text(source: Source, job_dir: &Path, opts: &PlanOptions) -> Result<(String, Vec<PlannedRun>), JobError> {
    let mut doc = match parse::load(source.clone()) {
        Ok(d) => d,
        Err(diags) => return Err(JobError::single(source, diags)),
    };
    let mut diags = Vec::new();
    let var_reports = apply_var_overrides(&mut doc, &opts.vars);
    load_matrix_files(&mut doc, job_dir, &mut diags);
    let header = read_header(&mut doc, opts, &mut diags);
    let templates = Templates::compile(&doc, &mut diags);
    if !diags.is_empty() || !var_reports.is_empty() {
        // Without a sound name, vars and matrix the runs cannot be built; still show the rest of the job's problems.
        if templates.is_empty() {
            let mut value = doc.value.clone();
            decode_job(&mut value, &doc, &mut diags);
            dedupe(&mut diags);
        }
        return Err(errors(doc.source, diags, var_reports));
    }
    let runs = expand_runs(&header, &templates, &doc, job_dir, &opts.hidden_env, &mut diags);
    if diags.is_empty() {
        check_report_dirs(&runs, &doc, &mut diags);
        check_session_ids(&runs, &doc, &mut diags);
        check_delivery_branches(&runs, &doc, &mut diags);
    }
    if !diags.is_empty() {
        return Err(errors(doc.source, diags, var_reports));
    }
    Ok((header.job_name, runs))
}

/// The parts of a job that shape the plan: decoded first and never templated.
struct Header {
    job_name: String,
    vars: IndexMap<String, Value>,
    matrix: Option<Matrix>,
}

fn read_header(doc: &mut Document, opts: &PlanOptions, diags: &mut Vec<Diagnostic>) -> Header {
    let top = doc.value.clone();
    let job_name: Option<String> = match top.get("name") {
        Some(v) => decode(v, &[key("name")], &doc.map, diags),
        None => None, // reported with the whole job
    };
    if let Some(d) = job_name.as_deref().and_then(|n| validate::check_name(n, doc)) {
        diags.push(d);
    }
    let vars: IndexMap<String, Value> =
        top.get("vars").and_then(|v| decode(v, &[key("vars")], &doc.map, diags)).unwrap_or_default();
    let matrix: Option<Matrix> = top.get("matrix").and_then(|v| decode(v, &[key("matrix")], &doc.map, diags));
    if let Some(m) = &matrix {
        check_matrix(m, &vars, opts.max_runs, doc, diags);
    }
    Header { job_name: job_name.unwrap_or_default(), vars, matrix }
}

/// What every run's templates see (vars, the environment minus secrets, the job), the names in it, and
/// the environment variables left out of it.
fn template_base(
    header: &Header,
    doc: &Document,
    hidden: &HashSet<String>,
) -> (minijinja::Value, Vec<String>, HashSet<String>) {
    let mut secret_names = referenced_env_names(&doc.value);
    secret_names.extend(hidden.iter().cloned());
    let env: serde_json::Map<String, Value> =
        std::env::vars().filter(|(k, _)| !secret_names.contains(k)).map(|(k, v)| (k, Value::String(v))).collect();
    let mut names: Vec<String> = header.vars.keys().cloned().collect();
    if let Some(m) = &header.matrix {
        names.extend(m.axes.keys().cloned());
        names.extend(m.include.iter().flat_map(|i| i.keys().cloned()));
    }
    names.extend(template::RESERVED.iter().map(|s| s.to_string()));
    names.dedup();
    let mut top_level = serde_json::Map::new();
    for (k, v) in &header.vars {
        top_level.insert(k.clone(), v.clone());
    }
    top_level.insert("vars".into(), Value::Object(header.vars.clone().into_iter().collect()));
    top_level.insert("env".into(), Value::Object(env));
    top_level.insert("job".into(), json!({"name": header.job_name, "file": doc.source.name}));
    (minijinja::Value::from(minijinja::value::Serde(&top_level)), names, secret_names)
}

/// Every matrix combination rendered, decoded and checked, with its stable id. Ids and specs are made
/// on every core ([`per_run::in_chunks`]): at 100,000 runs this is most of `ohrun plan`'s time.
fn expand_runs(
    header: &Header,
    templates: &Templates,
    doc: &Document,
    job_dir: &Path,
    hidden_env: &HashSet<String>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<PlannedRun> {
    let combos: Vec<Option<Combo>> = match &header.matrix {
        Some(m) => expand::expand(m).into_iter().map(Some).collect(),
        None => vec![None],
    };
    if combos.is_empty() {
        return Vec::new(); // a matrix whose `exclude` took every combination
    }
    let ids = run_ids(&header.job_name, &combos);
    let job_dir = &validate::JobDir::new(job_dir);
    // Each run carries its own matrix values; the axes themselves would only be copied and decoded again
    // for every run (200 values, 10,000 times, in the benchmark).
    let mut per_run = doc.value.clone();
    if let Value::Object(m) = &mut per_run {
        m.shift_remove("matrix");
    }
    if templates.is_empty() {
        let spec = build_spec(per_run, doc, job_dir, diags);
        dedupe(diags);
        let runs = combos.into_iter().zip(ids).enumerate();
        return spec.map_or_else(Vec::new, |spec| {
            runs.map(|(i, (combo, id))| PlannedRun { index: i + 1, id, matrix: combo, spec: spec.clone() }).collect()
        });
    }
    let (base, context_names, secret_env) = template_base(header, doc, hidden_env);
    let count = combos.len();
    let render = |templated: &mut per_run::PerRun, i: usize, diags: &mut Vec<Diagnostic>| {
        let matrix_value =
            minijinja::Value::from(minijinja::value::Serde(combos[i].as_ref().unwrap_or(&IndexMap::new())));
        let own = minijinja::context! {
            matrix => matrix_value.clone(),
            run => minijinja::context! { id => ids[i].clone(), index => i + 1, count => count },
        };
        // Earlier maps win: run metadata, then the matrix values, then vars/env/job.
        let ctx = minijinja::value::merge_maps([own, matrix_value, base.clone()]);
        templated.spec(&ctx, (&context_names, &secret_env), job_dir, diags)
    };
    let specs = per_run::PerRun::new(templates, doc, &per_run).all(count, render, MAX_DIAGNOSTICS);
    let mut runs: Vec<PlannedRun> = Vec::with_capacity(count);
    let runs_in = combos.into_iter().zip(ids).enumerate();
    for ((i, (combo, id)), (spec, problems)) in runs_in.zip(specs) {
        diags.extend(problems);
        dedupe(diags);
        if diags.len() >= MAX_DIAGNOSTICS {
            break;
        }
        if let Some(spec) = spec {
            runs.push(PlannedRun { index: i + 1, id, matrix: combo, spec });
        }
    }
    runs
}

/// Each run's id, made on every core; a repeated one (the same values twice) gets `~2`, `~3`, ... in
/// plan order.
fn run_ids(job_name: &str, combos: &[Option<Combo>]) -> Vec<String> {
    let ids = per_run::in_chunks(combos.len(), |chunk| {
        combos[chunk].iter().map(|c| expand::run_id(job_name, c.as_ref())).collect::<Vec<_>>()
    });
    let mut ids: Vec<String> = ids.into_iter().flatten().collect();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::with_capacity(ids.len());
    for id in &mut ids {
        let n = seen.entry(id.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            *id = format!("{id}~{n}");
        }
    }
    ids
}

/// Two runs of one plan never share a report directory: the second would overwrite the first's evidence.
/// Directories are compared as rendered; `${VAR}`s are the same for every run of one invocation.
fn check_report_dirs(runs: &[PlannedRun], doc: &Document, diags: &mut Vec<Diagnostic>) {
    // Compared as paths: `out/x`, `./out/x` and `out//x/` are one directory.
    let mut by_dir: IndexMap<PathBuf, Vec<&str>> = IndexMap::new();
    let written = doc.value.pointer("/report/dir").and_then(Value::as_str).unwrap_or_default();
    // Without `report.dir`, each run has its own folder (its id) in the batch directory.
    for r in runs.iter().filter(|r| r.spec.report.dir.is_some()) {
        let rendered = r.spec.report.dir.as_ref().map_or("", |d| d.0.as_str());
        if let Some(d) = report_dir_escapes(written, rendered, &r.id) {
            diags.push(d.at(doc.span(&[key("report"), key("dir")])));
            continue;
        }
        let dir: PathBuf = Path::new(rendered).components().filter(|c| *c != std::path::Component::CurDir).collect();
        by_dir.entry(dir).or_default().push(&r.id);
    }
    for (dir, ids) in by_dir.into_iter().filter(|(_, ids)| ids.len() > 1) {
        let shown: Vec<&str> = ids.iter().take(4).copied().collect();
        let more = if ids.len() > 4 { format!(" and {} more", ids.len() - 4) } else { String::new() };
        diags.push(
            Diagnostic::new(format!(
                "{} runs would share the report directory `{}`: {}{more}",
                ids.len(),
                dir.display(),
                shown.join(", ")
            ))
            .at(doc.span(&[key("report"), key("dir")]).or_else(|| doc.map.key_span(&[key("matrix")])))
            .hint("make it differ per run, e.g. `report: {dir: \"out/{{ run.id }}\"}`, or leave it out"),
        );
        if diags.len() >= MAX_DIAGNOSTICS {
            return;
        }
    }
}

/// Two runs of a plan never name the same Runtime API session: the second would attach to (and stop)
/// the first one's sandbox. Compared as rendered; `${VAR}`s are the same for every run.
fn check_session_ids(runs: &[PlannedRun], doc: &Document, diags: &mut Vec<Diagnostic>) {
    let mut by_session: IndexMap<&str, Vec<&str>> = IndexMap::new();
    for r in runs {
        if let Sandbox::Runtime(rt) = &r.spec.sandbox
            && let Some(sid) = &rt.session_id
        {
            by_session.entry(sid.0.as_str()).or_default().push(&r.id);
        }
    }
    if let Some((sid, ids)) = by_session.into_iter().find(|(_, ids)| ids.len() > 1) {
        diags.push(
            Diagnostic::new(format!(
                "{} runs would share the Runtime API session `{sid}`: {}",
                ids.len(),
                ids.iter().take(4).copied().collect::<Vec<_>>().join(", ")
            ))
            .at(doc.span(&[key("sandbox"), key("session_id")]))
            .hint("make it differ per run, e.g. `session_id: \"nightly-{{ run.id }}\"`, or leave it out (ohrun makes one per run)"),
        );
    }
}

/// Two runs of a plan never deliver to one branch of one repository: each would force-push over the
/// other's commit and update the other's pull request. Compared as rendered.
fn check_delivery_branches(runs: &[PlannedRun], doc: &Document, diags: &mut Vec<Diagnostic>) {
    let mut by_branch: IndexMap<(String, String), Vec<&str>> = IndexMap::new();
    for r in runs {
        let Some(d) = &r.spec.deliver else { continue };
        let repository = d.repository.as_ref().or(r.spec.repo.as_ref().map(|repo| &repo.url));
        let branch = d.branch.clone().unwrap_or_else(|| format!("ohrun/{}", r.id));
        let fork = d.pull_request.fork_owner.clone().unwrap_or_default();
        let target = format!("{}{fork}", repository.map_or("", |u| u.0.as_str()));
        by_branch.entry((target, branch)).or_default().push(&r.id);
    }
    if let Some(((_, branch), ids)) = by_branch.into_iter().find(|(_, ids)| ids.len() > 1) {
        diags.push(
            Diagnostic::new(format!(
                "{} runs would deliver to the branch `{branch}` of one repository: {}",
                ids.len(),
                ids.iter().take(4).copied().collect::<Vec<_>>().join(", ")
            ))
            .at(doc.span(&[key("deliver"), key("branch")]).or_else(|| doc.span(&[key("deliver")])))
            .hint("make it differ per run, e.g. `branch: \"ohrun/fix-{{ run.id }}\"`, or leave it out (ohrun/RUN_ID)"),
        );
    }
}

/// A rendered `report.dir` that is no directory of its own (empty, `.`), or that a template value (a
/// matrix entry, a `--var`) walks up from with `..` beyond what the job file itself wrote.
fn report_dir_escapes(written: &str, rendered: &str, id: &str) -> Option<Diagnostic> {
    let ups = |s: &str| Path::new(s).components().filter(|c| *c == std::path::Component::ParentDir).count();
    let empty = Path::new(rendered).components().all(|c| c == std::path::Component::CurDir);
    if empty {
        return Some(
            Diagnostic::new(format!(
                "`report.dir` of run {id} is empty or `.`: the run would write over the directory it is run from"
            ))
            .hint("name a directory of its own, e.g. `report: {dir: \"out/{{ run.id }}\"}`"),
        );
    }
    if Path::new(rendered).is_absolute() && !Path::new(written).is_absolute() {
        return Some(
            Diagnostic::new(format!("`report.dir` of run {id} renders to the absolute path `{rendered}`"))
                .hint("a matrix value or `--var` must not move a run's report out of where the job file puts it"),
        );
    }
    (ups(rendered) > ups(written)).then(|| {
        Diagnostic::new(format!("`report.dir` of run {id} renders to `{rendered}`: a template value adds `..` to it"))
            .hint("a matrix value or `--var` must not move a run's report out of where the job file puts it")
    })
}

fn errors(source: Source, diags: Vec<Diagnostic>, mut var_reports: Vec<Report>) -> JobError {
    let mut reports = Vec::new();
    if !diags.is_empty() {
        reports.push(Report { source, diagnostics: diags });
    }
    reports.append(&mut var_reports);
    JobError { reports }
}

fn dedupe(diags: &mut Vec<Diagnostic>) {
    // Called once per run: nothing to do (and nothing to allocate) for a sound one.
    if diags.len() < 2 {
        return;
    }
    let mut seen = std::collections::HashSet::new();
    diags.retain(|d| seen.insert((d.message.clone(), d.span)));
}

fn build_spec(
    mut value: Value,
    doc: &Document,
    job_dir: &validate::JobDir,
    diags: &mut Vec<Diagnostic>,
) -> Option<JobSpec> {
    let spec = decode_job(&mut value, doc, diags)?;
    let problems = validate::check(&spec, job_dir, doc);
    if problems.is_empty() {
        Some(spec)
    } else {
        diags.extend(problems);
        None
    }
}

/// Decodes a whole job. The sandbox goes first, on its own: serde loses paths inside an internally
/// tagged enum, and decoding the variant's struct directly keeps them exact.
fn decode_job(value: &mut Value, doc: &Document, diags: &mut Vec<Diagnostic>) -> Option<JobSpec> {
    let mut sandbox_ok = true;
    if let Some(raw) = value.get("sandbox").cloned() {
        let decoded = decode_sandbox(&raw, doc, diags);
        sandbox_ok = decoded.is_some();
        // A placeholder keeps the rest of the job decodable; the sandbox's problems are already reported.
        let replacement =
            decoded.and_then(|s| serde_json::to_value(s).ok()).unwrap_or_else(|| json!({"kind": "local"}));
        value["sandbox"] = replacement;
    }
    let spec = decode(value, &[], &doc.map, diags)?;
    sandbox_ok.then_some(spec)
}

fn decode_sandbox(raw: &Value, doc: &Document, diags: &mut Vec<Diagnostic>) -> Option<Sandbox> {
    let base = [key("sandbox")];
    let kinds = Sandbox::KINDS.join(", ");
    let Value::Object(fields) = raw else {
        diags.push(
            Diagnostic::new(format!("`sandbox` must be a mapping with a `kind`, not {}", parse::kind_of(raw)))
                .at(doc.span(&base))
                .hint(format!("e.g. `sandbox: {{ kind: local }}`; kinds: {kinds}")),
        );
        return None;
    };
    let kind = match fields.get("kind") {
        Some(Value::String(k)) => k.as_str(),
        Some(other) => {
            diags.push(
                Diagnostic::new(format!("`sandbox.kind` must be a name, not {}", parse::kind_of(other)))
                    .at(doc.span(&[key("sandbox"), key("kind")]))
                    .hint(format!("use one of: {kinds}")),
            );
            return None;
        }
        None => {
            diags.push(
                Diagnostic::new("missing key `kind` in `sandbox`")
                    .at(doc.span(&base))
                    .hint(format!("say where the agent-server runs: {kinds}")),
            );
            return None;
        }
    };
    let mut rest = fields.clone();
    rest.shift_remove("kind");
    let rest = Value::Object(rest);
    let map = &doc.map;
    match kind {
        "cloud" => decode(&rest, &base, map, diags).map(Sandbox::Cloud),
        "runtime" => decode(&rest, &base, map, diags).map(Sandbox::Runtime),
        "docker" => decode(&rest, &base, map, diags).map(Sandbox::Docker),
        "local" => decode(&rest, &base, map, diags).map(Sandbox::Local),
        "remote" => decode(&rest, &base, map, diags).map(Sandbox::Remote),
        other => {
            let d =
                Diagnostic::new(format!("unknown sandbox kind `{other}`")).at(doc.span(&[key("sandbox"), key("kind")]));
            diags.push(match did_you_mean(other, Sandbox::KINDS) {
                Some(s) => d.hint(format!("did you mean `{s}`? kinds: {kinds}")),
                None => d.hint(format!("use one of: {kinds}")),
            });
            None
        }
    }
}

/// Names used in `${NAME}` references anywhere, plus `secrets`: the template context's `env` leaves these
/// out, so a secret cannot be rendered into a plan or a report by a template.
fn referenced_env_names(v: &Value) -> HashSet<String> {
    let mut out = HashSet::new();
    fn walk(v: &Value, out: &mut HashSet<String>) {
        match v {
            Value::String(s) if s.contains("${") => {
                for name in values::EnvString(s.clone()).var_names() {
                    out.insert(name.to_string());
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(m) => m.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    // `secrets:` and `forward_env` name variables whose values go into the sandbox as secrets.
    let named = [v.get("secrets"), v.pointer("/sandbox/forward_env")];
    for names in named.into_iter().flatten().filter_map(Value::as_array) {
        out.extend(names.iter().filter_map(Value::as_str).map(str::to_string));
    }
    out
}
