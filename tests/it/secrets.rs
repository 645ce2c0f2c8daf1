//! Secrets have one choke point: every byte ohrun writes goes through the redactor. The values are planted
//! where they do reach output — a setup command and the scripted agent echo them, a server `env:` value
//! carries one, `--json` prints the report, `-vv` logs — and the same run with redaction switched off
//! (`OHRUN_TEST_UNREDACTED=1`, debug builds only) must show them: a test that could not see a leak
//! would prove nothing.

use crate::support::*;

const LLM_KEY: &str = "sk-planted-llm-key-5f1e2d3c4b";
const TOKEN: &str = "ghp_planted_token_9a8b7c6d5e";
const ENV_SECRET: &str = "planted-server-env-7d6c5b4a";
const SETUP_SECRET: &str = "planted-setup-env-1a2b3c4d";
/// A value with a quote and a backslash looks different inside JSON (`\"`, `\\`).
const QUOTED: &str = "planted\"quoted\\value-42";

/// Runs the leaky job once; returns (stdout, stderr, every file ohrun wrote).
fn run_leaky_job(unredacted: bool) -> (String, String, Vec<(std::path::PathBuf, String)>) {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("script.yaml"),
        // The agent also prints the LLM key itself (it is in the script: a model could well say it), as
        // written and base64-encoded.
        format!(
            "replies:\n  - tool: terminal\n    args: {{command: 'echo token=$MY_TOKEN env=$FROM_ENV llm=$LLM_API_KEY'}}\n\
             \x20 - tool: terminal\n    args: {{command: 'echo said={LLM_KEY}; echo {LLM_KEY} | base64; printf x%s {LLM_KEY} | base64'}}\n\
             \x20 - tool: finish\n    args: {{message: done}}\n"
        ),
    )
    .unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        "name: secrets\nsandbox:\n  kind: local\n  env: {FROM_ENV: '${ENV_SECRET}'}\nllm:\n  model: m\n  api_key: ${LLM_API_KEY}\n\
         secrets: [MY_TOKEN]\nsetup:\n  - run: printf 'setup=%s quoted=%s llm=%s\\n' \"$A\" \"$B\" \"$LLM_API_KEY\"\n    env: {A: '${SETUP_SECRET}', B: '${QUOTED}'}\n\
         steps:\n  - message: Use the token.\nrehearsal: script.yaml\n",
    );
    let mut cmd = Ohrun::new()
        .current_dir(dir.path())
        .env("LLM_API_KEY", LLM_KEY)
        .env("MY_TOKEN", TOKEN)
        .env("ENV_SECRET", ENV_SECRET)
        .env("SETUP_SECRET", SETUP_SECRET)
        .env("QUOTED", QUOTED)
        .args(["-vv", "run", "--rehearse", "--json"])
        .args([&job]);
    if unredacted {
        cmd = cmd.env("OHRUN_TEST_UNREDACTED", "1");
    }
    let out = cmd.output();
    let report_dir = dir.path().join("ohrun-reports/secrets/secrets");
    let report = read_report(&report_dir);
    if unredacted {
        // The leak scan is the second net: with the redactor off, it finds the values and fails the run,
        // naming where (never what).
        assert_eq!(out.code, 1, "{}", out.stderr);
        let leaks = report["outcome"]["leaks"].as_array().expect("leaks listed");
        assert!(leaks.iter().any(|l| l["file"].as_str().unwrap().ends_with("events.jsonl")), "{leaks:?}");
        assert!(out.stderr.contains("error: a secret is in what ohrun wrote: "), "{}", out.stderr);
        let summary = read_summary(&dir.path().join("ohrun-reports/secrets"));
        assert_eq!(summary["runs"][0]["end_reason"], "secret_leak");
    } else {
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(report["outcome"].get("leaks").is_none(), "{}", report["outcome"]);
    }
    // The rehearsal does not make the LLM key any less secret: the server never had it.
    assert!(report["setup"][0]["stdout"].as_str().unwrap().ends_with("llm=\n"), "{}", report["setup"][0]);
    // What the agent itself writes into its workspace is its own; everything else is ohrun's.
    let files = files_under(report_dir.parent().unwrap())
        .into_iter()
        .filter(|(p, _)| !p.components().any(|c| c.as_os_str() == "workspace"))
        .collect();
    (out.stdout, out.stderr, files)
}

/// A value as written, JSON-escaped, and the base64 of `VALUE\n` and of `xVALUE` without their last
/// characters (which depend on what follows): what `echo $V | base64` and `printf x%s $V | base64` print.
fn forms(value: &str) -> Vec<String> {
    use base64::Engine;
    let b64 = |text: String| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        encoded[..encoded.len() - 4].to_string()
    };
    vec![
        value.to_string(),
        serde_json::to_string(value).unwrap().trim_matches('"').to_string(),
        b64(format!("{value}\n")),
        b64(format!("x{value}"))[2..].to_string(),
    ]
}

#[test]
fn secrets_never_reach_any_output_and_the_test_sees_a_leak_when_redaction_is_off() {
    let planted = [LLM_KEY, TOKEN, ENV_SECRET, SETUP_SECRET, QUOTED];
    let (stdout, stderr, files) = run_leaky_job(false);
    assert!(files.len() >= 3, "run.json, events.jsonl and the server log were written: {files:?}");
    for value in planted {
        for form in forms(value) {
            assert!(!stdout.contains(&form), "a secret reached stdout: {form}");
            assert!(!stderr.contains(&form), "a secret reached stderr: {form}");
            for (path, text) in &files {
                assert!(!text.contains(&form), "a secret is in {}", path.display());
            }
        }
    }
    assert!(
        files.iter().any(|(_, t)| t.contains("env=***")),
        "the masked echo is there, so the value did pass through"
    );
    assert!(files.iter().any(|(_, t)| t.contains("setup=*** quoted=***")), "the setup command's output is masked");

    // The same run without redaction: the planted values that reach output must show up, or this test
    // could never have seen a leak.
    let (stdout, _, files) = run_leaky_job(true);
    let all: String = files.iter().map(|(_, t)| t.as_str()).chain([stdout.as_str()]).collect();
    for value in [ENV_SECRET, SETUP_SECRET, LLM_KEY] {
        assert!(all.contains(value), "without redaction {value} should have been visible");
    }
    for form in &forms(LLM_KEY)[2..] {
        assert!(all.contains(form.as_str()), "without redaction the base64 form {form} should have been visible");
    }
    assert!(all.contains(&forms(QUOTED)[1]), "without redaction the JSON-escaped value should have been visible");
}

/// A failing setup command whose last line of stderr carries a secret: the failure message goes to the
/// console and into run.json, and, as the batch's rollups say why a run failed, into summary.json,
/// junit.xml, the GitHub step summary and its `::error` annotation. Returns (stderr, [(name, text)]).
fn run_failing_setup(unredacted: bool) -> (String, Vec<(&'static str, String)>) {
    let server = crate::server::shared();
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: leaky-setup\nsandbox: {{kind: remote, url: '{}', session_key: '${{K}}', working_dir: '{}'}}\nllm: {{model: m}}\n\
             secrets: [MY_TOKEN]\nsetup:\n  - run: echo \"token=$T\" >&2; exit 3\n    env: {{T: '${{MY_TOKEN}}'}}\nsteps:\n  - message: hi\n",
            server.url,
            dir.path().join("ws").display()
        ),
    );
    let step_summary = dir.path().join("step-summary.md");
    let mut cmd = Ohrun::new()
        .current_dir(dir.path())
        .env("K", &server.key)
        .env("MY_TOKEN", TOKEN)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &step_summary)
        .args(["-vv", "run", "--rehearse"])
        .args([&job]);
    if unredacted {
        cmd = cmd.env("OHRUN_TEST_UNREDACTED", "1");
    }
    let out = cmd.output();
    assert_eq!(out.code, 1, "{}", out.stderr);
    let batch = dir.path().join("ohrun-reports/leaky-setup");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    let files = vec![
        ("run.json", read(&batch.join("leaky-setup/run.json"))),
        ("summary.json", read(&batch.join("summary.json"))),
        ("junit.xml", read(&batch.join("junit.xml"))),
        ("step summary", read(&step_summary)),
    ];
    (out.stderr, files)
}

#[test]
fn a_secret_value_never_reaches_the_console_or_a_rollup_and_the_test_sees_it_when_redaction_is_off() {
    let (stderr, files) = run_failing_setup(false);
    assert!(stderr.contains("exited with 3: token=***"), "the failure is on the console, masked:\n{stderr}");
    let annotation = stderr.lines().find(|l| l.starts_with("::error ")).unwrap_or_default();
    assert!(annotation.contains("token=***"), "the annotation says why, masked: {stderr}");
    assert!(!stderr.contains(TOKEN), "{stderr}");
    for (name, text) in &files {
        assert!(!text.contains(TOKEN), "a secret is in {name}:\n{text}");
        assert!(text.contains("token=***"), "{name} says why the run failed:\n{text}");
    }
    let (stderr, files) = run_failing_setup(true);
    let annotation = stderr.lines().find(|l| l.starts_with("::error ")).unwrap_or_default();
    assert!(annotation.contains(TOKEN), "without redaction the `secrets:` value shows:\n{stderr}");
    for (name, text) in &files {
        assert!(text.contains(TOKEN), "without redaction the `secrets:` value shows in {name}:\n{text}");
    }
}
