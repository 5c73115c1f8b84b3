//! Replays, for every fuzz target, its checked-in seeds (`fuzz/seeds/TARGET/`) and every
//! input that ever made it fail (`fuzz/regressions/TARGET/`), so CI catches a
//! regression without a nightly compiler or libFuzzer. `serve_image` also replays the
//! image seeds of `read_image`.

use std::path::{Path, PathBuf};

use ishare_fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `fuzz/KIND/TARGET/`, sorted; none when the folder does not exist.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = dir
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, sources: &[&str]) -> usize {
    let body = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, body)| *body)
        .expect("a known target");
    let mut n = 0;
    for source in sources {
        for kind in ["seeds", "regressions"] {
            for file in inputs(kind, source) {
                let data = std::fs::read(&file).expect("read an input");
                eprintln!("{target}: {}", file.display());
                body(&data);
                n += 1;
            }
        }
    }
    n
}

#[test]
fn read_image_seeds_and_regressions() {
    assert!(
        replay("read_image", &["read_image"]) >= 10,
        "the image seeds are missing"
    );
}

#[test]
fn tar_input_seeds_and_regressions() {
    assert!(
        replay("tar_input", &["tar_input"]) >= 5,
        "the tar seeds are missing"
    );
}

#[test]
fn build_tree_seeds_and_regressions() {
    assert!(
        replay("build_tree", &["build_tree"]) >= 5,
        "the tree seeds are missing"
    );
}

#[test]
fn serve_image_seeds_and_regressions() {
    assert!(replay("serve_image", &["serve_image", "read_image"]) >= 10);
}

#[test]
fn file_contexts_seeds_and_regressions() {
    assert!(
        replay("file_contexts", &["file_contexts"]) >= 3,
        "the file_contexts seeds are missing"
    );
}

#[test]
fn every_target_has_a_test_here() {
    for (name, _) in TARGETS {
        assert!(
            fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{name}.rs"))
                .is_file(),
            "fuzz/fuzz_targets/{name}.rs is missing"
        );
    }
}
