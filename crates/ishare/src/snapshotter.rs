//! `ishare snapshotter`: containerd's proxy snapshotter (the logic is
//! `ishare_snapshotter`'s). The domain id comes from `ISHARE_DOMAIN_ID` or a root-only
//! file (`--domain-id-file`), never from the command line, which every user can read.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ishare_share::{DEFAULT_STORE, DomainId, domain_from_env, read_domain_id_file};
use ishare_snapshotter::{Config, DEFAULT_ADDRESS, DEFAULT_ROOT, Snapshotter};

use crate::mount::SocketArg;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the snapshotter keeps its metadata, layer images and mounts.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// The unix socket containerd's `[proxy_plugins.ishare]` names.
    #[arg(long, value_name = "SOCKET", default_value = DEFAULT_ADDRESS)]
    address: PathBuf,
    /// The node daemon's control socket (layers are mounted through it).
    #[command(flatten)]
    socket: SocketArg,
    /// The object store layers share files through.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STORE)]
    store: PathBuf,
    /// A root-only file (mode 0600 or 0400) holding the sharing domain id; used when
    /// ISHARE_DOMAIN_ID is not set.
    #[arg(long, value_name = "PATH")]
    domain_id_file: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    ishare_share::init_logging();
    let domain = match (domain_from_env(), &a.domain_id_file) {
        (Some(id), _) if !id.is_empty() => DomainId::new(id),
        (_, Some(f)) => read_domain_id_file(f)?,
        _ => bail!(
            "no sharing domain: set {} or give --domain-id-file PATH",
            ishare_share::DOMAIN_ID_ENV
        ),
    };
    let exe = std::env::current_exe().context("cannot find the ishare executable")?;
    let cfg = Config {
        root: a.root.clone(),
        daemon_socket: a.socket.socket,
        store: a.store,
        domain,
        daemon_exe: Some(exe),
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let root = cfg.root.clone();
        // Opening cleans up and remounts layers: blocking work.
        let snap = tokio::task::spawn_blocking(move || Snapshotter::open(cfg))
            .await?
            .with_context(|| format!("opening the snapshotter at {}", root.display()))?;
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            eprintln!("ishare snapshotter: stopping (layer mounts stay with the node daemon)");
        };
        ishare_snapshotter::serve(std::sync::Arc::new(snap), &a.address, shutdown).await?;
        Ok(())
    })
}
