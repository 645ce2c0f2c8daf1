//! Secrets have one choke point: every byte ohrun writes goes through the redactor. The values are planted
//! where they do reach output — a setup command and the scripted agent echo them, a server `env:` value
//! carries one, `--json` prints the report, `-vv` logs — and the same run with redaction switched off
//! (the `ohrun-unredacted` binary, built only for the tests) must show them: a test that could not see a leak
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
    let cmd = Ohrun::redacted(!unredacted)
        .current_dir(dir.path())
        .env("LLM_API_KEY", LLM_KEY)
        .env("MY_TOKEN", TOKEN)
        .env("ENV_SECRET", ENV_SECRET)
        .env("SETUP_SECRET", SETUP_SECRET)
        .env("QUOTED", QUOTED)
        .args(["-vv", "run", "--rehearse", "--json"])
        .args([&job]);
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
fn run_failing_setup(unredacted: bool, secret: &str) -> (String, Vec<(&'static str, String)>) {
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
    let cmd = Ohrun::redacted(!unredacted)
        .current_dir(dir.path())
        .env("K", &server.key)
        .env("MY_TOKEN", secret)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &step_summary)
        .args(["-vv", "run", "--rehearse"])
        .args([&job]);
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
    let (stderr, files) = run_failing_setup(false, TOKEN);
    assert!(stderr.contains("exited with 3: token=***"), "the failure is on the console, masked:\n{stderr}");
    let annotation = stderr.lines().find(|l| l.starts_with("::error ")).unwrap_or_default();
    assert!(annotation.contains("token=***"), "the annotation says why, masked: {stderr}");
    assert!(!stderr.contains(TOKEN), "{stderr}");
    for (name, text) in &files {
        assert!(!text.contains(TOKEN), "a secret is in {name}:\n{text}");
        assert!(text.contains("token=***"), "{name} says why the run failed:\n{text}");
    }
    let (stderr, files) = run_failing_setup(true, TOKEN);
    let annotation = stderr.lines().find(|l| l.starts_with("::error ")).unwrap_or_default();
    assert!(annotation.contains(TOKEN), "without redaction the `secrets:` value shows:\n{stderr}");
    for (name, text) in &files {
        assert!(text.contains(TOKEN), "without redaction the `secrets:` value shows in {name}:\n{text}");
    }
}

/// Secrets holding what junit.xml (`"`, `&`, `<`), the step summary (`|`, `<`) and the annotations (`%`)
/// escape: each output is made from redacted text, so the escaping never hides a secret from the redactor.
#[test]
fn a_secret_that_an_output_escapes_is_still_masked_in_it() {
    for (secret, fragment) in [(PROBE, "SEC RET/456"), ("sk-a|b%c<d&e\"-secret-4242", "-secret-4242")] {
        let (stderr, files) = run_failing_setup(false, secret);
        assert!(!stderr.contains(fragment), "{stderr}");
        for (name, text) in &files {
            assert!(!text.contains(fragment), "a secret is in {name}:\n{text}");
            assert!(text.contains("token=***"), "{name} says why the run failed, masked:\n{text}");
        }
    }
}

/// The secret of issue L's fault probe: a quote, a backslash, a space, a slash, `&` and `=`, so that each
/// common encoding of it differs from the others.
const PROBE: &str = "sk-pr\"obe\\SEC RET/456&x=y";

/// What the agent prints of `$PROBE`: as written and in every encoding the redactor must know, one per
/// line, each led by its name.
const ENCODINGS_PY: &str = r#"import base64, json, os, urllib.parse as u
s = os.environ["PROBE"]
print("raw", s)
print("quote", u.quote(s))
print("quote_all", u.quote(s, safe=""))
print("quote_plus", u.quote_plus(s))
print("query", u.urlencode({"k": s}))
print("json1", json.dumps(s))
print("json2", json.dumps(json.dumps({"k": s})))
print("b64", base64.b64encode(s.encode()).decode())
print("b64url", base64.urlsafe_b64encode(("xy" + s).encode()).decode())
open("leak.txt", "w").write(s + "\n")
"#;

/// The forms of `PROBE` that the agent's output above holds (base64 only as far as it depends on the
/// secret alone).
fn probe_forms() -> Vec<(&'static str, String)> {
    use base64::Engine;
    let json1 = serde_json::to_string(PROBE).unwrap();
    let json2 = serde_json::to_string(&json1).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(PROBE);
    let b64url = base64::engine::general_purpose::URL_SAFE.encode(format!("xy{PROBE}"));
    vec![
        ("raw", PROBE.to_string()),
        ("quote", "sk-pr%22obe%5CSEC%20RET/456%26x%3Dy".to_string()),
        ("quote_all", "sk-pr%22obe%5CSEC%20RET%2F456%26x%3Dy".to_string()),
        ("quote_plus", "sk-pr%22obe%5CSEC+RET%2F456%26x%3Dy".to_string()),
        ("json1", json1[1..json1.len() - 1].to_string()),
        ("json2", json2[1..json2.len() - 1].to_string()),
        ("b64", b64[..b64.len() - 4].to_string()),
        ("b64url", b64url[4..b64url.len() - 4].to_string()),
    ]
}

/// Runs the probe job: setup writes the encoder, the agent runs it (its output in events.jsonl, report.html
/// and the run's report), writes the secret into a file (the step's diff) and says it in its final message.
/// Returns (exit code, stdout + stderr, every file ohrun wrote but the agent's workspace).
fn run_probe_job(unredacted: bool) -> (i32, String, Vec<(std::path::PathBuf, String)>) {
    agent_server_command();
    let dir = tempfile::tempdir().unwrap();
    let finish = serde_json::to_string(&format!("done: {PROBE}")).unwrap();
    std::fs::write(
        dir.path().join("script.yaml"),
        format!(
            "replies:\n  - tool: terminal\n    args: {{command: 'PROBE=\"$PROBE\" python3 enc.py'}}\n\
             \x20 - tool: finish\n    args: {{message: {finish}}}\n"
        ),
    )
    .unwrap();
    let encoder: String = ENCODINGS_PY.lines().map(|l| format!("    {l}\n")).collect();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: probe\nsandbox: {{kind: local}}\nllm: {{model: m}}\nsecrets: [PROBE]\nsetup:\n  - |\n    cat > enc.py <<'EOF'\n{encoder}    EOF\n\
             steps:\n  - message: Encode the secret.\nrehearsal: script.yaml\n"
        ),
    );
    let cmd = Ohrun::redacted(!unredacted)
        .current_dir(dir.path())
        .env("PROBE", PROBE)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", dir.path().join("step-summary.md"))
        .args(["-vv", "run", "--rehearse", "--json"])
        .args([&job]);
    let out = cmd.output();
    let batch = dir.path().join("ohrun-reports/probe");
    let mut files: Vec<_> = files_under(&batch)
        .into_iter()
        .filter(|(p, _)| !p.components().any(|c| c.as_os_str() == "workspace"))
        .collect();
    files.extend(files_under(dir.path()).into_iter().filter(|(p, _)| p.ends_with("step-summary.md")));
    (out.code, format!("{}\n{}", out.stdout, out.stderr), files)
}

#[test]
fn the_probe_secret_is_masked_in_every_encoding_in_every_output_and_seen_when_redaction_is_off() {
    let (code, console, files) = run_probe_job(false);
    assert_eq!(code, 0, "{console}");
    let names: Vec<String> = files.iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into()).collect();
    for expected in
        ["run.json", "events.jsonl", "report.html", "summary.json", "junit.xml", "1.diff", "step-summary.md"]
    {
        assert!(names.iter().any(|n| n == expected), "{expected} was written: {names:?}");
    }
    for (name, form) in probe_forms() {
        assert!(!console.contains(&form), "the {name} form reached the console: {form}");
        for (path, text) in &files {
            assert!(!text.contains(&form), "the {name} form ({form}) is in {}", path.display());
        }
    }
    let events = files.iter().find(|(p, _)| p.ends_with("events.jsonl")).map(|(_, t)| t.as_str()).unwrap();
    // (The agent-server masks the raw value in terminal output itself; the encoded ones are ohrun's to mask.)
    for name in ["quote ***", "quote_all ***", "quote_plus ***", "query k=***", "b64 "] {
        assert!(events.contains(name), "the agent's output passed through, masked ({name})");
    }
    let diff = files.iter().find(|(p, _)| p.ends_with("1.diff")).map(|(_, t)| t.as_str()).unwrap();
    assert!(diff.contains("+***"), "the file the agent wrote is in the step's diff, masked:\n{diff}");

    // With the redactor a no-op the same run shows every form somewhere, and the leak scan fails it:
    // the checks above can see a leak.
    let (code, console, files) = run_probe_job(true);
    assert_eq!(code, 1, "the leak scan fails the run:\n{console}");
    let all: String = files.iter().map(|(_, t)| t.as_str()).chain([console.as_str()]).collect();
    for (name, form) in probe_forms() {
        assert!(all.contains(&form), "without redaction the {name} form ({form}) should have been visible");
    }
}

/// A multi-line secret (a PEM key) in an error a server answered with, printed on the console with each
/// line led by its run's id (a batch of two): redacted whole before the lines are led, and before the
/// error's text is cut.
#[test]
fn a_multi_line_secret_is_masked_on_led_console_lines() {
    use axum::http::{StatusCode, Uri};
    use axum::response::IntoResponse;
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nb3BlbmhhbmRzLXByb2JlLXNlY3JldC1rZXktbWF0ZXJpYWw\n-----END PRIVATE KEY-----";
    // A server that answers the calls without a key, and every other with a 400 whose body echoes the key.
    let router = axum::Router::new().fallback(move |uri: Uri| async move {
        match uri.path() {
            "/health" => (StatusCode::OK, "{}".to_string()).into_response(),
            "/server_info" => (StatusCode::OK, r#"{"version":"1.58.2"}"#.to_string()).into_response(),
            _ => (StatusCode::BAD_REQUEST, format!("bad configuration:\n{pem}\n")).into_response(),
        }
    });
    let server = crate::transport::TestServer::start(router);
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: pem\nmatrix: {{n: [1, 2]}}\nsandbox: {{kind: remote, url: '{}', working_dir: /w}}\nllm: {{model: m}}\nsecrets: [KEY_PEM]\n\
             steps:\n  - message: hi\n",
            server.url
        ),
    );
    let run = |unredacted: bool| {
        let cmd = Ohrun::redacted(!unredacted)
            .current_dir(dir.path())
            .env("KEY_PEM", pem)
            .args(["run", "--rehearse"])
            .args([&job]);
        cmd.output()
    };
    let out = run(false);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("] error: GET ") && out.stderr.contains("answered 400"), "{}", out.stderr);
    for line in pem.lines() {
        assert!(!out.stderr.contains(line), "a line of the key reached the console:\n{}", out.stderr);
    }
    let out = run(true);
    assert!(out.stderr.contains(pem.lines().nth(1).unwrap()), "without redaction the key shows:\n{}", out.stderr);
}

/// A failing setup command's last line of stderr goes into the failure message: a secret spanning two
/// lines is redacted whole before that line is taken, so its second line never shows.
#[test]
fn the_last_line_of_a_failed_setup_never_holds_part_of_a_secret() {
    let server = crate::server::shared();
    let dir = tempfile::tempdir().unwrap();
    let secret = "two-line-secret-AAAA1111\ntwo-line-secret-BBBB2222";
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: two-lines\nsandbox: {{kind: remote, url: '{}', session_key: '${{K}}', working_dir: '{}'}}\nllm: {{model: m}}\n\
             secrets: [TWO_LINES]\nsetup:\n  - run: printf '%s\\n' \"$T\" >&2; exit 3\n    env: {{T: '${{TWO_LINES}}'}}\nsteps:\n  - message: hi\n",
            server.url,
            dir.path().join("ws").display()
        ),
    );
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("K", &server.key)
        .env("TWO_LINES", secret)
        .args(["run", "--rehearse"])
        .args([&job])
        .output();
    assert_eq!(out.code, 1, "{}", out.stderr);
    let report = std::fs::read_to_string(dir.path().join("ohrun-reports/two-lines/two-lines/run.json")).unwrap();
    for (what, text) in [("the console", out.stderr.as_str()), ("run.json", report.as_str())] {
        assert!(!text.contains("BBBB2222") && !text.contains("AAAA1111"), "part of the secret is in {what}:\n{text}");
    }
    assert!(out.stderr.contains("exited with 3: ***"), "{}", out.stderr);
}
