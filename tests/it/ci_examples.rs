//! The CI examples in docs/ci are real: they parse as YAML, have the shape their platform needs, and every
//! `ohrun` command line in them is accepted by ohrun's own argument parser, with shards that cover
//! 1..=N and a merge of every shard.

use crate::support::repo_root;
use clap::Parser;
use serde_yaml::Value;

fn load(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join("docs/ci").join(name)).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

/// The `ohrun …` commands of a shell script, with the placeholders CI fills in replaced by `values`.
fn ohrun_commands(script: &str, values: &[(&str, &str)]) -> Vec<Vec<String>> {
    let mut text = script.to_string();
    for (from, to) in values {
        text = text.replace(from, to);
    }
    let mut commands = Vec::new();
    for part in text.split(['\n', ';']).flat_map(|l| l.split("&&")).flat_map(|l| l.split("||")) {
        let mut words: Vec<&str> = part.split_whitespace().collect();
        while matches!(words.first(), Some(&("then" | "else" | "exec" | "if" | "fi"))) {
            words.remove(0);
        }
        if words.first() == Some(&"ohrun") {
            commands.push(words.iter().map(|w| w.to_string()).collect());
        }
    }
    commands
}

/// Parses a command line as ohrun would; `--version` and `--help` count as accepted.
fn assert_accepted(args: &[String]) -> Option<ohrun::cli::Cli> {
    match ohrun::cli::Cli::try_parse_from(args) {
        Ok(cli) => Some(cli),
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayVersion | clap::error::ErrorKind::DisplayHelp) => {
            None
        }
        Err(e) => panic!("`{}` is not a valid ohrun command line: {e}", args.join(" ")),
    }
}

/// The `--shard` and `--out` of a `run`, and the directories of a `merge`.
fn shard_and_out(cli: &ohrun::cli::Cli) -> (Option<String>, Option<String>, Vec<String>) {
    match &cli.command {
        ohrun::cli::Command::Run(r) => {
            (r.select.shard.clone(), r.out.as_ref().map(|o| o.display().to_string()), vec![])
        }
        ohrun::cli::Command::Merge(m) => (None, None, m.dirs.iter().map(|d| d.display().to_string()).collect()),
        _ => (None, None, vec![]),
    }
}

#[test]
fn the_github_actions_workflow_runs_every_shard_and_merges_them() {
    let doc = load("github-actions.yml").remove(0);
    assert!(doc["on"]["schedule"][0]["cron"].as_str().unwrap().split_whitespace().count() == 5, "a cron trigger");
    let shards: Vec<u64> = doc["jobs"]["shard"]["strategy"]["matrix"]["shard"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let n = doc["env"]["SHARDS"].as_str().unwrap();
    assert_eq!(n.parse::<usize>().unwrap(), shards.len(), "SHARDS is the matrix' length");
    let uses = |job: &str| -> Vec<String> {
        doc["jobs"][job]["steps"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|s| s["uses"].as_str().map(str::to_string))
            .collect()
    };
    // The shard job runs its shard through the action (action.yml; tests/it/action.rs runs it), which
    // caches ohrun and uploads the batch directory under the name the report job downloads.
    let steps = doc["jobs"]["shard"]["steps"].as_sequence().unwrap();
    let [step] = steps
        .iter()
        .filter(|s| s["uses"].as_str().is_some_and(|u| u.starts_with("your-org/ohrun@v")))
        .collect::<Vec<_>>()[..]
    else {
        panic!("the shard job runs one step of the action")
    };
    assert!(uses("report").iter().any(|u| u.starts_with("actions/download-artifact@")));
    assert!(uses("report").iter().any(|u| u.contains("junit")), "the JUnit report is published");
    let download = doc["jobs"]["report"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with("actions/download-artifact@")))
        .unwrap();
    let pattern = download["with"]["pattern"].as_str().unwrap().trim_end_matches('*');
    assert!(step["with"]["upload-name"].as_str().unwrap().starts_with(pattern), "the report job downloads the shards");

    let mut covered = Vec::new();
    for shard in &shards {
        let fill = |k: &str| {
            step["with"][k]
                .as_str()
                .unwrap()
                .replace("${{ matrix.shard }}", &shard.to_string())
                .replace("${{ env.SHARDS }}", n)
        };
        let out = fill("out");
        let mut cmd: Vec<String> = vec!["ohrun".into(), "run".into()];
        cmd.extend(fill("jobs").split_whitespace().map(String::from));
        cmd.extend(["--out".to_string(), out.clone()]);
        cmd.extend(fill("args").split_whitespace().map(String::from));
        if let Some((Some(s), o, _)) = assert_accepted(&cmd).map(|c| shard_and_out(&c)) {
            assert_eq!(o.as_deref(), Some(format!("ohrun-reports/shard-{shard}").as_str()));
            assert_eq!(out, format!("ohrun-reports/shard-{shard}"));
            covered.push(s);
        }
    }
    assert_eq!(covered, shards.iter().map(|s| format!("{s}/{n}")).collect::<Vec<_>>(), "every shard once");
    let mut merged = Vec::new();
    for step in doc["jobs"]["report"]["steps"].as_sequence().unwrap() {
        for cmd in ohrun_commands(step["run"].as_str().unwrap_or(""), &[]) {
            if let Some((_, _, dirs)) = assert_accepted(&cmd).map(|c| shard_and_out(&c)) {
                merged.extend(dirs);
            }
        }
    }
    assert_eq!(merged, shards.iter().map(|s| format!("shards/ohrun-shard-{s}")).collect::<Vec<_>>());
}

#[test]
fn the_nightly_compare_gates_on_regressions_against_the_previous_nights_merge() {
    let doc = load("github-actions.yml").remove(0);
    let job = &doc["jobs"]["compare"];
    assert_eq!(job["needs"].as_str(), Some("report"), "it compares the merged batch");
    let steps = job["steps"].as_sequence().unwrap();
    // Both nights are the artifact the report job uploads: tonight's, and the previous run's by its id.
    let uploaded = doc["jobs"]["report"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with("actions/upload-artifact@")))
        .map(|s| s["with"]["name"].clone())
        .unwrap();
    let downloads: Vec<&Value> = steps
        .iter()
        .filter(|s| s["uses"].as_str().is_some_and(|u| u.starts_with("actions/download-artifact@")))
        .collect();
    assert_eq!(downloads.len(), 2);
    assert!(downloads.iter().all(|d| d["with"]["name"] == uploaded), "{downloads:?}");
    let previous =
        downloads.iter().find(|d| d["with"]["run-id"].is_string()).expect("one download names the previous run");
    let mut compares = Vec::new();
    for step in steps {
        for cmd in ohrun_commands(step["run"].as_str().unwrap_or(""), &[]) {
            if let Some(ohrun::cli::Command::Compare(c)) = assert_accepted(&cmd).map(|c| c.command) {
                compares.push(c);
            }
        }
    }
    let [c] = compares.as_slice() else { panic!("one `ohrun compare`: {compares:?}") };
    assert_eq!(c.fail_on, ohrun::compare::FailOn::Regression);
    assert_eq!(
        Some(c.base.display().to_string().as_str()),
        previous["with"]["path"].as_str(),
        "BASE is the previous night"
    );
    let tonight = downloads.iter().find(|d| !d["with"]["run-id"].is_string()).unwrap();
    assert_eq!(Some(c.new.display().to_string().as_str()), tonight["with"]["path"].as_str(), "NEW is tonight");
}

#[test]
fn the_kubernetes_indexed_job_runs_every_shard_and_the_merge_reads_them_all() {
    let docs = load("kubernetes-indexed-job.yaml");
    let (shards, merge) = (&docs[0], &docs[1]);
    assert_eq!((shards["kind"].as_str(), shards["spec"]["completionMode"].as_str()), (Some("Job"), Some("Indexed")));
    let n = shards["spec"]["completions"].as_u64().unwrap();
    let script = shards["spec"]["template"]["spec"]["containers"][0]["args"][0].as_str().unwrap();
    let mut covered = Vec::new();
    for index in 0..n {
        let i = (index + 1).to_string();
        let out = format!("/results/shard-{i}");
        let values = [("$((JOB_COMPLETION_INDEX + 1))", i.as_str()), ("$OUT", out.as_str()), ("$I", i.as_str())];
        for cmd in ohrun_commands(script, &values) {
            let cli = assert_accepted(&cmd).unwrap();
            if let (Some(s), o, _) = shard_and_out(&cli) {
                assert_eq!(o.as_deref(), Some(out.as_str()));
                covered.push(s);
            }
        }
    }
    assert_eq!(covered, (1..=n).map(|i| format!("{i}/{n}")).collect::<Vec<_>>(), "pods 0..N run shards 1..=N");
    let merge_script = merge["spec"]["template"]["spec"]["containers"][0]["args"][0].as_str().unwrap();
    let dirs: Vec<String> =
        ohrun_commands(merge_script, &[]).iter().flat_map(|c| shard_and_out(&assert_accepted(c).unwrap()).2).collect();
    assert_eq!(dirs, (1..=n).map(|i| format!("/results/shard-{i}")).collect::<Vec<_>>());
}

#[test]
fn the_command_finder_finds_what_it_should() {
    let found = ohrun_commands(
        "command -v ohrun || cargo install ohrun\nif x; then exec ohrun run a.yaml; else ohrun merge b; fi",
        &[],
    );
    assert_eq!(found, vec![vec!["ohrun", "run", "a.yaml"], vec!["ohrun", "merge", "b"]]);
}

#[test]
fn the_readme_shows_the_workflow_as_it_is_in_docs_ci() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let workflow = std::fs::read_to_string(repo_root().join("docs/ci/github-actions.yml")).unwrap();
    assert!(
        readme.contains(&format!("```yaml\n{workflow}```")),
        "README.md's workflow differs from docs/ci/github-actions.yml"
    );
}
