//! ohrun's own agent-server image for `kind: docker`, used where the official image cannot be pulled
//! (`official.rs`), built offline on this machine when it is missing (on first such use, or by `ohrun
//! setup docker [--build]`): a Debian root filesystem (debootstrap), imported into the engine,
//! with a venv holding exactly the packages of `agent-server.lock` (installed with uv when ohrun has it,
//! else pip), tmux and git; it runs like the official image (tini, uid 10001, WORKDIR /, /workspace,
//! `--host 0.0.0.0 --port 8000`). The build's inputs are hashed into the label `dev.ohrun.inputs`, so a
//! changed lock or recipe rebuilds it. A file lock keeps two ohrun processes from building at once.
//!
//! Containers of the default image mount a copy of its venv from a named volume (`venv_volume`), made once
//! per image from the image itself: on an engine whose storage driver is fuse-overlayfs, every file the
//! server's start reads from the image's layers goes through a FUSE daemon, and the ~4,000 modules it
//! imports made a docker start 2–5 s slower than the same start outside a container. A volume is a plain
//! directory on the engine's disk, as fast as the local venv.

use super::install::{self, AGENT_SERVER_VERSION, FileLock};
use super::{Error, ErrorKind};
use crate::cancel::Cancel;
use bollard::Docker;
use bollard::models::{ContainerConfig, ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    ListContainersOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    RemoveVolumeOptionsBuilder,
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// ohrun's own image, and the value `sandbox.image` has when the job names none (which `official::choose`
/// resolves to the official image where it can be had).
pub const DEFAULT_IMAGE: &str = "ohrun/agent-server:1.58.2-python";
const LABEL_INPUTS: &str = "dev.ohrun.inputs";
/// On the container that fills a venv volume, naming it: while such a container exists, the volume may be
/// incomplete (its ohrun may have died while filling it).
const LABEL_FILLS: &str = "dev.ohrun.fills-volume";
/// Where the image has its venv, and where containers mount the volume's copy of it.
pub const VENV: &str = "/opt/agent-server";
const SUITE: &str = "trixie";
const PACKAGES: &str = "python3,python3-venv,tmux,git,ca-certificates,tini,procps,bash,coreutils";
/// Bumped when the recipe below changes in a way the hashed inputs do not show.
const RECIPE: &str = "3";

fn mirror() -> String {
    std::env::var("DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into())
}

/// What the image is built from; any change rebuilds it.
fn inputs() -> String {
    let text = format!("{RECIPE} {AGENT_SERVER_VERSION} {SUITE} {PACKAGES} {}\n{}", mirror(), install::LOCK);
    Sha256::digest(text.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The labels of `image`, or None when the engine does not have it.
async fn labels(docker: &Docker, image: &str) -> Result<Option<std::collections::HashMap<String, String>>, Error> {
    match docker.inspect_image(image).await {
        Ok(i) => Ok(Some(i.config.and_then(|c| c.labels).unwrap_or_default())),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
        Err(e) => Err(Error::failed(format!("inspecting the image {image} failed: {e}"))),
    }
}

/// The volume holding the venv of ohrun's default image, which containers of `image` mount read-only at
/// `VENV`; None for any other image. Named by the image's inputs: a rebuilt image gets a new one.
pub fn venv_volume(image: &str) -> Option<String> {
    (image == DEFAULT_IMAGE).then(|| format!("ohrun-agent-server-venv-{}", inputs()))
}

/// Whether building the default image may install what it needs on the host (debootstrap, with apt-get):
/// only `ohrun setup docker` may, and says so; a run never changes the host.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HostPackages {
    MayInstall,
    Never,
}

/// Makes sure `image` is on the engine: the default image is built when missing or out of date, and its
/// venv volume filled when missing; any other image must be there already.
pub async fn ensure(
    docker: &Docker,
    image: &str,
    host: HostPackages,
    progress: &(dyn Fn(&str) + Sync),
    cancel: &mut Cancel,
) -> Result<(), Error> {
    let found = labels(docker, image).await?;
    let Some(volume) = venv_volume(image) else {
        return match found {
            Some(_) => Ok(()),
            None => Err(Error::failed(format!("the image {image} is not on this Docker engine")).hint(format!(
                "pull or build it (e.g. `docker pull {image}` where a registry is reachable), or remove `sandbox.image` to use the official image (or ohrun's own, built offline, where that cannot be pulled)"
            ))),
        };
    };
    let wanted = inputs();
    let built = |l: &Option<HashMap<String, String>>| l.as_ref().and_then(|l| l.get(LABEL_INPUTS)) == Some(&wanted);
    if built(&found) && volume_filled(docker, &volume).await? {
        return Ok(());
    }
    let home = install::home();
    std::fs::create_dir_all(&home).map_err(|e| Error::failed(format!("cannot create {}: {e}", home.display())))?;
    let _lock =
        FileLock::acquire(&home.join("image-build.lock"), "building the agent-server image", progress, cancel).await?;
    // Another ohrun may have done it while we waited.
    let found = labels(docker, image).await?;
    if !built(&found) {
        let why = if found.is_some() { "is out of date" } else { "is not on this Docker engine yet" };
        progress(&format!("the image {image} {why}: building it now, offline (a few minutes, once)"));
        let started = std::time::Instant::now();
        build(docker, image, &wanted, host, progress, cancel).await?;
        progress(&format!("built {image} in {:.0}s", started.elapsed().as_secs_f64()));
    }
    if !volume_filled(docker, &volume).await? {
        let started = std::time::Instant::now();
        progress(&format!("copying the image's venv into the volume {volume} (once; containers start faster from it)"));
        fill_volume(docker, image, &volume, &wanted, cancel).await?;
        progress(&format!("filled {volume} in {:.0}s", started.elapsed().as_secs_f64()));
    }
    Ok(())
}

/// Whether `volume` exists and no container is (or was, with its ohrun gone) still filling it.
async fn volume_filled(docker: &Docker, volume: &str) -> Result<bool, Error> {
    match docker.inspect_volume(volume).await {
        Ok(_) => Ok(fillers(docker, volume).await?.is_empty()),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(false),
        Err(e) => Err(Error::failed(format!("inspecting the volume {volume} failed: {e}"))),
    }
}

/// The containers (running or not) that fill `volume`.
async fn fillers(docker: &Docker, volume: &str) -> Result<Vec<String>, Error> {
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_FILLS}={volume}")])]);
    let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
    let found = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| Error::failed(format!("listing the containers failed: {e}")))?;
    Ok(found.into_iter().filter_map(|c| c.id).collect())
}

/// Fills `volume` with the image's venv, from scratch: the engine copies an image's files into an empty
/// named volume when a container mounts it, keeping owners and times (the bytecode's timestamps stay
/// valid). The volume is created by creating the filling container, so it never exists without that
/// container until the copy is done; the container is removed once it has finished (the volume too when
/// the copy failed). Volumes of the default image's earlier builds are removed (unless a container still
/// uses them).
async fn fill_volume(
    docker: &Docker,
    image: &str,
    volume: &str,
    inputs: &str,
    cancel: &mut Cancel,
) -> Result<(), Error> {
    let force = || Some(RemoveContainerOptionsBuilder::default().force(true).build());
    for id in fillers(docker, volume).await? {
        let _ = docker.remove_container(&id, force()).await;
    }
    let _ = docker.remove_volume(volume, Some(RemoveVolumeOptionsBuilder::default().force(true).build())).await;
    let labels = HashMap::from([
        ("dev.ohrun.created-by".to_string(), "ohrun".to_string()),
        (LABEL_INPUTS.to_string(), inputs.to_string()),
    ]);
    let mount = Mount {
        typ: Some(MountType::VOLUME),
        source: Some(volume.to_string()),
        target: Some(VENV.to_string()),
        volume_options: Some(MountVolumeOptions { labels: Some(labels), ..Default::default() }),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec!["/usr/bin/true".into()]),
        cmd: Some(vec![]),
        labels: Some(HashMap::from([(LABEL_FILLS.to_string(), volume.to_string())])),
        host_config: Some(HostConfig {
            mounts: Some(vec![mount]),
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let name = format!("ohrun-venv-fill-{}", std::process::id());
    let filler = docker
        .create_container(Some(CreateContainerOptionsBuilder::default().name(&name).build()), body)
        .await
        .map_err(|e| Error::failed(format!("creating the container that fills {volume} failed: {e}")))?;
    let code = match docker.start_container(&filler.id, None).await {
        Ok(()) => wait_exit(docker, &filler.id, cancel).await,
        Err(e) => Err(Error::failed(format!("filling the volume {volume} failed: {e}"))
            .hint("check the free space of the Docker engine's disk")),
    };
    let _ = docker.remove_container(&filler.id, force()).await;
    let failed = match code {
        Ok(0) => None,
        Ok(code) => Some(Error::failed(format!("filling the volume {volume} failed (exit {code})"))),
        Err(e) => Some(e),
    };
    if let Some(e) = failed {
        let _ = docker.remove_volume(volume, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
        return Err(e);
    }
    let filters = HashMap::from([("label".to_string(), vec!["dev.ohrun.created-by=ohrun".to_string()])]);
    if let Ok(list) = docker.list_volumes(Some(ListVolumesOptionsBuilder::default().filters(&filters).build())).await {
        for old in list.volumes.unwrap_or_default() {
            if old.name != volume && old.name.starts_with("ohrun-agent-server-venv-") {
                // Fails (and stays) while a container uses it.
                let _ = docker.remove_volume(&old.name, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
            }
        }
    }
    Ok(())
}

/// Waits for container `id` to exit and returns its exit code.
async fn wait_exit(docker: &Docker, id: &str, cancel: &mut Cancel) -> Result<i64, Error> {
    let mut wait = docker.wait_container(id, None::<bollard::query_parameters::WaitContainerOptions>);
    tokio::select! {
        r = wait.next() => match r {
            Some(Ok(w)) => Ok(w.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(Error::failed(format!("waiting for the container failed: {e}"))),
            None => Ok(-1),
        },
        _ = cancel.wait() => Err(Error::interrupted()),
    }
}

async fn build(
    docker: &Docker,
    tag: &str,
    inputs: &str,
    host: HostPackages,
    progress: &(dyn Fn(&str) + Sync),
    cancel: &mut Cancel,
) -> Result<(), Error> {
    let work = install::home().join("image-build");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| Error::failed(format!("cannot create {}: {e}", work.display())))?;
    let rootfs = work.join("rootfs");
    debootstrap(&rootfs, host, progress, cancel).await?;
    let base = format!("ohrun/agent-server-base:{inputs}");
    progress(&format!("importing the root filesystem as {base}"));
    import(docker, &rootfs, &base).await?;
    let _ = std::fs::remove_dir_all(&rootfs);
    let result = install_server(docker, &base, &work, tag, inputs, progress, cancel).await;
    if let Err(e) =
        docker.remove_image(&base, Some(RemoveImageOptionsBuilder::default().force(true).build()), None).await
    {
        tracing::warn!("removing the build's base image {base} failed (remove it by hand): {e}");
    }
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Whether debootstrap is to be installed first (with apt-get, as root): only when it is missing and the
/// caller may change the host (`ohrun setup docker`); a run that needs it says how to get it instead.
fn install_debootstrap(host: HostPackages, found: bool, can_apt: bool) -> Result<bool, Error> {
    let missing = || Error::failed("building the agent-server image needs debootstrap, which is not installed");
    match (found, host, can_apt) {
        (true, _, _) => Ok(false),
        (false, HostPackages::Never, _) => Err(missing().hint(
            "run `sudo ohrun setup docker --build` once (it installs debootstrap with apt-get and builds the image), or install debootstrap yourself, or name an image you have in `sandbox.image`",
        )),
        (false, HostPackages::MayInstall, true) => Ok(true),
        (false, HostPackages::MayInstall, false) => Err(missing().hint(
            "install it (`sudo apt-get install debootstrap`) and run `sudo ohrun setup docker --build`, or name an image you have in `sandbox.image`",
        )),
    }
}

/// A minimal Debian with Python, tmux and git, in `rootfs`. debootstrap's downloads are cached in ohrun's
/// cache, so a rebuild does not fetch them again.
async fn debootstrap(
    rootfs: &Path,
    host: HostPackages,
    progress: &(dyn Fn(&str) + Sync),
    cancel: &mut Cancel,
) -> Result<(), Error> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let can_apt = which("apt-get").is_some() && unsafe { libc::geteuid() } == 0;
    if install_debootstrap(host, which("debootstrap").is_some(), can_apt)? {
        progress(
            "installing the host package debootstrap with apt-get (only `ohrun setup docker` installs host packages)",
        );
        install::run(tokio::process::Command::new("apt-get").args(["update", "-qq"]), progress, cancel).await?;
        install::run(
            tokio::process::Command::new("apt-get").args(["install", "-y", "-qq", "debootstrap"]),
            progress,
            cancel,
        )
        .await?;
    }
    let cache = install::home().join("debootstrap-cache");
    std::fs::create_dir_all(&cache).map_err(|e| Error::failed(format!("cannot create {}: {e}", cache.display())))?;
    progress(&format!("debootstrap {SUITE} from {} (Python 3, tmux, git)", mirror()));
    install::run(
        tokio::process::Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={PACKAGES}"))
            .arg(format!("--cache-dir={}", cache.display()))
            .arg(SUITE)
            .arg(rootfs)
            .arg(mirror()),
        progress,
        cancel,
    )
    .await
    .map_err(|e| {
        if e.kind.is_interrupted() {
            e
        } else {
            e.hint("debootstrap needs root and a reachable Debian mirror (DEBIAN_MIRROR)")
        }
    })?;
    for dir in ["var/lib/apt/lists", "usr/share/doc", "usr/share/man", "var/cache/apt/archives"] {
        let _ = std::fs::remove_dir_all(rootfs.join(dir));
    }
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// `docker import`: the root filesystem, streamed as a tar archive, becomes image `tag`.
async fn import(docker: &Docker, rootfs: &Path, tag: &str) -> Result<(), Error> {
    let mut tar = tokio::process::Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .args(["--numeric-owner", "-c", "."])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::failed(format!("cannot run tar: {e}")))?;
    let stdout = tar.stdout.take().expect("piped");
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(stdout));
    let (repo, version) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
    let options = CreateImageOptionsBuilder::default().from_src("-").repo(repo).tag(version).build();
    let mut stream = docker.create_image(Some(options), Some(body), None);
    while let Some(item) = stream.next().await {
        item.map_err(|e| Error::failed(format!("importing the root filesystem failed: {e}")))?;
    }
    let status = tar.wait().await.map_err(|e| Error::failed(format!("tar failed: {e}")))?;
    if !status.success() {
        return Err(Error::failed(format!("tar of the root filesystem failed ({status})")));
    }
    Ok(())
}

/// The script run once in the builder container: the venv from the lock, the user, the workspace. The
/// build's inputs come in one read-only directory; anything set here stays out of the image's config.
/// Unlike the local venv, every module gets its bytecode: the server (uid 10001, venv mounted read-only)
/// can never write any, and the build happens once.
const INSTALL_SCRIPT: &str = r#"
in=/tmp/ohrun-build
if [ -s $in/host-ca.crt ]; then export PIP_CERT=$in/host-ca.crt SSL_CERT_FILE=$in/host-ca.crt; fi
python3 -m venv /opt/agent-server
if [ -x $in/uv ]; then
  $in/uv pip install --no-cache --no-deps --compile-bytecode -p /opt/agent-server -r $in/agent-server.lock
else
  /opt/agent-server/bin/pip install --no-cache-dir --no-deps --disable-pip-version-check -r $in/agent-server.lock
fi
groupadd -g 10001 openhands
useradd -u 10001 -g 10001 -m -s /bin/bash openhands
mkdir -p /workspace/project
chown -R 10001:10001 /workspace
/opt/agent-server/bin/python -c 'import openhands.agent_server'
"#;

/// Runs the install in a container from `base` on the host's network (it needs PyPI, through the host's CA
/// bundle where a network intercepts TLS) and commits the result as `tag`.
#[allow(clippy::too_many_arguments)]
async fn install_server(
    docker: &Docker,
    base: &str,
    work: &Path,
    tag: &str,
    inputs: &str,
    progress: &(dyn Fn(&str) + Sync),
    cancel: &mut Cancel,
) -> Result<(), Error> {
    let put = |name: &str, from: Result<(), std::io::Error>| {
        from.map_err(|e| Error::failed(format!("cannot prepare {name} for the image: {e}")))
    };
    match install::uv_for_image(progress, cancel).await {
        Some(uv) => {
            put("the lock", std::fs::write(work.join("agent-server.lock"), install::LOCK))?;
            put("uv", std::fs::copy(uv, work.join("uv")).map(|_| ()))?;
        }
        None => {
            progress("installing with pip in the image (uv is not available here)");
            put("the lock", std::fs::write(work.join("agent-server.lock"), install::lock_for_pip(false)))?;
        }
    }
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if ca.is_file() {
        put("the CA bundle", std::fs::copy(ca, work.join("host-ca.crt")).map(|_| ()))?;
    }
    let body = ContainerCreateBody {
        image: Some(base.to_string()),
        cmd: Some(vec!["/bin/sh".into(), "-ec".into(), INSTALL_SCRIPT.into()]),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:/tmp/ohrun-build:ro", work.display())]),
            network_mode: Some("host".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let name = format!("ohrun-image-build-{}", std::process::id());
    let builder = docker
        .create_container(Some(CreateContainerOptionsBuilder::default().name(&name).build()), body)
        .await
        .map_err(|e| Error::failed(format!("creating the build container failed: {e}")))?;
    progress(&format!(
        "installing {} pinned packages in the image",
        install::LOCK.lines().filter(|l| l.contains("==")).count()
    ));
    let result = run_and_commit(docker, &builder.id, tag, inputs, cancel).await;
    let _ =
        docker.remove_container(&builder.id, Some(RemoveContainerOptionsBuilder::default().force(true).build())).await;
    result
}

async fn run_and_commit(docker: &Docker, id: &str, tag: &str, inputs: &str, cancel: &mut Cancel) -> Result<(), Error> {
    docker
        .start_container(id, None)
        .await
        .map_err(|e| Error::failed(format!("starting the build container failed: {e}")))?;
    let code = wait_exit(docker, id, cancel).await?;
    if code != 0 {
        let tail = super::docker::log_tail(docker, id, 30).await;
        return Err(Error::new(
            ErrorKind::Failed,
            format!("installing the agent-server in the image failed (exit {code})"),
        )
        .log_tail(tail)
        .hint("PyPI must be reachable from this machine"));
    }
    let (repo, version) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
    let config = ContainerConfig {
        entrypoint: Some(
            ["/usr/bin/tini", "--", "/opt/agent-server/bin/python", "-m", "openhands.agent_server"]
                .map(String::from)
                .to_vec(),
        ),
        cmd: Some(["--host", "0.0.0.0", "--port", "8000"].map(String::from).to_vec()),
        working_dir: Some("/".into()),
        user: Some("10001".into()),
        exposed_ports: Some(vec!["8000/tcp".into()]),
        env: Some(
            [
                "PATH=/opt/agent-server/bin:/usr/local/bin:/usr/bin:/bin",
                "LC_ALL=C.UTF-8",
                "HOME=/home/openhands",
                "LOG_JSON=true",
                "OH_ENABLE_VNC=false",
                "OH_ENABLE_VSCODE=false",
                "OH_ENABLE_BROWSER=false",
                "LITELLM_LOCAL_MODEL_COST_MAP=True",
                "OPENHANDS_SUPPRESS_BANNER=1",
            ]
            .map(String::from)
            .to_vec(),
        ),
        labels: Some(
            [
                (LABEL_INPUTS.to_string(), inputs.to_string()),
                ("dev.ohrun.agent-server-version".to_string(), AGENT_SERVER_VERSION.to_string()),
            ]
            .into_iter()
            .collect(),
        ),
        ..Default::default()
    };
    let options = CommitContainerOptionsBuilder::default().container(id).repo(repo).tag(version).build();
    docker
        .commit_container(options, config)
        .await
        .map_err(|e| Error::failed(format!("committing the image failed: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_setup_ever_installs_debootstrap() {
        use HostPackages::*;
        assert!(!install_debootstrap(Never, true, true).unwrap());
        assert!(!install_debootstrap(MayInstall, true, true).unwrap());
        assert!(install_debootstrap(MayInstall, false, true).unwrap());
        let run = install_debootstrap(Never, false, true).unwrap_err();
        assert!(run.hint.as_deref().unwrap_or_default().contains("ohrun setup docker"), "{run:?}");
        assert!(install_debootstrap(MayInstall, false, false).is_err());
    }
}
