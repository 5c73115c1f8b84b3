//! Snapshot metadata in a transactional embedded store (redb; containerd's own
//! snapshotters use bbolt the same way): one table of snapshots by key, one counter
//! of ids. Every call that changes metadata is one write transaction, so a crash leaves
//! either the state before or after it; the directories each record names are created
//! before and removed after the transaction, and [`crate::Snapshotter::cleanup`] removes
//! those no record names.
//!
//! The rules are containerd's (its `snapshots/storage` package): a key exists once; a
//! parent must exist and be committed; only an active snapshot can be committed; a
//! snapshot with children cannot be removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const NEXT_ID: &str = "next_id";

/// A snapshot's kind, as containerd names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Read-only view of a parent chain.
    View,
    /// Writable, may be committed.
    Active,
    /// A layer: read-only, may be a parent.
    Committed,
}

impl Kind {
    /// containerd's spelling (filters use it).
    pub fn name(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// A point in time, seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Seconds.
    pub secs: i64,
    /// Nanoseconds.
    pub nanos: i32,
}

impl Stamp {
    /// Now.
    pub fn now() -> Stamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Stamp {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }
    }
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Names its directories (`snapshots/ID`, `layers/ID`, `l/ID`); never reused.
    pub id: u64,
    /// Its kind.
    pub kind: Kind,
    /// The parent's key, empty for none.
    pub parent: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Created.
    pub created: Stamp,
    /// Last updated.
    pub updated: Stamp,
    /// Committed layers: bytes the layer image takes on disk, and its inodes.
    #[serde(default)]
    pub usage: Option<(u64, u64)>,
}

/// The metadata store.
#[derive(Debug)]
pub struct Meta {
    db: Database,
    path: PathBuf,
}

impl Meta {
    /// Opens (creating) the store at `path`.
    pub fn open(path: &Path) -> Result<Meta> {
        let db = Database::create(path).map_err(|e| err(path, e))?;
        let meta = Meta {
            db,
            path: path.to_path_buf(),
        };
        // Create the tables so read transactions find them.
        let txn = meta.db.begin_write().map_err(|e| meta.err(e))?;
        txn.open_table(SNAPSHOTS).map_err(|e| meta.err(e))?;
        txn.open_table(COUNTERS).map_err(|e| meta.err(e))?;
        txn.commit().map_err(|e| meta.err(e))?;
        Ok(meta)
    }

    fn err(&self, e: impl Into<redb::Error>) -> Error {
        err(&self.path, e)
    }

    /// A fresh id (its own transaction: an id lost to a crash is only a gap).
    pub fn next_id(&self) -> Result<u64> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let id = {
            let mut t = txn.open_table(COUNTERS).map_err(|e| self.err(e))?;
            let id = t
                .get(NEXT_ID)
                .map_err(|e| self.err(e))?
                .map_or(1, |v| v.value());
            t.insert(NEXT_ID, id + 1).map_err(|e| self.err(e))?;
            id
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(id)
    }

    /// The snapshot `key`.
    pub fn get(&self, key: &str) -> Result<Record> {
        self.find(key)?
            .ok_or_else(|| Error::NotFound(key.to_string()))
    }

    /// The snapshot `key`, if any.
    pub fn find(&self, key: &str) -> Result<Option<Record>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
        let v = t.get(key).map_err(|e| self.err(e))?;
        v.map(|v| self.decode(key, v.value())).transpose()
    }

    /// Every snapshot, by key.
    pub fn all(&self) -> Result<Vec<(String, Record)>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.push((k.value().to_string(), self.decode(k.value(), v.value())?));
        }
        Ok(out)
    }

    /// The committed chain from `parent` up (newest first), empty for no parent.
    pub fn chain(&self, parent: &str) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut next = parent.to_string();
        while !next.is_empty() {
            let r = self.get(&next)?;
            next = r.parent.clone();
            out.push(r);
            if out.len() > 10_000 {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot {parent:?}: parent chain loops"
                )));
            }
        }
        Ok(out)
    }

    /// Records a new active or view snapshot `key` of id `id` on `parent`.
    pub fn create(
        &self,
        key: &str,
        parent: &str,
        kind: Kind,
        id: u64,
        labels: BTreeMap<String, String>,
    ) -> Result<Record> {
        let now = Stamp::now();
        let rec = Record {
            id,
            kind,
            parent: parent.to_string(),
            labels,
            created: now,
            updated: now,
            usage: None,
        };
        self.write(|t| {
            if t.get(key).map_err(|e| self.err(e))?.is_some() {
                return Err(Error::AlreadyExists(key.to_string()));
            }
            if !parent.is_empty() {
                let p = t
                    .get(parent)
                    .map_err(|e| self.err(e))?
                    .ok_or_else(|| Error::ParentNotFound {
                        key: key.to_string(),
                        parent: parent.to_string(),
                    })
                    .and_then(|v| self.decode(parent, v.value()))?;
                if p.kind != Kind::Committed {
                    return Err(Error::InvalidArgument(format!(
                        "snapshot {key:?}: parent {parent:?} is not a committed snapshot"
                    )));
                }
            }
            self.put(t, key, &rec)
        })?;
        Ok(rec)
    }

    /// Turns the active snapshot `key` into the committed `name` (same id), with
    /// `labels` and the layer's `usage`.
    pub fn commit(
        &self,
        key: &str,
        name: &str,
        labels: BTreeMap<String, String>,
        usage: (u64, u64),
    ) -> Result<Record> {
        self.write(|t| {
            let old = self.get_in(t, key)?;
            check_committable(key, &old)?;
            if t.get(name).map_err(|e| self.err(e))?.is_some() {
                return Err(Error::AlreadyExists(name.to_string()));
            }
            let now = Stamp::now();
            let rec = Record {
                kind: Kind::Committed,
                labels,
                created: now,
                updated: now,
                usage: Some(usage),
                ..old
            };
            t.remove(key).map_err(|e| self.err(e))?;
            self.put(t, name, &rec)?;
            Ok(rec)
        })
    }

    /// Removes `key`, unless it has children.
    pub fn remove(&self, key: &str) -> Result<Record> {
        self.write(|t| {
            let rec = self.get_in(t, key)?;
            for row in t.iter().map_err(|e| self.err(e))? {
                let (k, v) = row.map_err(|e| self.err(e))?;
                if self.decode(k.value(), v.value())?.parent == key {
                    return Err(Error::FailedPrecondition(format!(
                        "cannot remove snapshot {key:?}: snapshot {:?} is its child",
                        k.value()
                    )));
                }
            }
            t.remove(key).map_err(|e| self.err(e))?;
            Ok(rec)
        })
    }

    /// Replaces `key`'s labels with what `change` makes of them.
    pub fn update_labels(
        &self,
        key: &str,
        change: impl FnOnce(&mut BTreeMap<String, String>),
    ) -> Result<Record> {
        self.write(|t| {
            let mut rec = self.get_in(t, key)?;
            change(&mut rec.labels);
            rec.updated = Stamp::now();
            self.put(t, key, &rec)?;
            Ok(rec)
        })
    }

    fn write<T>(&self, f: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let out = {
            let mut t = txn.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
            f(&mut t)?
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    fn get_in(&self, t: &redb::Table<&str, &[u8]>, key: &str) -> Result<Record> {
        let v = t
            .get(key)
            .map_err(|e| self.err(e))?
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        self.decode(key, v.value())
    }

    fn put(&self, t: &mut redb::Table<&str, &[u8]>, key: &str, rec: &Record) -> Result<()> {
        let bytes = serde_json::to_vec(rec).map_err(|e| Error::Metadata {
            path: self.path.clone(),
            msg: format!("snapshot {key:?}: {e}"),
        })?;
        t.insert(key, bytes.as_slice()).map_err(|e| self.err(e))?;
        Ok(())
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> Result<Record> {
        serde_json::from_slice(bytes).map_err(|e| Error::Metadata {
            path: self.path.clone(),
            msg: format!("snapshot {key:?}: unreadable record: {e}"),
        })
    }
}

/// Whether `rec` (the snapshot `key`) may be committed: only active ones may.
pub fn check_committable(key: &str, rec: &Record) -> Result<()> {
    if rec.kind != Kind::Active {
        return Err(Error::FailedPrecondition(format!(
            "snapshot {key:?} is {}, not active: only active snapshots can be committed",
            rec.kind.name()
        )));
    }
    Ok(())
}

fn err(path: &Path, e: impl Into<redb::Error>) -> Error {
    Error::Metadata {
        path: path.to_path_buf(),
        msg: e.into().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> (tempfile::TempDir, Meta) {
        let d = tempfile::tempdir().unwrap();
        let m = Meta::open(&d.path().join("m.redb")).unwrap();
        (d, m)
    }

    #[test]
    fn containerd_rules() {
        let (_d, m) = meta();
        let a = m.next_id().unwrap();
        m.create("a", "", Kind::Active, a, BTreeMap::new()).unwrap();
        assert!(matches!(
            m.create("a", "", Kind::Active, 99, BTreeMap::new()),
            Err(Error::AlreadyExists(_))
        ));
        // An active parent is not a parent.
        assert!(matches!(
            m.create("b", "a", Kind::Active, 98, BTreeMap::new()),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            m.create("b", "nope", Kind::Active, 98, BTreeMap::new()),
            Err(Error::ParentNotFound { .. })
        ));
        let l1 = m.commit("a", "L1", BTreeMap::new(), (4096, 3)).unwrap();
        assert_eq!((l1.id, l1.kind), (a, Kind::Committed));
        assert!(matches!(m.get("a"), Err(Error::NotFound(_))));
        let b = m.next_id().unwrap();
        assert!(b > a);
        m.create("v", "L1", Kind::View, b, BTreeMap::new()).unwrap();
        assert!(matches!(
            m.commit("v", "L2", BTreeMap::new(), (0, 0)),
            Err(Error::FailedPrecondition(_))
        ));
        assert!(matches!(m.remove("L1"), Err(Error::FailedPrecondition(_))));
        assert_eq!(m.chain("L1").unwrap().len(), 1);
        m.remove("v").unwrap();
        m.remove("L1").unwrap();
        assert!(m.all().unwrap().is_empty());
    }

    #[test]
    fn labels_and_reopen() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("m.redb");
        {
            let m = Meta::open(&path).unwrap();
            let labels = BTreeMap::from([("x".to_string(), "1".to_string())]);
            m.create("k", "", Kind::Active, 1, labels).unwrap();
            m.update_labels("k", |l| {
                l.insert("y".into(), "2".into());
            })
            .unwrap();
        }
        let m = Meta::open(&path).unwrap();
        let r = m.get("k").unwrap();
        assert_eq!(r.labels.len(), 2);
        assert_eq!(m.next_id().unwrap(), 1);
    }
}
