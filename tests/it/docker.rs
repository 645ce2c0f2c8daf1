//! The docker sandbox on the real Docker engine. Without `image:` a job gets the official image where the
//! engine can pull it and ohrun's own otherwise; CI has no registry, so there the tests run on ohrun's own,
//! which the first test that needs it builds with `ohrun setup docker` (as a user would before a first
//! docker job; locked, so parallel tests build it once). The official image's two paths are tested with
//! `OHRUN_OFFICIAL_IMAGE`: an unreachable registry (the fallback), and ohrun's image tagged with that
//! reference (already on the engine: used as the official one, without a pull). Without an engine these
//! tests fail, unless `OHRUN_TEST_SKIP_DOCKER=1` says to skip them.

use crate::support::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

pub(crate) const IMAGE: &str = "ohrun/agent-server:1.58.2-python";
/// The first docker test may build the image (a few minutes).
pub(crate) const DOCKER_TIMEOUT: Duration = Duration::from_secs(1500);

pub(crate) fn docker(args: &[&str]) -> (bool, String) {
    match Command::new("docker").args(args).output() {
        Ok(o) => (o.status.success(), String::from_utf8_lossy(&o.stdout).trim().to_string()),
        Err(e) => (false, e.to_string()),
    }
}

/// True when there is an engine and ohrun's default image is on it; without an engine the test fails,
/// unless OHRUN_TEST_SKIP_DOCKER=1. The image is made by `ohrun setup docker` on first need (once, locked),
/// as a user would: a run never builds what needs host packages (debootstrap), only `setup` does.
pub(crate) fn engine_ready() -> bool {
    if docker(&["info"]).0 {
        static SET_UP: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        SET_UP.get_or_init(|| {
            let out = Ohrun::new().args(["setup", "docker", "--build"]).timeout(DOCKER_TIMEOUT).output();
            assert_eq!(out.code, 0, "`ohrun setup docker` failed:\n{}", out.stderr);
        });
        return true;
    }
    if std::env::var("OHRUN_TEST_SKIP_DOCKER").is_ok_and(|v| v == "1") {
        eprintln!("skipped: no Docker engine, and OHRUN_TEST_SKIP_DOCKER=1");
        return false;
    }
    panic!(
        "no Docker engine is reachable: the docker sandbox tests need one (set OHRUN_TEST_SKIP_DOCKER=1 to skip them)"
    );
}

/// Containers ohrun made for this run id.
pub(crate) fn containers_of(run_id: &str) -> Vec<String> {
    let (_, out) = docker(&[
        "ps",
        "-aq",
        "--filter",
        "label=dev.ohrun.created-by=ohrun",
        "--filter",
        &format!("label=dev.ohrun.run-id={run_id}"),
    ]);
    out.lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

fn job_text(name: &str, extra: &str) -> String {
    format!("name: {name}\nsandbox:\n  kind: docker\n{extra}llm:\n  model: m\n")
}

#[test]
fn seed_job_in_a_container() {
    if !engine_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The container's workspace is a host directory, so the test can watch FACTS.txt come and go.
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::set_permissions(&ws, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "{}setup:\n  - echo 'Hello from a Docker sandbox!' && pwd && id -u\nsteps:\n  - message: Write 3 facts into FACTS.txt.\n  - message: Delete it.\nrehearsal: {}\n",
            job_text("facts-docker", "  mounts:\n    - host: ${WS_DIR}\n      container: /workspace\n"),
            repo_root().join("jobs/rehearsals/facts.yaml").display()
        ),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, w) = (stop.clone(), ws.clone());
    let watcher = std::thread::spawn(move || {
        let mut most = 0;
        while !s.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok(t) = std::fs::read_to_string(w.join("FACTS.txt")) {
                most = most.max(t.lines().count());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        most
    });
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("WS_DIR", &ws)
        .args(["run", "--rehearse"])
        .args([&job])
        .timeout(DOCKER_TIMEOUT)
        .output();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let most = watcher.join().unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/facts-docker/facts-docker"));
    assert_eq!(report["sandbox"]["kind"], "docker");
    assert_eq!(report["sandbox"]["disposition"], "released");
    assert_eq!(report["sandbox"]["agent_server_version"], "1.58.2");
    let stdout = report["setup"][0]["stdout"].as_str().unwrap();
    assert!(
        stdout.contains("Hello from a Docker sandbox!\n/workspace\n10001"),
        "runs in the container as uid 10001: {stdout}"
    );
    assert_eq!(most, 3, "FACTS.txt had 3 lines after step 1");
    assert!(!ws.join("FACTS.txt").exists(), "FACTS.txt is gone after step 2");
    assert!(report["totals"]["cost"].as_f64().unwrap() > 0.0);
    // What each step changed, taken inside the sandbox.
    assert_eq!(report["steps"][0]["diff"]["changes"], serde_json::json!(["A FACTS.txt"]), "{}", report["steps"][0]);
    assert_eq!(report["steps"][1]["diff"]["changes"], serde_json::json!(["D FACTS.txt"]), "{}", report["steps"][1]);
    for s in report["steps"].as_array().unwrap() {
        assert_eq!(s["end_reason"], "finished");
    }
    assert!(containers_of("facts-docker").is_empty(), "the container is gone");
}

fn kept_container(cleanup: &str, script: &str, expected_code: i32) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("script.yaml"), script).unwrap();
    let name = format!("kept-{}", cleanup.replace('_', "-"));
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!(
            "{}steps:\n  - message: hi\ncleanup: {cleanup}\nrehearsal: script.yaml\n",
            job_text(&name, "  init_timeout: 120s\n")
        ),
    );
    let out =
        Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args([&job]).timeout(DOCKER_TIMEOUT).output();
    let left = containers_of(&name);
    for id in &left {
        docker(&["rm", "-f", id]);
    }
    assert_eq!(out.code, expected_code, "{}", out.stderr);
    assert_eq!(left.len(), 1, "one container is kept");
    let report = read_report(&dir.path().join(format!("ohrun-reports/{name}/{name}")));
    assert_eq!(report["sandbox"]["disposition"], "kept");
    let id = report["sandbox"]["id"].as_str().unwrap();
    assert!(left[0].starts_with(&id[..12]));
    assert!(
        out.stderr.contains(id) && out.stderr.contains(&format!("docker exec -it -w /workspace {}", &id[..12])),
        "the console says how to attach, in the working directory:\n{}",
        out.stderr
    );
}

#[test]
fn cleanup_never_keeps_the_container_and_prints_its_id() {
    if engine_ready() {
        kept_container("never", "replies: []\n", 0);
    }
}

#[test]
fn cleanup_on_success_keeps_a_failed_runs_container() {
    if engine_ready() {
        kept_container("on_success", "replies:\n  - error: {status: 400, message: no}\n", 1);
    }
}

/// Runs a one-step docker job that cannot start; returns (exit code, stderr, its report dir).
fn failing_start(name: &str, sandbox_extra: &str) -> (i32, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(dir.path(), "job.yaml", &format!("{}steps:\n  - message: hi\n", job_text(name, sandbox_extra)));
    let out =
        Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args([&job]).timeout(DOCKER_TIMEOUT).output();
    (out.code, out.stderr, dir)
}

#[test]
fn a_container_that_exits_at_start_is_exit_3_with_its_log() {
    if !engine_ready() {
        return;
    }
    let (code, stderr, dir) = failing_start("dies", "  command: [--no-such-flag]\n");
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("exited with code"), "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "the log tail shows why:\n{stderr}");
    assert!(containers_of("dies").is_empty(), "the dead container is removed");
    let report: Value = read_report(&dir.path().join("ohrun-reports/dies/dies"));
    assert_eq!(report["outcome"]["class"], "infrastructure");
    assert!(report["sandbox"]["id"].as_str().is_some_and(|id| id.len() >= 12), "the container is recorded");
}

#[test]
fn a_missing_image_the_job_names_is_an_error_with_a_hint() {
    if !engine_ready() {
        return;
    }
    let (code, stderr, _dir) = failing_start("no-image", "  image: ohrun/no-such-image:0\n");
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("ohrun/no-such-image:0 is not on this Docker engine"), "{stderr}");
    assert!(
        stderr.contains("docker pull ohrun/no-such-image:0") && stderr.contains("remove `sandbox.image`"),
        "{stderr}"
    );
}

#[test]
fn setup_docker_makes_the_default_image_and_it_holds_exactly_the_locked_packages() {
    if !engine_ready() {
        return;
    }
    let out = Ohrun::new().args(["setup", "docker", "--build"]).timeout(DOCKER_TIMEOUT).output();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains(&format!("image {IMAGE} is ready (ohrun's own, built offline)")), "{}", out.stderr);
    let (ok, labels) =
        docker(&["image", "inspect", IMAGE, "--format", "{{ index .Config.Labels \"dev.ohrun.inputs\" }}"]);
    assert!(ok && !labels.is_empty(), "the image carries the hash of its inputs");
    crate::run_local::assert_exactly_locked(&[
        "docker",
        "run",
        "--rm",
        "-i",
        "--entrypoint",
        "/opt/agent-server/bin/python",
        IMAGE,
    ]);
}

#[test]
fn sigint_while_the_container_starts_removes_it_and_records_it() {
    if !engine_ready() {
        return;
    }
    // The image must be there first, or the signal would land in the build.
    let setup = Ohrun::new().args(["setup", "docker", "--build"]).timeout(DOCKER_TIMEOUT).output();
    assert_eq!(setup.code, 0, "{}", setup.stderr);
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(dir.path(), "job.yaml", &format!("{}steps:\n  - message: hi\n", job_text("docker-sigint", "")));
    let child = Ohrun::new().current_dir(dir.path()).args(["run", "--rehearse"]).args([&job]).spawn();
    wait_until(Duration::from_secs(120), "the container exists", || !containers_of("docker-sigint").is_empty());
    signal(&child, libc::SIGINT);
    let out = wait_output(child, Duration::from_secs(60));
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(containers_of("docker-sigint").is_empty(), "the container was removed");
    let report = read_report(&dir.path().join("ohrun-reports/docker-sigint/docker-sigint"));
    assert_eq!(report["outcome"]["class"], "interrupted");
    assert!(report["sandbox"]["id"].as_str().is_some(), "the container's id is in run.json");
    assert_eq!(report["sandbox"]["disposition"], "released");
}

/// A registry that refuses connections (the discard port on loopback, closed): every pull fails at once.
const UNREACHABLE: &str = "127.0.0.1:9/openhands/agent-server:unreachable";

#[test]
fn without_a_reachable_official_image_a_batch_falls_back_to_ohruns_own_and_says_so_once() {
    if !engine_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(
        dir.path(),
        "job.yaml",
        &format!("{}matrix:\n  n: [1, 2, 3]\nsteps:\n  - message: hi\n", job_text("fallback", "")),
    );
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("OHRUN_OFFICIAL_IMAGE", UNREACHABLE)
        .args(["run", "--rehearse", "--jobs", "3"])
        .args([&job])
        .timeout(DOCKER_TIMEOUT)
        .output();
    assert_eq!(out.code, 0, "the runs succeed on the fallback image:\n{}", out.stderr);
    let said = format!("pulling the official image {UNREACHABLE} failed");
    assert_eq!(out.stderr.matches(&said).count(), 1, "said once per batch:\n{}", out.stderr);
    assert!(out.stderr.contains(&format!("ohrun's own image instead, {IMAGE}")), "{}", out.stderr);
    let runs = read_summary(&dir.path().join("ohrun-reports/fallback"))["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 3);
    for run in runs {
        let report = read_report(&dir.path().join("ohrun-reports/fallback").join(run["id"].as_str().unwrap()));
        assert_eq!(report["sandbox"]["image"]["name"], IMAGE, "{}", report["sandbox"]);
        assert!(report["sandbox"]["image"]["why"].as_str().unwrap().contains(&said), "{}", report["sandbox"]);
    }
}

#[test]
fn an_official_image_already_on_the_engine_is_used_without_a_pull() {
    if !engine_ready() {
        return;
    }
    // ohrun's image under an official-looking name whose registry cannot be reached: a pull would fail,
    // so a success here is a run that used the local image as it is.
    let tagged = "127.0.0.1:9/openhands/agent-server:tagged";
    assert!(docker(&["tag", IMAGE, tagged]).0);
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(dir.path(), "job.yaml", &format!("{}steps:\n  - message: hi\n", job_text("tagged", "")));
    let out = Ohrun::new()
        .current_dir(dir.path())
        .env("OHRUN_OFFICIAL_IMAGE", tagged)
        .args(["run", "--rehearse"])
        .args([&job])
        .timeout(DOCKER_TIMEOUT)
        .output();
    docker(&["rmi", tagged]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("pull"), "nothing pulled, no fallback:\n{}", out.stderr);
    assert!(out.stderr.contains(&format!("started from {tagged}")), "{}", out.stderr);
    let report = read_report(&dir.path().join("ohrun-reports/tagged/tagged"));
    assert_eq!(report["sandbox"]["image"]["name"], tagged);
    assert_eq!(report["sandbox"]["image"]["why"], "the official image, already on this Docker engine");
}

#[test]
fn setup_docker_without_a_registry_builds_ohruns_own_and_says_why() {
    if !engine_ready() {
        return;
    }
    let out = Ohrun::new()
        .env("OHRUN_OFFICIAL_IMAGE", UNREACHABLE)
        .args(["setup", "docker"])
        .timeout(DOCKER_TIMEOUT)
        .output();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let said = format!("pulling the official image {UNREACHABLE} failed");
    assert_eq!(out.stderr.matches(&said).count(), 2, "the fallback line, and the ready line's reason:\n{}", out.stderr);
    assert!(out.stderr.contains(&format!("image {IMAGE} is ready (")), "{}", out.stderr);
}
