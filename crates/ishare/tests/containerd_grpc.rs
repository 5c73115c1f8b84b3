//! `ishare snapshotter`'s gRPC API called directly with a tonic client, as containerd's
//! proxy plugin calls it: containerd's error codes (NotFound, AlreadyExists,
//! FailedPrecondition, InvalidArgument, ResourceExhausted for a full disk during Commit,
//! which leaves nothing behind), the mounts of each kind of snapshot, labels, Usage,
//! List filters, Cleanup of what a crash left (at start), and layers mounted again at
//! start after the node daemon went away.
//!
//! Needs root and /dev/fuse (layers are mounted by a private node daemon).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use ishare_snapshotter::proto::services::snapshots::v1 as pb;
use ishare_snapshotter::proto::types::Mount;
use ishare_testkit::containerd::{SnapshotterProc, unmount_under};
use ishare_testkit::ishare_bin;
use ishare_testkit::mounts::NodeDaemon;
use ishare_testkit::tools::require_root;
use pb::snapshots_client::SnapshotsClient;
use tonic::Code;
use tonic::transport::Channel;

struct UnmountGuard(PathBuf);

impl Drop for UnmountGuard {
    fn drop(&mut self) {
        unmount_under(&self.0);
    }
}

async fn client(socket: &Path) -> SnapshotsClient<Channel> {
    let socket = socket.to_path_buf();
    let channel = tonic::transport::Endpoint::try_from("http://[::1]:1")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect to the snapshotter");
    SnapshotsClient::new(channel)
}

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(s) => {
            assert!(!s.message().is_empty());
            s.code()
        }
    }
}

fn prepare(key: &str, parent: &str) -> pb::PrepareSnapshotRequest {
    pb::PrepareSnapshotRequest {
        key: key.into(),
        parent: parent.into(),
        ..Default::default()
    }
}

fn view(key: &str, parent: &str) -> pb::ViewSnapshotRequest {
    pb::ViewSnapshotRequest {
        key: key.into(),
        parent: parent.into(),
        ..Default::default()
    }
}

fn commit(name: &str, key: &str) -> pb::CommitSnapshotRequest {
    pb::CommitSnapshotRequest {
        name: name.into(),
        key: key.into(),
        ..Default::default()
    }
}

fn key(k: &str) -> pb::RemoveSnapshotRequest {
    pb::RemoveSnapshotRequest {
        key: k.into(),
        ..Default::default()
    }
}

fn stat(k: &str) -> pb::StatSnapshotRequest {
    pb::StatSnapshotRequest {
        key: k.into(),
        ..Default::default()
    }
}

fn one(m: Vec<Mount>) -> Mount {
    assert_eq!(m.len(), 1, "{m:?}");
    m.into_iter().next().unwrap()
}

async fn list(c: &mut SnapshotsClient<Channel>, filters: &[&str]) -> Vec<String> {
    let mut s = c
        .list(pb::ListSnapshotsRequest {
            filters: filters.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut names = Vec::new();
    while let Some(batch) = s.message().await.unwrap() {
        names.extend(batch.info.into_iter().map(|i| i.name));
    }
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_api_keeps_containerds_rules() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let daemon = NodeDaemon::start(&ishare_bin!());
    let root = dir.path().join("snap");
    let socket = dir.path().join("snap.sock");
    let store = dir.path().join("store");
    let _guard = UnmountGuard(dir.path().to_path_buf());
    let mut snap = SnapshotterProc::start(
        &ishare_bin!(),
        &root,
        &socket,
        &daemon.socket(),
        &store,
        "grpc-test",
    );
    let mut c = client(&socket).await;

    // A base layer: a bind of an empty directory, applied into, committed.
    let m = one(c
        .prepare(prepare("a", ""))
        .await
        .unwrap()
        .into_inner()
        .mounts);
    assert_eq!(
        (m.r#type.as_str(), &m.options[..]),
        ("bind", &["rw".to_string(), "rbind".into()][..])
    );
    let fs_dir = PathBuf::from(&m.source);
    assert_eq!(
        fs::read_dir(&fs_dir).unwrap().count(),
        0,
        "a fresh snapshot is empty"
    );
    fs::write(fs_dir.join("hello"), b"hello\n").unwrap();
    assert_eq!(code(c.prepare(prepare("a", "")).await), Code::AlreadyExists);
    assert_eq!(code(c.view(view("v", "nope")).await), Code::NotFound);
    assert_eq!(
        code(c.prepare(prepare("p", "a")).await),
        Code::InvalidArgument,
        "an active parent"
    );
    assert_eq!(
        code(
            c.mounts(pb::MountsRequest {
                key: "nope".into(),
                ..Default::default()
            })
            .await
        ),
        Code::NotFound
    );
    assert_eq!(code(c.stat(stat("nope")).await), Code::NotFound);
    assert_eq!(code(c.commit(commit("L1", "nope")).await), Code::NotFound);
    assert_eq!(code(c.remove(key("nope")).await), Code::NotFound);
    c.commit(commit("L1", "a")).await.unwrap();
    assert!(
        !fs_dir.exists(),
        "the applied directory is removed after Commit"
    );
    assert_eq!(code(c.commit(commit("L1", "a")).await), Code::NotFound);
    let info = c.stat(stat("L1")).await.unwrap().into_inner().info.unwrap();
    assert_eq!(info.kind, pb::Kind::Committed as i32);
    let usage = c
        .usage(pb::UsageRequest {
            key: "L1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(usage.size >= 4096 && usage.inodes >= 2, "{usage:?}");

    // A view of one layer: a read-only bind of the layer's mount.
    let m = one(c.view(view("v1", "L1")).await.unwrap().into_inner().mounts);
    assert_eq!(m.r#type, "bind");
    assert!(m.options.contains(&"ro".to_string()), "{m:?}");
    assert_eq!(
        fs::read(Path::new(&m.source).join("hello")).unwrap(),
        b"hello\n"
    );
    assert_eq!(code(c.view(view("v1", "L1")).await), Code::AlreadyExists);
    assert_eq!(
        code(c.commit(commit("L2", "v1")).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(
            c.mounts(pb::MountsRequest {
                key: "L1".into(),
                ..Default::default()
            })
            .await
        ),
        Code::FailedPrecondition
    );

    // An active snapshot on the layer: an overlay.
    let mut labels = HashMap::new();
    labels.insert("x".to_string(), "1".to_string());
    let m = one(c
        .prepare(pb::PrepareSnapshotRequest {
            labels,
            ..prepare("b", "L1")
        })
        .await
        .unwrap()
        .into_inner()
        .mounts);
    assert_eq!(m.r#type, "overlay");
    assert!(
        m.options.iter().any(|o| o.starts_with("upperdir=")),
        "{m:?}"
    );
    let lower = m
        .options
        .iter()
        .find_map(|o| o.strip_prefix("lowerdir="))
        .unwrap();
    assert_eq!(
        fs::read(Path::new(lower).join("hello")).unwrap(),
        b"hello\n"
    );
    let again = one(c
        .mounts(pb::MountsRequest {
            key: "b".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .mounts);
    assert_eq!(again, m, "Mounts repeats Prepare's answer");

    // Labels: set one, delete one, refuse other fields.
    let mut labels = HashMap::new();
    labels.insert("y".to_string(), "2".to_string());
    let upd = |labels: HashMap<String, String>, paths: &[&str]| pb::UpdateSnapshotRequest {
        info: Some(pb::Info {
            name: "b".into(),
            labels,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
        ..Default::default()
    };
    let i = c
        .update(upd(labels, &["labels.y", "labels.x"]))
        .await
        .unwrap()
        .into_inner();
    let got = i.info.unwrap().labels;
    assert_eq!(got.get("y").map(String::as_str), Some("2"));
    assert!(
        !got.contains_key("x"),
        "labels.x absent from the request deletes it: {got:?}"
    );
    assert_eq!(
        code(c.update(upd(HashMap::new(), &["parent"])).await),
        Code::InvalidArgument
    );

    // List, with filters.
    assert_eq!(list(&mut c, &[]).await, ["L1", "b", "v1"]);
    assert_eq!(list(&mut c, &["kind==committed"]).await, ["L1"]);
    assert_eq!(list(&mut c, &["parent==L1,labels.y==2"]).await, ["b"]);
    assert_eq!(
        list(&mut c, &["kind==view", "kind==committed"]).await,
        ["L1", "v1"]
    );
    assert_eq!(
        code(
            c.list(pb::ListSnapshotsRequest {
                filters: vec!["size==1".into()],
                ..Default::default()
            })
            .await
        ),
        Code::InvalidArgument
    );

    // Remove: not while children exist; then the layer's image and mount go.
    assert_eq!(code(c.remove(key("L1")).await), Code::FailedPrecondition);

    // A crash's leftovers (a snapshot directory and a layer no record names) are gone
    // after a restart; the records, the layer mount and the overlay stay.
    fs::create_dir_all(root.join("snapshots/999/fs")).unwrap();
    fs::create_dir_all(root.join("layers/998")).unwrap();
    fs::write(root.join("layers/998/layer.erofs.tmp"), b"half").unwrap();
    // And the node daemon stops meanwhile, its mounts with it (`ishare daemon --stop`;
    // a signal would keep them for the next daemon): the restarted snapshotter starts
    // one (`ishare daemon --launched` on the same socket) and mounts every committed
    // layer again.
    drop(c);
    let old = daemon.pid().expect("the node daemon's pid");
    let stopped = std::process::Command::new(ishare_bin!())
        .args(["daemon", "--stop", "--socket"])
        .arg(daemon.socket())
        .output()
        .unwrap();
    assert!(
        stopped.status.success(),
        "ishare daemon --stop: {stopped:?}"
    );
    let t = std::time::Instant::now();
    while NodeDaemon::alive(old) {
        assert!(t.elapsed().as_secs() < 30, "the node daemon does not stop");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        fs::read(Path::new(lower).join("hello")).is_err(),
        "the layer mount is gone"
    );
    snap.restart();
    let mut c = client(&socket).await;
    // Mounts of a snapshot on the layer makes sure the layer is mounted too (should the
    // remount at start have failed, it is retried here).
    c.mounts(pb::MountsRequest {
        key: "b".into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("Mounts after the restart: {e:?}\n{}", snap.log_text()));
    assert_ne!(
        daemon.pid(),
        Some(old),
        "a new node daemon serves the layers:\n{}",
        snap.log_text()
    );
    assert!(!root.join("snapshots/999").exists() && !root.join("layers/998").exists());
    assert_eq!(list(&mut c, &[]).await, ["L1", "b", "v1"]);
    assert_eq!(
        fs::read(Path::new(lower).join("hello")).unwrap(),
        b"hello\n"
    );

    c.remove(key("b")).await.unwrap();
    c.remove(key("v1")).await.unwrap();
    c.remove(key("L1")).await.unwrap();
    assert_eq!(code(c.stat(stat("L1")).await), Code::NotFound);
    for sub in ["snapshots", "layers", "l"] {
        assert_eq!(
            fs::read_dir(root.join(sub)).unwrap().count(),
            0,
            "{sub}/ is empty"
        );
    }
    let (_, mounts) = ishare_share::list_mounts(&daemon.socket())
        .unwrap()
        .unwrap();
    assert!(mounts.is_empty(), "{mounts:?}");
    c.cleanup(pb::CleanupRequest::default()).await.unwrap();

    // A full disk during Commit: ResourceExhausted naming the snapshot, nothing
    // half-written left, the snapshot still active; Commit works once there is room.
    let m = one(c
        .prepare(prepare("full", ""))
        .await
        .unwrap()
        .into_inner()
        .mounts);
    fs::write(Path::new(&m.source).join("data"), vec![7u8; 1 << 20]).unwrap();
    let layers = root.join("layers");
    rustix::mount::mount(
        "tmpfs",
        &layers,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        c"size=64k",
    )
    .unwrap();
    let r = c.commit(commit("F", "full")).await;
    let listed: Vec<_> = fs::read_dir(&layers)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    rustix::mount::unmount(&layers, rustix::mount::UnmountFlags::empty()).unwrap();
    let status = r.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("\"full\""), "{status:?}");
    assert!(listed.is_empty(), "a failed Commit left {listed:?}");
    assert_eq!(fs::read_dir(root.join("l")).unwrap().count(), 0);
    let info = c
        .stat(stat("full"))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(info.kind, pb::Kind::Active as i32);
    assert_eq!(code(c.stat(stat("F")).await), Code::NotFound);
    c.commit(commit("F", "full")).await.unwrap();
    c.remove(key("F")).await.unwrap();

    // A corrupt layer image from containerd's EROFS differ (written next to the
    // `.erofslayer` marker): InvalidArgument naming the snapshot, nothing kept.
    let m = one(c
        .prepare(prepare("bad", ""))
        .await
        .unwrap()
        .into_inner()
        .mounts);
    let snapdir = Path::new(&m.source).parent().unwrap().to_path_buf();
    assert!(
        snapdir.join(".erofslayer").exists(),
        "the EROFS differ's marker"
    );
    fs::write(snapdir.join("layer.erofs"), vec![0x5a; 8192]).unwrap();
    let status = c.commit(commit("B", "bad")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("\"bad\""), "{status:?}");
    assert_eq!(fs::read_dir(root.join("layers")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(root.join("l")).unwrap().count(), 0);
    c.remove(key("bad")).await.unwrap();
    assert!(!snapdir.exists());
}

/// The domain id comes from ISHARE_DOMAIN_ID or a root-only file, nothing else: no id
/// is an error naming both ways, a file others may read is refused (naming it), a
/// 0600 file is accepted.
#[test]
fn the_domain_id_comes_from_the_environment_or_a_root_only_file() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let daemon = NodeDaemon::start(&ishare_bin!());
    let run = |file: Option<&Path>| {
        let mut cmd = std::process::Command::new(ishare_bin!());
        cmd.args(["snapshotter", "--root"])
            .arg(dir.path().join("root"))
            .arg("--address")
            .arg(dir.path().join("snap.sock"))
            .arg("--socket")
            .arg(daemon.socket())
            .arg("--store")
            .arg(dir.path().join("store"))
            .env_remove("ISHARE_DOMAIN_ID");
        if let Some(f) = file {
            cmd.arg("--domain-id-file").arg(f);
        }
        cmd
    };
    let out = ishare_testkit::tools::run_unchecked(&mut run(None));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("ISHARE_DOMAIN_ID")
            && err.contains("--domain-id-file"),
        "{err}"
    );

    let file = dir.path().join("domain-id");
    fs::write(&file, b"secret-domain").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let out = ishare_testkit::tools::run_unchecked(&mut run(Some(&file)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&*file.to_string_lossy()),
        "{err}"
    );

    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let mut child = run(Some(&file))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while std::os::unix::net::UnixStream::connect(dir.path().join("snap.sock")).is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the snapshotter refused a 0600 domain id file"
        );
        assert!(
            t.elapsed().as_secs() < 30,
            "the snapshotter does not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(
        !dir.path().join("snap.sock").exists(),
        "the socket is removed at exit"
    );
}
