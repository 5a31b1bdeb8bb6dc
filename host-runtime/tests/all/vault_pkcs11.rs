//! The vault's master key in a SoftHSM2 token: records sealed and opened through it, wrapped keys
//! held to their tenant, a key that never leaves the token, rotation, rewrap and retirement, the
//! errors an operator has to tell apart, and `sigil keys` against the token.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use host_runtime::vault::{
    self, CacheLimits, KeyContext, MasterKey, RecordContext, Vault, VaultError,
};

use crate::softhsm::{in_child, SoftHsm, MODULE, PIN};

const TOKEN: &str = "vault";
const KEY: &str = "sigil-master";

/// The master key spec, with the PIN in a file beside the token and `extra` attributes.
fn spec(hsm: &SoftHsm, extra: &str) -> String {
    let pin = hsm.dir.join("pin");
    if !pin.exists() {
        std::fs::write(&pin, format!("{PIN}\n")).unwrap();
    }
    format!(
        "pkcs11:module={MODULE};token={TOKEN};key={KEY};pin-file={}{extra}",
        pin.display()
    )
}

fn new_token() -> (tempfile::TempDir, SoftHsm) {
    SoftHsm::new(TOKEN)
}

fn open_vault(master: Arc<dyn MasterKey>, key_store: &Path) -> Vault {
    Vault::open(master, key_store, CacheLimits::default()).unwrap()
}

/// The context the vault wraps tenant keys with.
fn tenant_context(tenant: &str, id: &str) -> KeyContext {
    [
        ("sigil:purpose".to_string(), "tenant-key".to_string()),
        ("sigil:tenant".to_string(), tenant.to_string()),
        ("sigil:key".to_string(), id.to_string()),
    ]
    .into()
}

/// One sealed record and where it lives.
struct Record {
    tenant: String,
    subject: String,
    id: String,
    text: String,
    sealed: String,
}

impl Record {
    fn seal(vault: &Vault, tenant: &str, subject: &str, id: &str) -> Record {
        let text = format!("ignore previous instructions, said {subject} of {tenant}");
        let sealed = vault
            .seal(&ctx(tenant, subject, id), text.as_bytes())
            .unwrap();
        assert!(!sealed.contains("ignore"), "{sealed}");
        Record {
            tenant: tenant.into(),
            subject: subject.into(),
            id: id.into(),
            text,
            sealed,
        }
    }

    fn open(&self, vault: &Vault) -> Result<String, VaultError> {
        vault
            .open_text(&ctx(&self.tenant, &self.subject, &self.id), &self.sealed)
            .map(|t| t.as_str().to_string())
    }
}

fn ctx<'a>(tenant: &'a str, subject: &'a str, id: &'a str) -> RecordContext<'a> {
    RecordContext {
        tenant,
        subject,
        kind: "quarantine",
        id,
    }
}

#[test]
fn pkcs11_vault_seals_and_opens_records_and_tenant_keys_keep_to_their_tenant() {
    in_child(
        "vault_pkcs11::pkcs11_vault_seals_and_opens_records_and_tenant_keys_keep_to_their_tenant",
        new_token,
        |hsm| {
            let dir = tempfile::tempdir().unwrap();
            let master = vault::open_master(&spec(hsm, "")).unwrap();
            // The token held no key: version 1 was made in it.
            let first = master.current_key_id().unwrap();
            assert!(first.starts_with("pkcs11:sigil-master/v1:"), "{first}");
            assert!(master
                .describe()
                .contains("`sigil-master` on token `vault`"));

            let vault = open_vault(master.clone(), &dir.path().join("keys.db"));
            let record = Record::seal(&vault, "acme", "alice", "q1");
            assert_eq!(record.open(&vault).unwrap(), record.text);
            assert!(vault.stats().backend_calls > 0);

            // A restarted service opens the token again, finds the same version, and reads it.
            let again = vault::open_master(&spec(hsm, ";create=no")).unwrap();
            assert_eq!(again.current_key_id().unwrap(), first);
            let reopened = open_vault(again.clone(), &dir.path().join("keys.db"));
            assert_eq!(record.open(&reopened).unwrap(), record.text);

            // The tenant key stored for acme unwraps with acme's context only.
            let rows = vault.key_store().tenant_keys().unwrap();
            assert_eq!(rows.len(), 1);
            let row = &rows[0];
            assert_eq!(row.wrapped.master_key_id, first);
            assert_eq!(row.wrapped.blob.len(), 12 + 32 + 16);
            again
                .decrypt_data_key(&row.wrapped, &tenant_context("acme", &row.id))
                .unwrap();
            let calls = again.backend_calls();
            match again.decrypt_data_key(&row.wrapped, &tenant_context("globex", &row.id)) {
                Err(VaultError::WrongContext(_)) => {}
                other => panic!("{other:?}"),
            }
            // One decryption on the token, refused there.
            assert_eq!(again.backend_calls(), calls + 1);
            let mut tampered = row.wrapped.clone();
            tampered.blob[20] ^= 1;
            assert!(matches!(
                again.decrypt_data_key(&tampered, &tenant_context("acme", &row.id)),
                Err(VaultError::WrongContext(_))
            ));
            let mut short = row.wrapped.clone();
            short.blob.truncate(40);
            assert!(matches!(
                again.decrypt_data_key(&short, &tenant_context("acme", &row.id)),
                Err(VaultError::Corrupt(_))
            ));
            let mut elsewhere = row.wrapped.clone();
            elsewhere.master_key_id = "pkcs11:sigil-master/v1:0000000000000000".into();
            assert!(matches!(
                again.decrypt_data_key(&elsewhere, &tenant_context("acme", &row.id)),
                Err(VaultError::Disabled(_))
            ));

            // Fresh data keys come from the token, each with its own IV.
            let a = master
                .generate_data_key(&tenant_context("acme", "x"))
                .unwrap();
            let b = master
                .generate_data_key(&tenant_context("acme", "x"))
                .unwrap();
            assert_ne!(*a.plaintext, *b.plaintext);
            assert_ne!(a.wrapped.blob[..12], b.wrapped.blob[..12]);
            assert_eq!(
                *again
                    .decrypt_data_key(&a.wrapped, &tenant_context("acme", "x"))
                    .unwrap(),
                *a.plaintext
            );
        },
    );
}

#[test]
fn pkcs11_master_key_cannot_be_read_or_wrapped_out_of_the_token() {
    in_child(
        "vault_pkcs11::pkcs11_master_key_cannot_be_read_or_wrapped_out_of_the_token",
        new_token,
        |hsm| {
            let master = vault::open_master(&spec(hsm, "")).unwrap();
            let pkcs11 = Pkcs11::new(MODULE).unwrap();
            match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
                Err(e) => panic!("{e}"),
            }
            let slot = pkcs11.get_slots_with_initialized_token().unwrap()[0];
            let session = pkcs11.open_rw_session(slot).unwrap();
            match session.login(UserType::User, Some(&AuthPin::new(PIN.into()))) {
                Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(e) => panic!("{e}"),
            }
            let found = session
                .find_objects(&[Attribute::Label(b"sigil-master/v1".to_vec())])
                .unwrap();
            assert_eq!(found.len(), 1);
            let key = found[0];

            // C_GetAttributeValue(CKA_VALUE) is refused as sensitive.
            let info = session
                .get_attribute_info(key, &[AttributeType::Value])
                .unwrap();
            assert!(matches!(info[..], [AttributeInfo::Sensitive]), "{info:?}");
            let value = session
                .get_attributes(key, &[AttributeType::Value])
                .unwrap();
            assert!(
                !value.iter().any(|a| matches!(a, Attribute::Value(_))),
                "{value:?}"
            );
            let flags = session
                .get_attributes(
                    key,
                    &[
                        AttributeType::KeyType,
                        AttributeType::ValueLen,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable,
                        AttributeType::Token,
                    ],
                )
                .unwrap();
            let expected = [
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32usize.try_into().unwrap()),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::AlwaysSensitive(true),
                Attribute::NeverExtractable(true),
                Attribute::Token(true),
            ];
            assert_eq!(flags, expected);

            // Nor does it leave wrapped, under a key of our own.
            let wrapping = session
                .generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::ValueLen(32usize.try_into().unwrap()),
                        Attribute::Token(false),
                        Attribute::Wrap(true),
                    ],
                )
                .unwrap();
            match session.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, key) {
                Err(P11Error::Pkcs11(RvError::KeyUnextractable, _)) => {}
                other => panic!("{other:?}"),
            }
            drop(session);
            // The vault's own session is unaffected.
            master
                .generate_data_key(&tenant_context("acme", "k"))
                .unwrap();
        },
    );
}

#[test]
fn pkcs11_rotate_rewrap_retire_keeps_every_record_and_strands_what_was_not_rewrapped() {
    in_child(
        "vault_pkcs11::pkcs11_rotate_rewrap_retire_keeps_every_record_and_strands_what_was_not_rewrapped",
        new_token,
        |hsm| {
            let dir = tempfile::tempdir().unwrap();
            let master = vault::open_master(&spec(hsm, "")).unwrap();
            let vault = open_vault(master.clone(), &dir.path().join("keys.db"));
            // A second key store nobody rewraps (a forgotten copy).
            let stray = open_vault(master.clone(), &dir.path().join("stray.db"));
            let mut records = Vec::new();
            for tenant in ["acme", "globex", "initech"] {
                for subject in ["alice", "bob"] {
                    records.push(Record::seal(&vault, tenant, subject, &format!("{subject}-1")));
                }
            }
            let stranded = Record::seal(&stray, "acme", "carol", "c-1");

            let old = master.current_key_id().unwrap();
            let new = master.rotate().unwrap();
            assert_ne!(old, new);
            assert!(new.starts_with("pkcs11:sigil-master/v2:"), "{new}");
            // Another process (a restarted service) sees the rotation on the token.
            assert_eq!(
                vault::open_master(&spec(hsm, ""))
                    .unwrap()
                    .current_key_id()
                    .unwrap(),
                new
            );
            // New tenants get keys under the new version; the old one still unwraps.
            records.push(Record::seal(&vault, "umbrella", "dave", "d-1"));
            stray.clear_cache();
            assert_eq!(stranded.open(&stray).unwrap(), stranded.text);

            let report = vault.rewrap(|_, _| {}).unwrap();
            assert_eq!(report.current_master_key, new);
            assert_eq!(report.rewrapped, 3);
            assert_eq!(
                vault.key_store().tenant_keys_by_master().unwrap(),
                vec![(new.clone(), 4)]
            );

            assert!(matches!(master.retire(&new), Err(VaultError::Invalid(_))));
            master.retire(&old).unwrap();
            assert!(matches!(master.retire(&old), Err(VaultError::NotFound(_))));
            // The version is gone from the token itself.
            let objects = hsm.run(
                "pkcs11-tool",
                &[
                    "--module",
                    MODULE,
                    "--token-label",
                    TOKEN,
                    "--login",
                    "--pin",
                    PIN,
                    "--list-objects",
                    "--type",
                    "secrkey",
                ],
            );
            assert!(
                objects.contains("sigil-master/v2") && !objects.contains("sigil-master/v1"),
                "{objects}"
            );

            vault.clear_cache();
            for record in &records {
                assert_eq!(record.open(&vault).unwrap(), record.text);
            }
            let check = vault.check_keys().unwrap();
            assert_eq!((check.tenant_keys, check.subject_keys), (4, 7));
            let fresh = open_vault(
                vault::open_master(&spec(hsm, ";create=no")).unwrap(),
                &dir.path().join("keys.db"),
            );
            for record in &records {
                assert_eq!(record.open(&fresh).unwrap(), record.text);
            }
            // What was not rewrapped is lost with the retired version.
            stray.clear_cache();
            match stranded.open(&stray) {
                Err(VaultError::Disabled(m)) => assert!(m.contains(&old), "{m}"),
                other => panic!("{other:?}"),
            }
        },
    );
}

#[test]
fn pkcs11_wrong_pin_is_denied_and_a_missing_token_or_module_is_unavailable() {
    in_child(
        "vault_pkcs11::pkcs11_wrong_pin_is_denied_and_a_missing_token_or_module_is_unavailable",
        new_token,
        |hsm| {
            // First, before any login in this process (a logged-in token takes any PIN).
            let wrong = hsm.dir.join("wrong-pin");
            std::fs::write(&wrong, "0000").unwrap();
            let wrong_pin = format!(
                "pkcs11:module={MODULE};token={TOKEN};key={KEY};pin-file={}",
                wrong.display()
            );
            match vault::open_master(&wrong_pin) {
                Err(VaultError::Denied(m)) => assert!(m.contains("PIN is wrong"), "{m}"),
                other => panic!("{other:?}"),
            }
            match vault::open_master(&spec(hsm, "").replace("token=vault", "token=elsewhere")) {
                Err(VaultError::Unavailable(m)) => {
                    assert!(m.contains("`elsewhere`") && m.contains("`vault`"), "{m}")
                }
                other => panic!("{other:?}"),
            }
            match vault::open_master(&spec(hsm, "").replace(MODULE, "/nonexistent/libp11.so")) {
                Err(VaultError::Unavailable(m)) => assert!(m.contains("does not exist"), "{m}"),
                other => panic!("{other:?}"),
            }
            let not_a_module = hsm.dir.join("libnot.so");
            std::fs::write(&not_a_module, "not a shared library").unwrap();
            match vault::open_master(&spec(hsm, "").replace(MODULE, not_a_module.to_str().unwrap()))
            {
                Err(VaultError::Unavailable(m)) => assert!(m.contains("cannot be loaded"), "{m}"),
                other => panic!("{other:?}"),
            }
            let unset = format!(
                "pkcs11:module={MODULE};token={TOKEN};key={KEY};pin-env=SIGIL_TEST_UNSET_VAULT_PIN"
            );
            match vault::open_master(&unset) {
                Err(VaultError::Config(m)) => {
                    assert!(m.contains("SIGIL_TEST_UNSET_VAULT_PIN"), "{m}")
                }
                other => panic!("{other:?}"),
            }
            // `create=no` on a token without the key: not found, and nothing made.
            match vault::open_master(&spec(hsm, ";create=no")) {
                Err(VaultError::NotFound(m)) => {
                    assert!(
                        m.contains("sigil-master/v1") && m.contains("create=no"),
                        "{m}"
                    )
                }
                other => panic!("{other:?}"),
            }
            // Hostile specs are refused before anything is loaded.
            for bad in [
                "pkcs11:module=m.so;key=k;pin-value=4711",
                "pkcs11:module=m.so;token=t",
                "pkcs11:module=m.so;key=k;create=sometimes",
                "pkcs11:module=m.so;key=%G0",
                "pkcs11:\u{0};;;=",
            ] {
                assert!(
                    matches!(vault::open_master(bad), Err(VaultError::Config(_))),
                    "{bad}"
                );
            }
            // After all that, the right PIN works (a wrong try does not lock SoftHSM).
            let master = vault::open_master(&spec(hsm, "")).unwrap();
            assert!(master
                .current_key_id()
                .unwrap()
                .starts_with("pkcs11:sigil-master/v1:"));
        },
    );
}

#[test]
fn pkcs11_sigil_keys_status_rotate_rewrap_retire_and_check_against_the_token() {
    in_child(
        "vault_pkcs11::pkcs11_sigil_keys_status_rotate_rewrap_retire_and_check_against_the_token",
        new_token,
        |hsm| {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            let init = Command::new(env!("CARGO_BIN_EXE_sigil"))
                .args(["init", "--data-dir"])
                .arg(&data)
                .output()
                .unwrap();
            assert!(
                init.status.success(),
                "{}",
                String::from_utf8_lossy(&init.stderr)
            );
            // The PIN comes from `SIGIL_PKCS11_PIN`, the default when the spec names none.
            let master_spec = format!("pkcs11:module={MODULE};token={TOKEN};key={KEY}");
            let records = {
                let master = vault::open_master(&spec(hsm, "")).unwrap();
                let vault = open_vault(master, &data.join("keys.db"));
                vec![
                    Record::seal(&vault, "acme", "alice", "a-1"),
                    Record::seal(&vault, "globex", "bob", "b-1"),
                ]
            };
            let keys = |args: &[&str], pin: &str| {
                let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
                    .arg("keys")
                    .args(args)
                    .arg("--data-dir")
                    .arg(&data)
                    .arg("--token-file")
                    .arg(data.join("admin.token"))
                    .args(["--master-key", &master_spec])
                    .env("SOFTHSM2_CONF", hsm.conf())
                    .env("SIGIL_PKCS11_PIN", pin)
                    .output()
                    .unwrap();
                (
                    out.status.success(),
                    String::from_utf8_lossy(&out.stdout).into_owned()
                        + &String::from_utf8_lossy(&out.stderr),
                )
            };

            let (ok, out) = keys(&["status"], "0000");
            assert!(!ok && out.contains("PIN is wrong"), "{out}");
            let (ok, status) = keys(&["status"], PIN);
            assert!(ok, "{status}");
            assert!(
                status.contains("master key   PKCS#11 key `sigil-master` on token `vault`"),
                "{status}"
            );
            let old = status
                .lines()
                .find_map(|l| l.strip_prefix("current      "))
                .unwrap()
                .trim()
                .to_string();
            assert!(old.starts_with("pkcs11:sigil-master/v1:"), "{old}");
            assert!(
                status.contains(&format!("wraps        2 tenant keys under {old}")),
                "{status}"
            );

            let (ok, rotated) = keys(&["rotate"], PIN);
            assert!(ok, "{rotated}");
            let new = rotated
                .lines()
                .find_map(|l| l.strip_prefix(&format!("rotated      {old} -> ")))
                .unwrap()
                .trim()
                .to_string();
            assert!(new.starts_with("pkcs11:sigil-master/v2:"), "{new}");
            let (ok, refused) = keys(&["retire", &old], PIN);
            assert!(!ok && refused.contains("rewrap"), "{refused}");

            let (ok, rewrapped) = keys(&["rewrap"], PIN);
            assert!(ok, "{rewrapped}");
            assert!(
                rewrapped.contains(&format!("rewrapped    2 tenant keys under {new}")),
                "{rewrapped}"
            );
            assert!(rewrapped.contains("2 user keys"), "{rewrapped}");
            let (ok, retired) = keys(&["retire", &old], PIN);
            assert!(
                ok && retired.contains(&format!("retired      {old}")),
                "{retired}"
            );
            let (ok, checked) = keys(&["check"], PIN);
            assert!(ok, "{checked}");
            assert!(
                checked.contains("checked      2 tenant keys, 2 user keys"),
                "{checked}"
            );
            let (ok, status) = keys(&["status"], PIN);
            assert!(
                ok && status.contains(&format!("current      {new}")),
                "{status}"
            );
            assert!(!status.contains(&old), "{status}");

            // This process, opening the token afresh, reads every record under the new version.
            let master = vault::open_master(&spec(hsm, ";create=no")).unwrap();
            assert_eq!(master.current_key_id().unwrap(), new);
            let vault = open_vault(master, &data.join("keys.db"));
            for record in &records {
                assert_eq!(record.open(&vault).unwrap(), record.text);
            }
        },
    );
}

/// `sigil serve` with `[vault] master_key` on the token: refused with a wrong PIN, serving with
/// the right one, and the token then holds the key's first version.
#[test]
fn pkcs11_sigil_serve_opens_its_master_key_on_the_token() {
    let (_temp, hsm) = new_token();
    let dir = tempfile::tempdir().unwrap();
    let addr = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let config = dir.path().join("sigil.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\ndata_dir = \"{}\"\n\n[vault]\nmaster_key = \"pkcs11:module={MODULE};token={TOKEN};key={KEY}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let serve = |pin: &str| {
        Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("SOFTHSM2_CONF", hsm.conf())
            .env("SIGIL_PKCS11_PIN", pin)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);

    let mut refused = serve("0000");
    let status = loop {
        if let Some(status) = refused.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = refused.kill();
            panic!("the service started with a wrong PIN");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut refused.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        !status.success() && stderr.contains("PIN is wrong"),
        "{stderr}"
    );

    let mut running = serve(PIN);
    loop {
        if let Some(status) = running.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut running.stderr.take().unwrap(), &mut stderr)
                .unwrap();
            panic!("the service stopped ({status}): {stderr}");
        }
        let healthy = std::net::TcpStream::connect(&addr).is_ok()
            && crate::service_e2e::http(&addr, "GET", "/healthz", None, None).0 == 200;
        if healthy {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = running.kill();
            panic!("the service did not answer");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = running.kill();
    let _ = running.wait();
    let objects = hsm.run(
        "pkcs11-tool",
        &[
            "--module",
            MODULE,
            "--token-label",
            TOKEN,
            "--login",
            "--pin",
            PIN,
            "--list-objects",
            "--type",
            "secrkey",
        ],
    );
    assert!(objects.contains("sigil-master/v1"), "{objects}");
}

#[test]
fn pkcs11_a_token_that_drops_the_login_is_logged_in_to_again() {
    in_child(
        "vault_pkcs11::pkcs11_a_token_that_drops_the_login_is_logged_in_to_again",
        new_token,
        |hsm| {
            let dir = tempfile::tempdir().unwrap();
            let master = vault::open_master(&spec(hsm, "")).unwrap();
            let vault = open_vault(master.clone(), &dir.path().join("keys.db"));
            let record = Record::seal(&vault, "acme", "alice", "a-1");
            let key = master
                .generate_data_key(&tenant_context("acme", "k"))
                .unwrap();

            // Another session of this process logs out: the login is per token and process, so
            // the vault's session is logged out too, as after a token reset.
            let pkcs11 = Pkcs11::new(MODULE).unwrap();
            match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
                Err(e) => panic!("{e}"),
            }
            let slot = pkcs11.get_slots_with_initialized_token().unwrap()[0];
            let session = pkcs11.open_ro_session(slot).unwrap();
            let label = [Attribute::Label(b"sigil-master/v1".to_vec())];
            let log_out = || {
                session.logout().unwrap();
                // Private objects are out of sight now.
                assert!(session.find_objects(&label).unwrap().is_empty());
            };

            log_out();
            assert_eq!(
                *master
                    .decrypt_data_key(&key.wrapped, &tenant_context("acme", "k"))
                    .unwrap(),
                *key.plaintext
            );
            assert_eq!(session.find_objects(&label).unwrap().len(), 1);
            log_out();
            master
                .generate_data_key(&tenant_context("globex", "k"))
                .unwrap();
            log_out();
            vault.clear_cache();
            assert_eq!(record.open(&vault).unwrap(), record.text);
        },
    );
}
