//! A private SoftHSM2 token per test (Debian's `softhsm2`; `pkcs11-tool` from `opensc`).
//!
//! SoftHSM reads `SOFTHSM2_CONF` once per process, when the module is initialized, and a process
//! may initialize a module only once; so a test that opens the token in-process runs in a child
//! copy of this test binary whose environment names its own token directory ([`in_child`]).

use std::path::{Path, PathBuf};
use std::process::Command;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const PIN: &str = "4711";
const SO_PIN: &str = "12345678";
/// Set in the child: the token directory the parent made.
const CHILD: &str = "SIGIL_TEST_SOFTHSM_DIR";

/// A SoftHSM2 configuration with one initialized token, in a folder of its own.
pub struct SoftHsm {
    pub dir: PathBuf,
}

impl SoftHsm {
    /// A new configuration with an empty token labelled `label`, user PIN [`PIN`].
    pub fn new(label: &str) -> (tempfile::TempDir, SoftHsm) {
        assert!(
            Path::new(MODULE).is_file() && which("softhsm2-util") && which("pkcs11-tool"),
            "SoftHSM2 and pkcs11-tool are missing: run scripts/setup (apt-get install softhsm2 opensc)"
        );
        let temp = tempfile::tempdir().unwrap();
        let hsm = SoftHsm {
            dir: temp.path().to_path_buf(),
        };
        std::fs::create_dir(hsm.dir.join("tokens")).unwrap();
        std::fs::write(
            hsm.conf(),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                hsm.dir.join("tokens").display()
            ),
        )
        .unwrap();
        hsm.run(
            "softhsm2-util",
            &[
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                SO_PIN,
                "--pin",
                PIN,
            ],
        );
        (temp, hsm)
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.join("softhsm2.conf")
    }

    /// Runs `program` against this token and returns its standard output; fails the test if it
    /// fails.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new(program)
            .args(args)
            .env("SOFTHSM2_CONF", self.conf())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `body` with a fresh token: in the parent, `make`s the token and re-runs the one test
/// `test` (its full path, `module::name`) in a child process pointed at it; in that child, runs
/// `body`.
pub fn in_child(
    test: &str,
    make: impl FnOnce() -> (tempfile::TempDir, SoftHsm),
    body: impl FnOnce(&SoftHsm),
) {
    if let Some(dir) = std::env::var_os(CHILD) {
        body(&SoftHsm {
            dir: PathBuf::from(dir),
        });
        return;
    }
    let (_temp, hsm) = make();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, &hsm.dir)
        .env("SOFTHSM2_CONF", hsm.conf())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} in its own process:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
