//! The gRPC service `containerd.services.snapshots.v1.Snapshots` over the
//! [`Snapshotter`]: each call runs on a blocking thread (the metadata store, the
//! builder and the node daemon's socket all block), is logged at debug level, and its
//! error at warn, with containerd's code.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::filter::Filters;
use crate::meta::{Kind, Stamp};
use crate::mounts::MountSpec;
use crate::proto::services::snapshots::v1 as pb;
use crate::proto::types::Mount;
use crate::snapshotter::{Info, Snapshotter};

/// Infos per List message (containerd's own proxy batches too).
const LIST_BATCH: usize = 100;

/// The service.
#[derive(Debug, Clone)]
pub struct Service(pub Arc<Snapshotter>);

impl Service {
    async fn run<T: Send + 'static>(
        &self,
        call: String,
        f: impl FnOnce(&Snapshotter) -> Result<T> + Send + 'static,
    ) -> std::result::Result<T, Status> {
        log::debug!("{call}");
        let s = self.0.clone();
        let r = tokio::task::spawn_blocking(move || f(&s))
            .await
            .map_err(|e| Status::internal(format!("{call}: {e}")))?;
        r.map_err(|e| {
            log::warn!("{call}: {e} ({:?})", e.code());
            Status::from(e)
        })
    }
}

fn labels(m: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

fn to_pb(m: Vec<MountSpec>) -> Vec<Mount> {
    m.into_iter()
        .map(|m| Mount {
            r#type: m.kind,
            source: m.source,
            target: String::new(),
            options: m.options,
        })
        .collect()
}

fn stamp(s: Stamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: s.secs,
        nanos: s.nanos,
    }
}

fn info(i: Info) -> pb::Info {
    let r = i.record;
    pb::Info {
        name: i.name,
        parent: r.parent,
        kind: match r.kind {
            Kind::View => pb::Kind::View,
            Kind::Active => pb::Kind::Active,
            Kind::Committed => pb::Kind::Committed,
        } as i32,
        created_at: Some(stamp(r.created)),
        updated_at: Some(stamp(r.updated)),
        labels: r.labels.into_iter().collect(),
    }
}

type ListStream = Pin<
    Box<
        dyn tokio_stream::Stream<Item = std::result::Result<pb::ListSnapshotsResponse, Status>>
            + Send,
    >,
>;

#[tonic::async_trait]
impl pb::snapshots_server::Snapshots for Service {
    async fn prepare(
        &self,
        req: Request<pb::PrepareSnapshotRequest>,
    ) -> std::result::Result<Response<pb::PrepareSnapshotResponse>, Status> {
        let r = req.into_inner();
        let call = format!("Prepare key={:?} parent={:?}", r.key, r.parent);
        let m = self
            .run(call, move |s| {
                s.create(Kind::Active, &r.key, &r.parent, labels(r.labels))
            })
            .await?;
        Ok(Response::new(pb::PrepareSnapshotResponse {
            mounts: to_pb(m),
        }))
    }

    async fn view(
        &self,
        req: Request<pb::ViewSnapshotRequest>,
    ) -> std::result::Result<Response<pb::ViewSnapshotResponse>, Status> {
        let r = req.into_inner();
        let call = format!("View key={:?} parent={:?}", r.key, r.parent);
        let m = self
            .run(call, move |s| {
                s.create(Kind::View, &r.key, &r.parent, labels(r.labels))
            })
            .await?;
        Ok(Response::new(pb::ViewSnapshotResponse { mounts: to_pb(m) }))
    }

    async fn mounts(
        &self,
        req: Request<pb::MountsRequest>,
    ) -> std::result::Result<Response<pb::MountsResponse>, Status> {
        let r = req.into_inner();
        let m = self
            .run(format!("Mounts key={:?}", r.key), move |s| s.mounts(&r.key))
            .await?;
        Ok(Response::new(pb::MountsResponse { mounts: to_pb(m) }))
    }

    async fn commit(
        &self,
        req: Request<pb::CommitSnapshotRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        let r = req.into_inner();
        let call = format!("Commit name={:?} key={:?}", r.name, r.key);
        self.run(call, move |s| s.commit(&r.name, &r.key, labels(r.labels)))
            .await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveSnapshotRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        let r = req.into_inner();
        self.run(format!("Remove key={:?}", r.key), move |s| s.remove(&r.key))
            .await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<pb::StatSnapshotRequest>,
    ) -> std::result::Result<Response<pb::StatSnapshotResponse>, Status> {
        let r = req.into_inner();
        let i = self
            .run(format!("Stat key={:?}", r.key), move |s| s.stat(&r.key))
            .await?;
        Ok(Response::new(pb::StatSnapshotResponse {
            info: Some(info(i)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateSnapshotRequest>,
    ) -> std::result::Result<Response<pb::UpdateSnapshotResponse>, Status> {
        let r = req.into_inner();
        let Some(i) = r.info else {
            return Err(Status::invalid_argument("Update without info"));
        };
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let call = format!("Update key={:?} paths={paths:?}", i.name);
        let i = self
            .run(call, move |s| s.update(&i.name, labels(i.labels), &paths))
            .await?;
        Ok(Response::new(pb::UpdateSnapshotResponse {
            info: Some(info(i)),
        }))
    }

    type ListStream = ListStream;

    async fn list(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> std::result::Result<Response<ListStream>, Status> {
        let r = req.into_inner();
        let call = format!("List filters={:?}", r.filters);
        let infos = self
            .run(call, move |s| {
                let f = Filters::parse(&r.filters)?;
                Ok::<_, Error>(
                    s.list()?
                        .into_iter()
                        .filter(|i| f.matches(i))
                        .map(info)
                        .collect::<Vec<_>>(),
                )
            })
            .await?;
        let batches: Vec<_> = infos
            .chunks(LIST_BATCH)
            .map(|c| Ok(pb::ListSnapshotsResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(
        &self,
        req: Request<pb::UsageRequest>,
    ) -> std::result::Result<Response<pb::UsageResponse>, Status> {
        let r = req.into_inner();
        let (size, inodes) = self
            .run(format!("Usage key={:?}", r.key), move |s| s.usage(&r.key))
            .await?;
        Ok(Response::new(pb::UsageResponse {
            size: size as i64,
            inodes: inodes as i64,
        }))
    }

    async fn cleanup(
        &self,
        _req: Request<pb::CleanupRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        self.run("Cleanup".into(), |s| s.cleanup()).await?;
        Ok(Response::new(()))
    }
}
