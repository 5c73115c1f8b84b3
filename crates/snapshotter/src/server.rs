//! Serving the snapshots API on a unix socket (mode 0600: containerd runs as root),
//! until `shutdown` resolves. A stale socket file (nobody listening) is replaced; a
//! live one is refused, naming it.

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::proto::services::snapshots::v1::snapshots_server::SnapshotsServer;
use crate::service::Service;
use crate::snapshotter::Snapshotter;

/// Serves `snap` on `socket` until `shutdown`.
pub async fn serve(
    snap: Arc<Snapshotter>,
    socket: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(dir)
            .map_err(|e| Error::io(dir, e))?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(Error::Config(format!(
                "{}: another snapshotter already listens there",
                socket.display()
            )));
        }
        std::fs::remove_file(socket).map_err(|e| Error::io(socket, e))?;
    }
    let listener = tokio::net::UnixListener::bind(socket).map_err(|e| Error::io(socket, e))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(socket, e))?;
    log::info!("serving containerd's snapshots API on {}", socket.display());
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let r = tonic::transport::Server::builder()
        .add_service(SnapshotsServer::new(Service(snap)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    let _ = std::fs::remove_file(socket);
    r.map_err(|e| Error::Serve {
        path: socket.to_path_buf(),
        msg: e.to_string(),
    })
}
