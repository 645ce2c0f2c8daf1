//! Which image `kind: docker` runs when the job names none: the official
//! `ghcr.io/openhands/agent-server:<version>-python` (what the Python SDK's DockerWorkspace runs), used as
//! it is when the engine already has it and pulled when it has not; only where the pull fails does ohrun
//! build and run its own image (`image.rs`), and it says so once. The choice is made once per process (a
//! batch is one process), so a batch pulls at most once and prints the fallback line at most once.

use super::Error;
use super::image::{self, HostPackages};
use super::install::AGENT_SERVER_VERSION;
use crate::cancel::Cancel;
use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;

/// A test hook: the official reference, e.g. an unreachable registry to exercise the fallback.
const OVERRIDE_VAR: &str = "OHRUN_OFFICIAL_IMAGE";

/// The official image of the pinned agent-server.
pub fn reference() -> String {
    std::env::var(OVERRIDE_VAR)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("ghcr.io/openhands/agent-server:{AGENT_SERVER_VERSION}-python"))
}

/// The image a sandbox runs and why it is that one (run.json's `sandbox.image`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chosen {
    pub image: String,
    pub why: String,
}

/// The default's choice, made by the first run that needs it; later runs reuse it (no second pull, no
/// second fallback line). An error (the fallback build failed, an interruption) is not kept.
static DEFAULT_CHOICE: tokio::sync::OnceCell<Chosen> = tokio::sync::OnceCell::const_new();

/// The image for a job whose `sandbox.image` is `requested`, made ready on the engine: a named image
/// must be there; the default (`image::DEFAULT_IMAGE`, what a job without `image:` gets) is the official
/// image, or ohrun's own where the official one cannot be pulled.
pub async fn choose(
    docker: &Docker,
    requested: Option<&str>,
    host: HostPackages,
    progress: &(dyn Fn(&str) + Sync),
    cancel: &mut Cancel,
) -> Result<Chosen, Error> {
    if let Some(named) = requested {
        image::ensure(docker, named, host, progress, cancel).await?;
        return Ok(Chosen { image: named.to_string(), why: "named in sandbox.image".into() });
    }
    let chosen = DEFAULT_CHOICE.get_or_try_init(|| pick(docker, progress, cancel.clone())).await?.clone();
    if chosen.image == image::DEFAULT_IMAGE {
        // Checked on every run (cheap when built): another process may have removed or rebuilt it.
        image::ensure(docker, image::DEFAULT_IMAGE, host, progress, cancel).await?;
    }
    Ok(chosen)
}

/// The official image if the engine has it or can pull it, else ohrun's own (named, not yet built).
async fn pick(docker: &Docker, progress: &(dyn Fn(&str) + Sync), mut cancel: Cancel) -> Result<Chosen, Error> {
    let official = reference();
    match docker.inspect_image(&official).await {
        Ok(_) => {
            return Ok(Chosen { image: official, why: "the official image, already on this Docker engine".into() });
        }
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
        Err(e) => return Err(Error::failed(format!("inspecting the image {official} failed: {e}"))),
    }
    let started = std::time::Instant::now();
    match pull(docker, &official, progress, &mut cancel).await {
        Ok(()) => {
            progress(&format!("pulled {official} in {:.0}s", started.elapsed().as_secs_f64()));
            Ok(Chosen { image: official, why: "the official image, pulled".into() })
        }
        Err(e) if e.kind.is_interrupted() => Err(e),
        Err(e) => {
            let why =
                format!("pulling the official image {official} failed ({}): ohrun's own image instead", e.message);
            progress(&format!("{why}, {} (built offline)", image::DEFAULT_IMAGE));
            Ok(Chosen { image: image::DEFAULT_IMAGE.to_string(), why })
        }
    }
}

/// `docker pull`; says it is pulling only once the registry has answered (a failing pull prints nothing).
async fn pull(
    docker: &Docker,
    reference: &str,
    progress: &(dyn Fn(&str) + Sync),
    cancel: &mut Cancel,
) -> Result<(), Error> {
    let (repo, tag) = split(reference);
    let options = CreateImageOptionsBuilder::default().from_image(repo).tag(tag).build();
    let mut stream = docker.create_image(Some(options), None, None);
    let mut said = false;
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            _ = cancel.wait() => return Err(Error::interrupted()),
        };
        match item {
            None => return Ok(()),
            Some(Err(e)) => return Err(Error::failed(pull_error(e))),
            Some(Ok(info)) => {
                if let Some(e) = info.error_detail.and_then(|d| d.message) {
                    return Err(Error::failed(e));
                }
                if !said {
                    said = true;
                    progress(&format!("pulling {reference} (once; it is large)"));
                }
            }
        }
    }
}

/// The engine's own message, without bollard's wrapping.
fn pull_error(e: bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message,
        e => e.to_string(),
    }
}

/// `registry:port/repo:tag` into repository and tag; a colon before the last slash is a port.
fn split(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_splits_at_the_tag_not_at_a_registry_port() {
        assert_eq!(
            split("ghcr.io/openhands/agent-server:1.58.2-python"),
            ("ghcr.io/openhands/agent-server", "1.58.2-python")
        );
        assert_eq!(split("127.0.0.1:9/openhands/agent-server:x"), ("127.0.0.1:9/openhands/agent-server", "x"));
        assert_eq!(split("127.0.0.1:9/openhands/agent-server"), ("127.0.0.1:9/openhands/agent-server", "latest"));
    }
}
