//! `ohrun setup local|docker [--build]`: prepare a sandbox kind now rather than on first use. `local`
//! installs the managed agent-server venv; `docker` pulls the official agent-server image (falling back to
//! ohrun's own build, as a run would), `docker --build` builds ohrun's own. Only here may ohrun install a
//! host package (debootstrap, for the build), and it says so. All are locked, so several ohrun processes
//! never do it twice, and all can be interrupted (nothing half-done is ever used).

use crate::backend::{docker, image, install, official};
use crate::cancel::Cancel;
use crate::exit_code::ExitCode;
use crate::runner::signal::Signals;

pub fn run(what: &str, build: bool) -> i32 {
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    if build && what != "docker" {
        eprintln!("error: --build is for `ohrun setup docker` only");
        return ExitCode::USAGE;
    }
    let progress = |line: &str| eprintln!("  {}", crate::report::redact::apply(line));
    let result = runtime.block_on(async {
        let mut cancel: Cancel = Signals::install().cancel();
        let host = image::HostPackages::MayInstall;
        match what {
            "local" => install::ensure_installed(&progress, &mut cancel)
                .await
                .map(|cmd| format!("agent-server {} is ready: {}", install::AGENT_SERVER_VERSION, cmd.join(" "))),
            _ if build => {
                let engine = docker::connect().await?;
                image::ensure(&engine, image::DEFAULT_IMAGE, host, &progress, &mut cancel).await?;
                Ok(format!("image {} is ready (ohrun's own, built offline)", image::DEFAULT_IMAGE))
            }
            _ => {
                let engine = docker::connect().await?;
                let chosen = official::choose(&engine, None, host, &progress, &mut cancel).await?;
                Ok(format!("image {} is ready ({})", chosen.image, chosen.why))
            }
        }
    });
    match result {
        Ok(line) => {
            eprintln!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) if e.kind.is_interrupted() => {
            eprintln!("interrupted; nothing half-done is kept");
            ExitCode::INTERRUPTED
        }
        Err(e) => {
            eprintln!("error: {}", e.message);
            if let Some(tail) = &e.log_tail {
                eprintln!("{tail}");
            }
            if let Some(h) = &e.hint {
                eprintln!("  hint: {h}");
            }
            ExitCode::INFRA
        }
    }
}
