//! The shipped job files, the plan, run ids and the schema.

use crate::support::{Ohrun, repo_root};

fn job_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn shipped_jobs_validate() {
    let files = job_files();
    assert!(files.len() >= 5);
    let out = Ohrun::new().arg_files(&files).output();
    assert_eq!(out.code, 0, "{}", out.stderr);
}

impl Ohrun {
    fn arg_files(self, files: &[std::path::PathBuf]) -> Self {
        self.args(["validate"]).args(files)
    }
}

#[test]
fn shipped_jobs_start_with_the_schema_modeline_and_match_the_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("schemas/job.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    for file in job_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schemas/job.schema.json\n"),
            "{} lacks the modeline",
            file.display()
        );
        let doc: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let errors: Vec<String> =
            validator.iter_errors(&doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
    }
}

#[test]
fn the_schema_rejects_what_the_parser_rejects() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("schemas/job.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for name in [
        "unknown-top-level-key",
        "unknown-sandbox-key",
        "wrong-type-steps",
        "missing-llm",
        "literal-secret",
        "unknown-sandbox-kind",
        "missing-sandbox-kind",
        "setup-entry-wrong",
    ] {
        let text = std::fs::read_to_string(repo_root().join(format!("tests/golden/{name}.yaml"))).unwrap();
        let doc: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert!(!validator.is_valid(&doc), "the schema accepts {name}");
    }
}

#[test]
fn schemas_have_not_drifted_from_the_types() {
    for name in ["job", "report", "rehearsal", "summary", "compare"] {
        let out = Ohrun::new().args(["schema", name]).output();
        assert_eq!(out.code, 0);
        let path = repo_root().join(format!("schemas/{name}.schema.json"));
        if std::env::var_os("OHRUN_BLESS").is_some() {
            std::fs::write(&path, &out.stdout).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == out.stdout,
            "schemas/{name}.schema.json is stale: run `cargo run -- schema {name} > schemas/{name}.schema.json`"
        );
    }
}

#[test]
fn rehearsal_scripts_in_jobs_match_their_schema_and_parse() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("schemas/rehearsal.schema.json")).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let dir = repo_root().join("jobs/rehearsals");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=../../schemas/rehearsal.schema.json\n"),
            "{} lacks the modeline",
            path.display()
        );
        let doc: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert!(validator.is_valid(&doc), "{} does not match the schema", path.display());
        let source = ohrun::diagnostic::Source { name: path.display().to_string(), text };
        assert!(
            ohrun::job::parse::load_typed::<ohrun::rehearse::script::Script>(source).is_ok(),
            "{} does not parse",
            path.display()
        );
        count += 1;
    }
    assert!(count >= 1);
}

#[test]
fn multi_repo_plans_three_runs_with_stable_ids() {
    let plan = |file: &str| Ohrun::new().args(["plan", "--json", file]).output().json();
    let first = plan("jobs/multi-repo.yaml");
    assert_eq!(first["total"], 3);
    let ids: Vec<String> =
        first["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, plan_ids(&plan("jobs/multi-repo.yaml")));

    // A comment and a different message leave the ids alone; a different repo list changes only that run.
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(repo_root().join("jobs/multi-repo.yaml")).unwrap();
    let edited = format!(
        "# a new comment\n{}",
        original.replace("Read it and write 3 facts", "Read it closely and write 3 facts")
    );
    assert_ne!(edited, original);
    let path = dir.path().join("multi-repo.yaml");
    std::fs::write(&path, &edited).unwrap();
    assert_eq!(ids, plan_ids(&plan(path.to_str().unwrap())));
    std::fs::write(&path, original.replace("octocat/Spoon-Knife", "octocat/linguist")).unwrap();
    let changed = plan_ids(&plan(path.to_str().unwrap()));
    assert_eq!(changed[0], ids[0]);
    assert_ne!(changed[1], ids[1]);
    assert_eq!(changed[2], ids[2]);
}

fn plan_ids(plan: &serde_json::Value) -> Vec<String> {
    plan["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn var_overrides_reach_the_rendered_job() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.yaml");
    std::fs::write(&path, "name: v\nvars:\n  who: world\nsandbox: {kind: local}\nllm: {model: m}\nsteps:\n  - message: hello {{ who }}\nreport:\n  dir: out/{{ who }}/{{ run.id }}\n").unwrap();
    let out = Ohrun::new().args(["plan", path.to_str().unwrap(), "--var", "who=ohrun"]).output();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("1 run of job `v`"), "{}", out.stdout);
}

#[test]
fn implicit_run_and_help() {
    let help = Ohrun::new().args(["--help"]).output();
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("Exit codes:") && help.stdout.contains("ohrun plan jobs/multi-repo.yaml"));
    let completions = Ohrun::new().args(["completions", "bash"]).output();
    assert_eq!(completions.code, 0);
    assert!(completions.stdout.contains("ohrun"));
    let bad = Ohrun::new().args(["frobnicate"]).output();
    assert_eq!(bad.code, 2);
}
