//! action.yml, run the way GitHub's runner runs a composite action, but offline: each `run:` step through
//! bash with its `env:`, `working-directory:` and `${{ … }}` expressions filled from the inputs (defaults
//! from action.yml), the GITHUB_* files in a temporary directory, and `$GITHUB_PATH` / `$GITHUB_OUTPUT`
//! carried from step to step. `uses:` steps are not run; their `if:` and `with:` are evaluated and
//! checked. The install step gets the binary under test (`binary:`), the sandbox is the local
//! agent-server and the job runs on the scripted LLM. The workflows in docs/ci that use the action are
//! checked against its inputs and against ohrun's own argument parser.

use crate::support::*;
use clap::Parser;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn action() -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(repo_root().join("action.yml")).unwrap()).unwrap()
}

/// The action's inputs: its defaults, overridden by `given`; an unknown or missing required input fails.
fn inputs(action: &Value, given: &[(&str, &str)]) -> BTreeMap<String, String> {
    let declared = action["inputs"].as_mapping().unwrap();
    let mut values = BTreeMap::new();
    for (name, spec) in declared {
        let name = name.as_str().unwrap().to_string();
        if let Some(d) = spec["default"].as_str() {
            values.insert(name, d.to_string());
        }
    }
    for (k, v) in given {
        assert!(declared.contains_key(*k), "action.yml has no input `{k}`");
        values.insert(k.to_string(), v.to_string());
    }
    for (name, spec) in declared {
        if spec["required"].as_bool() == Some(true) {
            assert!(values.contains_key(name.as_str().unwrap()), "the required input {name:?} is missing");
        }
    }
    values
}

/// What the expressions of a composite action can see here.
struct Context {
    inputs: BTreeMap<String, String>,
    outputs: BTreeMap<String, BTreeMap<String, String>>,
}

impl Context {
    /// One operand: a context value or a quoted literal; anything else is a test failure, so that an
    /// expression action.yml gains and this runner cannot evaluate is noticed.
    fn value(&self, e: &str) -> String {
        let e = e.trim();
        if let Some(lit) = e.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
            return lit.to_string();
        }
        if let Some(name) = e.strip_prefix("inputs.") {
            return self.inputs.get(name).unwrap_or_else(|| panic!("no input `{name}`")).clone();
        }
        if let Some(rest) = e.strip_prefix("steps.") {
            let (id, key) = rest.split_once(".outputs.").unwrap_or_else(|| panic!("cannot evaluate `{e}`"));
            return self.outputs.get(id).and_then(|o| o.get(key)).cloned().unwrap_or_default();
        }
        match e {
            "github.action_path" => repo_root().display().to_string(),
            "github.action_ref" => String::new(),
            "runner.os" => "Linux".into(),
            _ => panic!("this test's runner cannot evaluate `{e}`"),
        }
    }

    /// `a || b || 'c'`: the first non-empty one.
    fn expr(&self, e: &str) -> String {
        e.split("||").map(|part| self.value(part)).find(|v| !v.is_empty()).unwrap_or_default()
    }

    /// `${{ … }}` replaced in `text`.
    fn fill(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${{") {
            let end = rest[start..].find("}}").expect("an unclosed ${{") + start;
            out.push_str(&rest[..start]);
            out.push_str(&self.expr(&rest[start + 3..end]));
            rest = &rest[end + 2..];
        }
        out + rest
    }

    /// An `if:` of `&&`-joined terms: `always()`, `X == 'v'`, `X != 'v'`.
    fn condition(&self, cond: &str, failed: bool) -> bool {
        let mut always = false;
        let all = cond.split("&&").all(|term| {
            let term = term.trim();
            if term == "always()" {
                always = true;
                true
            } else if let Some((a, b)) = term.split_once("!=") {
                self.expr(a) != self.expr(b)
            } else if let Some((a, b)) = term.split_once("==") {
                self.expr(a) == self.expr(b)
            } else {
                panic!("this test's runner cannot evaluate `if: {cond}`")
            }
        });
        all && (always || !failed)
    }
}

/// `key=value` lines of a GITHUB_OUTPUT file.
fn read_outputs(file: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// What running the action did: each `uses:` step that would have run, with its `with:` filled in.
struct Ran {
    uses: Vec<(String, BTreeMap<String, String>)>,
    failed: bool,
    outputs: BTreeMap<String, BTreeMap<String, String>>,
    log: String,
}

/// Runs action.yml's steps with `given` inputs; `github` holds the runner's files and is HOME.
fn run_action(given: &[(&str, &str)], github: &Path, env: &[(&str, &Path)]) -> Ran {
    let action = action();
    assert_eq!(action["runs"]["using"].as_str(), Some("composite"));
    let mut cx = Context { inputs: inputs(&action, given), outputs: BTreeMap::new() };
    let path_file = github.join("path");
    let summary = github.join("step-summary.md");
    let mut ran = Ran { uses: vec![], failed: false, outputs: BTreeMap::new(), log: String::new() };
    for (i, step) in action["runs"]["steps"].as_sequence().unwrap().iter().enumerate() {
        if !step["if"].as_str().map_or(!ran.failed, |c| cx.condition(c, ran.failed)) {
            continue;
        }
        if let Some(uses) = step["uses"].as_str() {
            let with = step["with"].as_mapping().map(|m| {
                m.iter().map(|(k, v)| (k.as_str().unwrap().to_string(), cx.fill(v.as_str().unwrap()))).collect()
            });
            ran.uses.push((uses.to_string(), with.unwrap_or_default()));
            continue;
        }
        assert_eq!(step["shell"].as_str(), Some("bash"), "a composite run step names its shell");
        let script = step["run"].as_str().unwrap();
        assert!(!script.contains("${{"), "step {i}: inputs reach scripts through env:, never spliced in");
        let output_file = github.join(format!("output-{i}"));
        // The runner's PATH: what earlier steps added to $GITHUB_PATH first.
        let added: Vec<String> =
            std::fs::read_to_string(&path_file).unwrap_or_default().lines().map(String::from).collect();
        let path = added.into_iter().rev().chain([std::env::var("PATH").unwrap()]).collect::<Vec<_>>().join(":");
        let dir = cx.fill(step["working-directory"].as_str().unwrap_or("."));
        let mut cmd = Command::new("bash");
        cmd.args(["--noprofile", "--norc", "-e", "-o", "pipefail", "-c", script])
            .current_dir(github.join("workspace").join(dir))
            .env("PATH", path)
            .env("HOME", github)
            .env("CI", "true")
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_PATH", &path_file)
            .env("GITHUB_OUTPUT", &output_file)
            .env("GITHUB_STEP_SUMMARY", &summary)
            .env("RUNNER_TEMP", github.join("tmp"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        for (k, v) in step["env"].as_mapping().into_iter().flatten() {
            cmd.env(k.as_str().unwrap(), cx.fill(v.as_str().unwrap()));
        }
        let out = run_bounded(cmd, Duration::from_secs(600));
        ran.log.push_str(&format!(
            "--- step {i} ({}): exit {:?}\n{}",
            step["name"].as_str().unwrap_or(""),
            out.0,
            out.1
        ));
        if let Some(id) = step["id"].as_str() {
            cx.outputs.insert(id.to_string(), read_outputs(&output_file));
        }
        ran.failed |= out.0 != Some(0);
    }
    ran.outputs = cx.outputs;
    ran
}

/// Runs `cmd` to its end within `timeout` (killed after it); its exit code and its output.
fn run_bounded(mut cmd: Command, timeout: Duration) -> (Option<i32>, String) {
    let log = tempfile::NamedTempFile::new().unwrap();
    cmd.stdout(log.reopen().unwrap()).stderr(log.reopen().unwrap()).stdin(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code(), std::fs::read_to_string(log.path()).unwrap())
}

#[test]
fn the_action_installs_prepares_runs_and_leaves_the_summary_junit_and_batch_directory() {
    agent_server_command(); // the managed venv, which the action's `ohrun setup local` then finds in place
    let github = tempfile::tempdir().unwrap();
    let ws = github.path().join("workspace/project");
    std::fs::create_dir_all(ws.join("jobs/rehearsals")).unwrap();
    std::fs::create_dir_all(github.path().join("tmp")).unwrap();
    for f in ["jobs/local.yaml", "jobs/rehearsals/facts.yaml"] {
        std::fs::copy(repo_root().join(f), ws.join(f)).unwrap();
    }
    let bin = ohrun_bin().display().to_string();
    let state = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ohrun-state");
    let ran = run_action(
        &[
            ("jobs", "jobs/local.yaml"),
            ("args", "--rehearse --jobs 1"),
            ("binary", &bin),
            ("working-directory", "project"),
            ("upload-name", "facts"),
        ],
        github.path(),
        &[("OHRUN_HOME", &ohrun_home()), ("OHRUN_STATE_DIR", &state)],
    );
    assert!(!ran.failed, "{}", ran.log);
    // The binary was installed where the cache keeps it, and found on PATH by the later steps.
    assert!(github.path().join(".cache/ohrun-action/bin/ohrun").is_file(), "{}", ran.log);
    assert!(ran.log.contains("ohrun 0.1.0"), "{}", ran.log);
    let batch = ws.join("ohrun-reports/batch");
    assert_eq!(ran.outputs["run"]["batch-dir"], batch.display().to_string());
    assert_eq!(ran.outputs["run"]["exit-code"], "0");
    let summary = read_summary(&batch);
    assert_eq!(summary["runs"][0]["status"], "succeeded", "{summary}");
    assert!(std::fs::read_to_string(batch.join("junit.xml")).unwrap().contains("<testcase"));
    let table = std::fs::read_to_string(github.path().join("step-summary.md")).unwrap();
    assert!(table.contains("facts-local"), "the step summary lists the run:\n{table}");
    // `binary:` given: no cache; the upload takes the batch directory under the given name.
    let uses: Vec<&str> = ran.uses.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(uses, ["actions/upload-artifact@v4"], "{}", ran.log);
    let with = &ran.uses[0].1;
    assert_eq!((with["name"].as_str(), with["path"].as_str()), ("facts", batch.display().to_string().as_str()));
}

#[test]
fn a_failing_run_fails_the_action_after_uploading_its_batch() {
    let github = tempfile::tempdir().unwrap();
    let ws = github.path().join("workspace");
    std::fs::create_dir_all(&ws).unwrap();
    // A job file that does not parse: exit 2 before anything starts; the batch directory is still named.
    std::fs::write(ws.join("bad.yaml"), "name: bad\nsandbox: {kind: nope}\n").unwrap();
    let bin = ohrun_bin().display().to_string();
    let ran = run_action(&[("jobs", "bad.yaml"), ("binary", &bin), ("sandbox", "none")], github.path(), &[]);
    assert!(ran.failed, "{}", ran.log);
    assert_eq!(ran.outputs["run"]["exit-code"], "2", "{}", ran.log);
    assert!(ran.log.contains("bad.yaml:2:"), "the job error points at its line:\n{}", ran.log);
    assert_eq!(
        ran.uses.len(),
        1,
        "the upload runs after a failure: {:?}",
        ran.uses.iter().map(|u| &u.0).collect::<Vec<_>>()
    );
    // Without `binary:` the cache comes first, keyed on the version (the binary the first call installed
    // is where a cache hit would put it, so nothing is built here).
    let ran = run_action(&[("jobs", "bad.yaml"), ("binary", ""), ("sandbox", "bogus")], github.path(), &[]);
    let (cache, with) = &ran.uses[0];
    assert!(cache.starts_with("actions/cache@"), "{cache}");
    assert!(with["path"].contains("~/.cache/ohrun-action") && with["key"] == "ohrun-Linux-source", "{with:?}");
}

/// Each `ohrun` command line action.yml can run, for the sandbox kinds and flags it takes.
#[test]
fn the_actions_command_lines_are_ohruns() {
    let action = action();
    let steps = action["runs"]["steps"].as_sequence().unwrap();
    let prepare = steps.iter().find(|s| s["name"] == "Prepare the sandbox").unwrap()["run"].as_str().unwrap();
    let description = action["inputs"]["sandbox"]["description"].as_str().unwrap();
    for kind in ["local", "docker", "docker-build", "none"] {
        assert!(prepare.contains(&format!("{kind})")) && description.contains(kind), "sandbox: {kind}");
    }
    for line in prepare.lines().filter_map(|l| l.split_once(") ").map(|(_, c)| c.trim_end_matches(" ;;"))) {
        if let Some(cmd) = line.strip_prefix("ohrun ") {
            let args: Vec<&str> = std::iter::once("ohrun").chain(cmd.split_whitespace()).collect();
            ohrun::cli::Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("`{line}`: {e}"));
        }
    }
    let run = steps.iter().find(|s| s["id"] == "run").unwrap()["run"].as_str().unwrap();
    assert!(run.contains("ohrun run $INPUT_JOBS --out \"$out\" $INPUT_ARGS"), "{run}");
}

/// The workflows in docs/ci that use the action: inputs it has, and a command line ohrun accepts.
#[test]
fn the_workflows_in_docs_ci_use_the_action_with_valid_inputs() {
    let action = action();
    let mut used = 0;
    for name in ["github-actions.yml", "nightly-fix-and-pr.yml"] {
        let doc: Value =
            serde_yaml::from_str(&std::fs::read_to_string(repo_root().join("docs/ci").join(name)).unwrap()).unwrap();
        for (_, job) in doc["jobs"].as_mapping().unwrap() {
            for step in job["steps"].as_sequence().unwrap() {
                if !step["uses"].as_str().is_some_and(|u| u.starts_with("your-org/ohrun@v")) {
                    continue;
                }
                used += 1;
                let with: Vec<(String, String)> = step["with"]
                    .as_mapping()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.as_str().unwrap().to_string(), workflow_values(v.as_str().unwrap())))
                    .collect();
                let given: Vec<(&str, &str)> = with.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let values = inputs(&action, &given);
                let mut args = vec!["ohrun", "run"];
                args.extend(values["jobs"].split_whitespace());
                args.extend(["--out", &values["out"]]);
                args.extend(values["args"].split_whitespace());
                ohrun::cli::Cli::try_parse_from(&args)
                    .unwrap_or_else(|e| panic!("{name}: `{}` is not a valid ohrun command line: {e}", args.join(" ")));
            }
        }
    }
    assert_eq!(used, 2, "both workflows run their jobs through the action");
}

/// A workflow's own expressions, as one night would fill them in.
fn workflow_values(text: &str) -> String {
    text.replace("${{ matrix.shard }}", "2")
        .replace("${{ env.SHARDS }}", "3")
        .replace("${{ inputs.dry_run && '--no-deliver' || '' }}", "--no-deliver")
        .replace("${{ secrets.FIX_BOT_TOKEN }}", "t")
}
