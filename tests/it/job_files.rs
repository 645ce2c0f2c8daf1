//! Job files mean what they say, end to end: `${VAR}` in paths, names and `env:` values; report
//! directories that never collide; and what a new user trips on (flags, hints, kept servers).

use crate::run_local::run_job;
use crate::server::shared;
use crate::support::*;
use std::time::Duration;

#[test]
fn environment_references_expand_in_paths_and_env_values() {
    let server = shared();
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("the-workspace");
    let out_dir = dir.path().join("elsewhere");
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: env-refs\nsandbox:\n  kind: remote\n  url: {}\n  session_key: ${{K}}\n  working_dir: ${{WS}}\nllm: {{model: m}}\n\
             setup:\n  - run: pwd; test \"$VAL\" = plain-value && echo matched\n    cwd: ${{SUB:-sub}}\n    env: {{VAL: '${{VAL_FROM_ENV}}'}}\n\
             steps:\n  - message: hi\nreport:\n  dir: ${{OUT}}/{{{{ run.id }}}}\n",
            server.url
        ),
    );
    std::fs::create_dir_all(ws.join("sub")).unwrap();
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("K", &server.key)
        .env("WS", &ws)
        .env("OUT", &out_dir)
        .env("VAL_FROM_ENV", "plain-value")
        .args(["run", "--rehearse"])
        .args([&job])
        .output();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!dir.path().join("${OUT}").exists(), "no folder named `${{OUT}}` was made");
    let report = read_report(&out_dir.join("env-refs"));
    assert_eq!(report["sandbox"]["working_dir"], ws.display().to_string());
    let stdout = report["setup"][0]["stdout"].as_str().unwrap();
    assert!(stdout.contains(&format!("{}/sub", ws.display())), "setup ran in the expanded cwd: {stdout}");
    assert!(stdout.contains("matched"), "the env value was expanded, not exported as `${{VAL_FROM_ENV}}`: {stdout}");
}

#[test]
fn a_report_directory_holding_another_runs_evidence_is_refused() {
    let first = run_job("first", None, "report: {dir: shared-out}\n", None, &["--rehearse"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    // A second job in the same place, pointed at the first one's report directory.
    let server = shared();
    let job = write_job(
        first.dir.path(),
        "second.yaml",
        &format!(
            "name: second\nsandbox: {{kind: remote, url: '{}', session_key: '${{K}}', working_dir: '{}'}}\nllm: {{model: m}}\nsteps:\n  - message: hi\nreport: {{dir: shared-out}}\n",
            server.url,
            first.dir.path().join("ws2").display()
        ),
    );
    let before = std::fs::read_to_string(first.dir.path().join("shared-out/run.json")).unwrap();
    let out = Ohrun::new()
        .current_dir(first.dir.path())
        .env("K", &server.key)
        .args(["run", "--rehearse"])
        .args([&job])
        .output();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("holds the report of run first"), "{}", out.stderr);
    let after = std::fs::read_to_string(first.dir.path().join("shared-out/run.json")).unwrap();
    assert_eq!(before, after, "the first run's evidence is untouched");
}

#[test]
fn verbose_flags_add_logs_and_quiet_means_quiet() {
    let default = run_job("quiet-default", None, "", None, &["--rehearse"]);
    let verbose = run_job("quiet-v", None, "", None, &["-v", "--rehearse"]);
    let very = run_job("quiet-vv", None, "", None, &["-vv", "--rehearse"]);
    for r in [&default, &verbose, &very] {
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    assert!(!default.stderr.contains("INFO ohrun") && !default.stderr.contains("DEBUG ohrun"), "{}", default.stderr);
    assert!(
        verbose.stderr.contains("INFO ohrun") && !verbose.stderr.contains("DEBUG ohrun"),
        "-v adds what ohrun does:\n{}",
        verbose.stderr
    );
    assert!(very.stderr.contains("DEBUG ohrun"), "-vv adds every request:\n{}", very.stderr);
    let quiet = Ohrun::new().args(["-q", "validate", "jobs/local.yaml"]).output();
    assert_eq!(quiet.code, 0);
    assert_eq!(quiet.stderr, "", "-q validate prints nothing when the file is valid");
}

#[test]
fn a_kept_local_server_says_how_to_reach_and_stop_it() {
    let r = run_job("kept-local", Some("  kind: local\n"), "cleanup: never\n", None, &["--rehearse"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let pid = sandbox_pid(&r.report).expect("the server's pid is recorded");
    let key_file = r.dir.path().join("ohrun-reports/kept-local/kept-local/attempt-1/agent-server.key");
    let result = std::panic::catch_unwind(|| {
        assert!(
            r.stderr.contains("session key in ohrun-reports/kept-local/kept-local/attempt-1/agent-server.key"),
            "the key file is named:\n{}",
            r.stderr
        );
        assert!(r.stderr.contains(&format!("kill -TERM -- -{pid}")), "the console says how to stop it:\n{}", r.stderr);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_file).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "only the user can read the key");
        let key = std::fs::read_to_string(&key_file).unwrap();
        let url = r.report["sandbox"]["agent_server_url"].as_str().unwrap();
        let answer =
            crate::server::http(url, "GET", "/api/conversations/count", &key).expect("the kept server answers");
        assert_eq!(answer.0, 200, "the key in the file opens the kept server");
    });
    // Stopped the way the console says (its tmux sessions end with it), then made sure of.
    // SAFETY: signals to the server the test kept.
    unsafe { libc::kill(-pid, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while process_alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    result.unwrap();
}

#[test]
fn a_wrong_session_key_is_exit_3_with_a_hint_naming_the_variable() {
    let server = shared();
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: wrong-key\nsandbox: {{kind: remote, url: '{}', session_key: '${{MY_AGENT_KEY}}', working_dir: /tmp}}\nllm: {{model: m}}\nsteps:\n  - message: hi\n",
            server.url
        ),
    );
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("MY_AGENT_KEY", "not-the-key-12345")
        .args(["run", "--rehearse"])
        .args([&job])
        .output();
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("MY_AGENT_KEY"), "the hint names the variable:\n{}", out.stderr);
    assert!(!out.stderr.contains("not-the-key-12345"), "the key itself is never shown");
}

#[test]
fn the_rehearse_hint_appears_only_where_it_helps() {
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        "name: no-ws\nsandbox: {kind: local, working_dir: '${NO_SUCH_DIR_VAR}'}\nllm: {model: m}\nsteps:\n  - message: hi\n",
    );
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env_remove("NO_SUCH_DIR_VAR")
        .args(["run", "--rehearse"])
        .args([&job])
        .timeout(Duration::from_secs(60))
        .output();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("NO_SUCH_DIR_VAR"), "{}", out.stderr);
    assert!(!out.stderr.contains("--rehearse"), "no `--rehearse` hint when rehearsing already:\n{}", out.stderr);
}

#[test]
fn two_ohrun_processes_never_write_into_one_report_directory() {
    let server = shared();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("script.yaml"),
        "replies:\n  - tool: finish\n    args: {message: first one done}\n    delay: 4s\n",
    )
    .unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "name: twice\nsandbox: {{kind: remote, url: '{}', session_key: '${{K}}', working_dir: '{}'}}\nllm: {{model: m}}\nsteps:\n  - message: hi\nrehearsal: script.yaml\nreport: {{dir: 'runs/{{{{ run.id }}}}'}}\n",
            server.url,
            dir.path().join("ws").display()
        ),
    );
    let first =
        Ohrun::new().current_dir(dir.path()).env("K", &server.key).args(["run", "--rehearse"]).args([&job]).spawn();
    let events = dir.path().join("runs/twice/attempt-1/events.jsonl");
    wait_until(Duration::from_secs(60), "the first run's step started", || {
        std::fs::read_to_string(&events).unwrap_or_default().contains("MessageEvent")
    });
    // The same job again while the first one runs: in the same batch directory, and in another one (but
    // the same run directory, which the job names).
    let again = |args: &[&str]| {
        Ohrun::new()
            .current_dir(dir.path())
            .env("K", &server.key)
            .args(["run", "--rehearse"])
            .args(args)
            .args([&job])
            .output()
    };
    let same_batch = again(&[]);
    assert_eq!(same_batch.code, 2, "{}", same_batch.stderr);
    assert!(
        same_batch.stderr.contains("another ohrun (pid")
            && same_batch.stderr.contains("is running the batch in ohrun-reports/twice"),
        "{}",
        same_batch.stderr
    );
    let same_run = again(&["--out", "elsewhere"]);
    assert_eq!(same_run.code, 2, "{}", same_run.stderr);
    assert!(
        same_run.stderr.contains("another ohrun (pid") && same_run.stderr.contains("is writing into runs/twice"),
        "{}",
        same_run.stderr
    );
    let first = wait_output(first, Duration::from_secs(60));
    assert_eq!(first.code, 0, "{}", first.stderr);
    let report = read_report(&dir.path().join("runs/twice"));
    assert_eq!(report["steps"][0]["final_message"], "first one done");
    assert_eq!(report["run"]["attempt"], 1, "no attempt of the others was made in it");
    let logged = read_events(&dir.path().join("runs/twice"));
    assert_eq!(
        report["totals"]["events"].as_u64().unwrap() as usize,
        logged.len(),
        "the first run's event log is whole"
    );
}

/// A run's folder is named after its job: a name of dots would put it on the batch's own files (`.`) or
/// above the batch directory (`..`). Refused with exit 2 before anything is written.
#[test]
fn job_names_that_would_escape_the_batch_directory_are_refused() {
    for name in ["..", ".", ".hidden", "report.html", "Summary.json", "batch.json"] {
        let dir = tempfile::tempdir().unwrap();
        let job = write_job(
            dir.path(),
            "job.yaml",
            &format!("name: '{name}'\nsandbox: {{kind: local}}\nllm: {{model: m}}\nsteps:\n  - message: hi\n"),
        );
        let out = Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args([&job]).output();
        assert_eq!(out.code, 2, "{name}: {}", out.stderr);
        assert!(out.stderr.contains("is not a valid job name") && out.stderr.contains("job.yaml:1:"), "{}", out.stderr);
        assert!(!dir.path().join("ohrun-reports").exists() && !dir.path().join("run.json").exists());
    }
}

/// A template value (a matrix entry, a `--var`) cannot walk a run's report out of where the job file puts
/// it, and no run writes into the batch directory itself, above it, or into another run's folder.
#[test]
fn report_directories_that_escape_or_nest_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let base = "sandbox: {kind: local}\nllm: {model: m}\nsteps:\n  - message: hi\n";
    let templated = write_job(
        dir.path(),
        "templated.yaml",
        &format!("name: t\nmatrix: {{repo: [a, '../../escape']}}\n{base}report: {{dir: 'out/{{{{ repo }}}}'}}\n"),
    );
    let out = Ohrun::new().current_dir(dir.path()).args(["plan"]).args([&templated]).output();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("a template value adds `..`") && out.stderr.contains("templated.yaml:"),
        "{}",
        out.stderr
    );

    let dot = write_job(dir.path(), "dot.yaml", &format!("name: dot\n{base}report: {{dir: '.'}}\n"));
    let out = Ohrun::new().current_dir(dir.path()).args(["validate"]).args([&dot]).output();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("is empty or `.`"), "{}", out.stderr);

    // Across the batch: one run's folder inside another's, and one that is the batch directory's parent.
    let outer = write_job(dir.path(), "outer.yaml", &format!("name: outer\n{base}report: {{dir: 'out/a'}}\n"));
    let inner = write_job(dir.path(), "inner.yaml", &format!("name: inner\n{base}report: {{dir: 'out/a/inner'}}\n"));
    let out = Ohrun::new().current_dir(dir.path()).args(["validate"]).args([&outer, &inner]).output();
    assert_eq!(out.code, 2, "validate refuses it too: {}", out.stderr);
    assert!(out.stderr.contains("inside the report directory of run outer"), "{}", out.stderr);
    let out = Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args([&outer, &inner]).output();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("inside the report directory of run outer"), "{}", out.stderr);
    let above = write_job(dir.path(), "above.yaml", &format!("name: above\n{base}report: {{dir: 'batches'}}\n"));
    let out = Ohrun::new()
        .current_dir(dir.path())
        .args(["run", "--rehearse", "--out", "batches/nightly"])
        .args([&above])
        .output();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("is the batch directory") && out.stderr.contains("or above it"), "{}", out.stderr);
    assert!(!dir.path().join("out").exists() && !dir.path().join("batches").exists(), "nothing was written");
}

/// In a batch of several job files, no template renders a variable another job keeps secret.
#[test]
fn a_template_never_renders_another_jobs_secret() {
    let dir = tempfile::tempdir().unwrap();
    let base = "sandbox: {kind: local}\nllm: {model: m}\n";
    let reader = write_job(
        dir.path(),
        "reader.yaml",
        &format!("name: reader\n{base}steps:\n  - message: 'token: {{{{ env.OTHER_TOKEN }}}}'\n"),
    );
    // A variable a docker job forwards into its sandbox is a secret too.
    let forwarder = write_job(
        dir.path(),
        "forwarder.yaml",
        "name: forwarder\nsandbox: {kind: docker, forward_env: [GH_TOK]}\nllm: {model: m}\nsteps:\n  - message: hi\n",
    );
    let gh_reader =
        write_job(dir.path(), "gh.yaml", &format!("name: gh\n{base}steps:\n  - message: '{{{{ env.GH_TOK }}}}'\n"));
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("GH_TOK", "planted-gh-tok-77")
        .args(["validate"])
        .args([&gh_reader, &forwarder])
        .output();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("would render a secret") && !out.stderr.contains("planted-gh-tok"), "{}", out.stderr);
    let owner = write_job(
        dir.path(),
        "owner.yaml",
        &format!("name: owner\n{base}secrets: [OTHER_TOKEN]\nsteps:\n  - message: hi\n"),
    );
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("OTHER_TOKEN", "planted-other-token-5a6b")
        .args(["plan", "--json"])
        .args([&reader, &owner])
        .output();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(!out.stdout.contains("planted-other-token") && !out.stderr.contains("planted-other-token"));
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("would render a secret") && text.contains("OTHER_TOKEN"), "{text}");
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("OTHER_TOKEN", "planted-other-token-5a6b")
        .args(["validate"])
        .args([&reader, &owner])
        .output();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("reader.yaml:5:25"), "the error points at the template: {}", out.stderr);
}

/// Two runs of a matrix that name one Runtime API session would attach to one sandbox, and the first to
/// end would stop it under the other: refused at validate time.
#[test]
fn matrix_runs_sharing_a_runtime_session_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = "sandbox:\n  kind: runtime\n  api_url: https://runtime.example.com\n  api_key: ${RUNTIME_API_KEY}\n  image: img\n";
    let shared = write_job(
        dir.path(),
        "shared.yaml",
        &format!(
            "name: s\nmatrix: {{n: [1, 2]}}\n{sandbox}  session_id: nightly\nllm: {{model: m}}\nsteps:\n  - message: hi\n"
        ),
    );
    let out = Ohrun::new().current_dir(dir.path()).args(["validate"]).args([&shared]).output();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("2 runs would share the Runtime API session `nightly`"), "{}", out.stderr);
    assert!(out.stderr.contains("shared.yaml:8:15"), "{}", out.stderr);
    let own = write_job(
        dir.path(),
        "own.yaml",
        &format!(
            "name: s\nmatrix: {{n: [1, 2]}}\n{sandbox}  session_id: 'nightly-{{{{ n }}}}'\nllm: {{model: m}}\nsteps:\n  - message: hi\n"
        ),
    );
    let out = Ohrun::new().current_dir(dir.path()).args(["validate"]).args([&own]).output();
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// `--out` where no directory can be made is infrastructure (exit 3, as for any report that cannot be
/// written) with the reason, not the hint meant for a batch another ohrun holds.
#[test]
fn an_unwritable_out_is_exit_3_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-file"), "").unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        "name: nowhere\nsandbox: {kind: local}\nllm: {model: m}\nsteps:\n  - message: hi\n",
    );
    let out =
        Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse", "--out", "a-file/batch"]).args([&job]).output();
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("cannot create the batch directory a-file/batch"), "{}", out.stderr);
    assert!(out.stderr.contains("a directory you can write") && !out.stderr.contains("wait for it"), "{}", out.stderr);
}
