//! `ishare doctor`: what the host supports and which mode `ishare mount` will run in
//! (probing in `ishare_share::examine_host`). Exits 1 when something `ishare mount` needs is
//! missing.

use std::path::PathBuf;

use anyhow::{Result, bail};
use ishare_share::{DEFAULT_STORE, MountMode};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store a mount would use (as `ishare mount -o store=DIR`).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STORE)]
    store: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let r = ishare_share::examine_host(&a.store);
    let why = match &r.mode {
        MountMode::Passthrough => None,
        MountMode::DirectIo(w) | MountMode::Unavailable(w) => Some(w.clone()),
    };
    if a.json {
        let e = &r.erofs;
        let f = &r.fuse;
        let p = &r.passthrough;
        let s = &r.store;
        let kernel = r.kernel_mode.is_ok() && r.ready();
        let v = json!({
            "ready": r.ready(),
            // What `ishare mount -o inode_share` (mode=auto) gets for an image whose
            // fingerprints all verify; `fuse_mode` for the others.
            "mode": if kernel { "kernel" } else { r.mode.as_str() },
            "mode_reason": why,
            "fuse_mode": r.mode.as_str(),
            "kernel_mode": {
                "usable": r.kernel_mode.is_ok(),
                "reason": r.kernel_mode.as_ref().err(),
            },
            "kernel": {
                "release": r.kernel_release,
                "version": r.kernel_version.map(|(a, b)| format!("{a}.{b}")),
                "config": r.kernel_config,
            },
            "erofs": {
                "registered": e.registered,
                "module": e.module,
                "config": e.config,
                "compressors": e.compressors,
                "inode_share": e.inode_share,
            },
            "fuse": {
                "device": f.device,
                "openable": f.open_error.is_none(),
                "open_error": f.open_error,
                "mounter": f.mounter,
                "mounted": f.mounted,
                "mount_error": f.mount_error,
            },
            "passthrough": {
                "usable": p.usable(),
                "config": p.config,
                "cap_sys_admin": p.cap_sys_admin,
                "offered": p.offered,
                "backing_file": p.backing.as_ref().map(|b| b.is_ok()),
                "backing_error": p.backing.as_ref().and_then(|b| b.as_ref().err()),
                "max_stack_depth": p.stack_depth,
            },
            "store": {
                "path": s.path,
                "exists": s.exists,
                "examined": s.examined,
                "filesystem": s.filesystem,
                "free_bytes": s.free_bytes,
                "writable": s.writable,
                "o_tmpfile": s.o_tmpfile,
                "error": s.error,
            },
            "checks": r.checks.iter().map(|c| json!({
                "name": c.name,
                "status": c.status.as_str(),
                "required": c.required,
                "detail": c.detail,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for c in &r.checks {
            println!("{:<4}  {:<18} {}", c.status.as_str(), c.name, c.detail);
        }
        match &r.mode {
            MountMode::Passthrough => println!(
                "=> ishare mount -o inode_share shares through kernel FUSE passthrough (read, mmap, splice)"
            ),
            MountMode::DirectIo(w) => println!(
                "=> ishare mount -o inode_share shares by daemon reads (direct_io: read(2) shares, mmap and splice do not): {w}"
            ),
            MountMode::Unavailable(w) => println!("=> ishare mount cannot work here: {w}"),
        }
        match &r.kernel_mode {
            Ok(()) if r.ready() => println!(
                "=> mode=auto (the default): images whose every fingerprint verifies are mounted by the kernel's EROFS with inode_share (kernel mode); the others as above"
            ),
            Ok(()) => {}
            Err(w) => println!("=> no kernel mode here (mode=kernel fails): {w}"),
        }
    }
    if !r.ready() {
        bail!("something ishare mount needs is missing (see the lines marked no)");
    }
    Ok(())
}
