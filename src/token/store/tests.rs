//! The file backend through the [`TokenStore`] handle: round trip, modes, no clear text on disk,
//! wrong key, tampering, atomic replacement, stale temporaries, account names, versions and
//! compatibility with files written before versions existed; where the master key comes from.

use std::fs::{self, File};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::crypto::KEY_LEN;
use super::file::{FILE_VERSION, TokenFile};
use super::*;

const TOKEN: &str = "0.ARoAv4j5cvGGr0GRqy180BHbR-SECRET-REFRESH-TOKEN-TEXT";

fn key(byte: u8) -> MasterKey {
    MasterKey::from_bytes([byte; KEY_LEN], "test key")
}

/// Every file under `dir`, recursively, with its content.
fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            let content = fs::read(&path).unwrap();
            out.push((path, content));
        }
    }
    out
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn round_trip_and_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let store = TokenStore::open(&state, key(1)).unwrap();
    assert!(store.load("tickets").unwrap().is_none());
    assert!(store.stored_at("tickets").unwrap().is_none());
    let before = SystemTime::now() - Duration::from_secs(1);
    store.save("tickets", &SecretString::from(TOKEN)).unwrap();
    let loaded = store.load("tickets").unwrap().unwrap();
    assert_eq!(loaded.refresh_token.expose(), TOKEN);
    // The file format version is written (the store version of a first save is 1).
    let file: TokenFile =
        serde_json::from_slice(&fs::read(store.path("tickets").unwrap()).unwrap()).unwrap();
    assert_eq!(file.version, FILE_VERSION);
    assert_eq!(loaded.version, 1);
    assert!(loaded.stored_at >= before);
    assert_eq!(store.stored_at("tickets").unwrap(), Some(loaded.stored_at));
    // Another store over the same directory with the same key reads it too (a restart).
    let again = TokenStore::open(&state, key(1)).unwrap();
    assert_eq!(
        again
            .load("tickets")
            .unwrap()
            .unwrap()
            .refresh_token
            .expose(),
        TOKEN
    );
    #[cfg(unix)]
    {
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join("tokens")), 0o700);
        assert_eq!(mode(&store.path("tickets").unwrap()), 0o600);
    }
}

#[test]
fn token_text_never_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let store = TokenStore::open(tmp.path(), key(2)).unwrap();
    store.save("tickets", &SecretString::from(TOKEN)).unwrap();
    store.save("tickets", &SecretString::from(TOKEN)).unwrap();
    let needles = [
        TOKEN.as_bytes().to_vec(),
        "SECRET-REFRESH".as_bytes().to_vec(),
        STANDARD.encode(TOKEN).into_bytes(),
    ];
    let files = all_files(tmp.path());
    assert_eq!(
        files.len(),
        1,
        "only the token file, no temporary left: {files:?}"
    );
    for (path, content) in files {
        for n in &needles {
            assert!(
                !content.windows(n.len()).any(|w| w == n.as_slice()),
                "{} holds the token",
                path.display()
            );
        }
        let text = String::from_utf8(content).unwrap();
        assert!(text.contains("\"account\": \"tickets\""), "{text}");
    }
}

#[test]
fn wrong_key_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    TokenStore::open(tmp.path(), key(3))
        .unwrap()
        .save("tickets", &SecretString::from(TOKEN))
        .unwrap();
    let other =
        TokenStore::open(tmp.path(), MasterKey::from_bytes([4; 32], "/etc/ab/key")).unwrap();
    let err = other.load("tickets").unwrap_err();
    assert!(matches!(err, StoreError::KeyMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    for want in [
        "key does not match",
        "key_file",
        "AUTHBRIDGE_KEY",
        "/etc/ab/key",
        "tickets.json",
    ] {
        assert!(msg.contains(want), "{msg}");
    }
    assert!(!msg.contains(TOKEN));
}

#[test]
fn tampering_and_misplaced_files_are_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let store = TokenStore::open(tmp.path(), key(5)).unwrap();
    store.save("tickets", &SecretString::from(TOKEN)).unwrap();
    let path = store.path("tickets").unwrap();

    // A file copied under another account's name.
    fs::copy(&path, store.path("other").unwrap()).unwrap();
    assert!(matches!(
        store.load("other"),
        Err(StoreError::Corrupt { .. })
    ));

    // The account field edited to match: the associated data no longer authenticates.
    let text = fs::read_to_string(&path).unwrap();
    fs::write(
        store.path("other").unwrap(),
        text.replace("\"account\": \"tickets\"", "\"account\": \"other\""),
    )
    .unwrap();
    let err = store.load("other").unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");

    // A flipped ciphertext byte.
    let mut file: TokenFile = serde_json::from_str(&text).unwrap();
    let mut sealed = STANDARD.decode(&file.sealed_refresh_token).unwrap();
    sealed[0] ^= 1;
    file.sealed_refresh_token = STANDARD.encode(sealed);
    fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    assert!(matches!(
        store.load("tickets"),
        Err(StoreError::Corrupt { .. })
    ));

    fs::write(&path, b"{ not json").unwrap();
    assert!(matches!(
        store.load("tickets"),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn atomic_replace() {
    let tmp = tempfile::tempdir().unwrap();
    let store = TokenStore::open(tmp.path(), key(6)).unwrap();
    store.save("tickets", &SecretString::from("first")).unwrap();
    // A crash mid-write leaves a temporary file next to the old one: the old one still loads.
    let dir = tmp.path().join("tokens");
    fs::write(dir.join(".tickets.json.0011223344556677.tmp"), b"{\"half").unwrap();
    assert_eq!(
        store
            .load("tickets")
            .unwrap()
            .unwrap()
            .refresh_token
            .expose(),
        "first"
    );
    store
        .save("tickets", &SecretString::from("second"))
        .unwrap();
    assert_eq!(
        store
            .load("tickets")
            .unwrap()
            .unwrap()
            .refresh_token
            .expose(),
        "second"
    );
    // The replacement is a new inode renamed over the old one, and nothing else was left.
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // A write that cannot happen (directory read-only) leaves the old token in place.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o500)).unwrap();
        let denied = store.save("tickets", &SecretString::from("third"));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        // Root ignores directory permissions; only check when the write was refused.
        if denied.is_err() {
            assert_eq!(
                store
                    .load("tickets")
                    .unwrap()
                    .unwrap()
                    .refresh_token
                    .expose(),
                "second"
            );
        }
    }
}

#[test]
fn stale_temporaries_are_removed_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let store = TokenStore::open(tmp.path(), key(8)).unwrap();
    store.save("tickets", &SecretString::from("t")).unwrap();
    let dir = tmp.path().join("tokens");
    let stale = dir.join(".tickets.json.00aa.tmp");
    let fresh = dir.join(".tickets.json.11bb.tmp");
    fs::write(&stale, b"{").unwrap();
    fs::write(&fresh, b"{").unwrap();
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    TokenStore::open(tmp.path(), key(8)).unwrap();
    assert!(!stale.exists());
    assert!(fresh.exists(), "a young one may be a write in progress");
    assert!(store.path("tickets").unwrap().exists());
}

#[test]
fn account_names_cannot_escape() {
    let tmp = tempfile::tempdir().unwrap();
    let store = TokenStore::open(tmp.path(), key(7)).unwrap();
    for bad in ["", "../x", "a/b", ".hidden", "a b", &"x".repeat(129)] {
        assert!(
            matches!(store.path(bad), Err(StoreError::InvalidAccount { .. })),
            "{bad:?}"
        );
    }
    for good in ["tickets", "glpi-2", "a.b_c", "tickets@contoso.com"] {
        assert!(store.path(good).is_ok(), "{good}");
    }
}

#[test]
fn key_file_created_then_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("secrets/deep/master.key");
    let k1 = MasterKey::load_or_create(Some(&key_file), None, tmp.path()).unwrap();
    let text = fs::read_to_string(&key_file).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert_eq!(STANDARD.decode(text.trim()).unwrap().len(), 32);
    #[cfg(unix)]
    {
        assert_eq!(mode(&key_file), 0o600);
        assert_eq!(mode(&tmp.path().join("secrets/deep")), 0o700);
    }
    // The env value is ignored when key_file is given.
    let env = Some(SecretString::from(STANDARD.encode([9u8; 32])));
    let k2 = MasterKey::load_or_create(Some(&key_file), env, tmp.path()).unwrap();
    assert_eq!(k1.check_value(), k2.check_value());
    assert_eq!(
        fs::read_dir(tmp.path().join("secrets/deep"))
            .unwrap()
            .count(),
        1
    );
    assert!(!format!("{k1:?}").contains(text.trim()));
}

#[test]
fn key_from_env_then_state_dir_default() {
    let tmp = tempfile::tempdir().unwrap();
    let env = Some(SecretString::from(format!(
        " {}\n",
        STANDARD.encode([9u8; 32])
    )));
    let k = MasterKey::load_or_create(None, env, tmp.path()).unwrap();
    assert_eq!(k.origin(), "AUTHBRIDGE_KEY");
    assert_eq!(
        k.check_value(),
        MasterKey::from_bytes([9; 32], "x").check_value()
    );
    assert!(!tmp.path().join("master.key").exists());

    let state = tmp.path().join("state");
    let k = MasterKey::load_or_create(None, None, &state).unwrap();
    assert!(state.join("master.key").exists());
    let again = MasterKey::load_or_create(None, None, &state).unwrap();
    assert_eq!(k.check_value(), again.check_value());
}

#[test]
fn bad_keys_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    for (value, why) in [
        ("", "empty"),
        ("!!!", "not base64"),
        ("AAAA", "3 bytes"),
        ("AAAA\nAAAA", "more than one line"),
    ] {
        let err = MasterKey::load_or_create(None, Some(SecretString::from(value)), tmp.path())
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("AUTHBRIDGE_KEY") && msg.contains(why), "{msg}");
    }
    let key_file = tmp.path().join("bad.key");
    fs::write(&key_file, "hello world\n").unwrap();
    let msg = MasterKey::load_or_create(Some(&key_file), None, tmp.path())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("bad.key") && msg.contains("32 random bytes"),
        "{msg}"
    );
}

#[test]
fn versions_grow_and_compare_and_set_refuses_a_stale_one() {
    let tmp = tempfile::tempdir().unwrap();
    let store = TokenStore::open(tmp.path(), key(9)).unwrap();
    let stored = || {
        let t = store.load("tickets").unwrap()?;
        Some((t.refresh_token.expose().clone(), t.version))
    };
    // The new version, or else the version found instead of the expected one.
    type Outcome = Result<u64, Option<u64>>;
    // (token, expected version, outcome)
    let steps: [(&str, Option<u64>, Outcome); 5] = [
        // Nothing stored: a save expecting a version is refused and writes nothing.
        ("a", Some(1), Err(None)),
        // Unconditional (a new login): the first version.
        ("a", None, Ok(1)),
        // Compare-and-set from the stored version.
        ("b", Some(1), Ok(2)),
        // A rotation that started from version 1 finds version 2: refused, "b" stays.
        ("c", Some(1), Err(Some(2))),
        // A new login replaces whatever is there.
        ("d", None, Ok(3)),
    ];
    let mut want = None;
    for (text, expected, outcome) in steps {
        match (
            store.replace("tickets", &SecretString::from(text), expected),
            outcome,
        ) {
            (Ok(version), Ok(w)) => {
                assert_eq!(version, w, "{text}");
                want = Some((text.to_owned(), w));
            }
            (
                Err(StoreError::Conflict {
                    expected: e, found, ..
                }),
                Err(f),
            ) => {
                assert_eq!((Some(e), found), (expected, f), "{text}");
            }
            (got, _) => panic!("{text}: {got:?}"),
        }
        assert_eq!(stored(), want, "{text}");
    }
    // The lock guard exists for every account name the store accepts.
    drop(store.lock("tickets").unwrap());
    assert!(matches!(
        store.lock("../x"),
        Err(StoreError::InvalidAccount { .. })
    ));
}

/// The token file as authbridge wrote it before store versions existed.
#[derive(serde::Serialize, serde::Deserialize)]
struct TokenFileWithoutRevision {
    version: u32,
    account: String,
    stored_at: u64,
    cipher: String,
    key_check: String,
    nonce: String,
    sealed_refresh_token: String,
}

#[test]
fn files_from_before_versions_still_open_and_old_readers_read_new_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = TokenStore::open(tmp.path(), key(10)).unwrap();
    store.save("tickets", &SecretString::from(TOKEN)).unwrap();
    let path = store.path("tickets").unwrap();
    // An older build reads a new file: the extra field is ignored.
    let old: TokenFileWithoutRevision = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(old.version, FILE_VERSION);
    // A file written by an older build (no revision) opens as version 0 …
    fs::write(&path, serde_json::to_vec_pretty(&old).unwrap()).unwrap();
    let loaded = store.load("tickets").unwrap().unwrap();
    assert_eq!(
        (loaded.refresh_token.expose().as_str(), loaded.version),
        (TOKEN, 0)
    );
    // … and a rotation based on it moves it to version 1.
    assert_eq!(
        store
            .replace("tickets", &SecretString::from("next"), Some(0))
            .unwrap(),
        1
    );
}

#[test]
fn stored_times_from_a_damaged_file_are_clamped() {
    let tmp = tempfile::tempdir().unwrap();
    let store = TokenStore::open(tmp.path(), key(11)).unwrap();
    store.save("tickets", &SecretString::from(TOKEN)).unwrap();
    let path = store.path("tickets").unwrap();
    let mut file: TokenFile = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    file.stored_at = u64::MAX;
    fs::write(&path, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
    let latest = crate::token::from_unix_secs(crate::token::MAX_UNIX_SECS);
    assert_eq!(store.stored_at("tickets").unwrap(), Some(latest));
    let loaded = store.load("tickets").unwrap().unwrap();
    assert_eq!(loaded.stored_at, latest);
    assert_eq!(loaded.refresh_token.expose(), TOKEN);
}

#[test]
fn lock_excludes_other_handles_until_released() {
    use std::sync::mpsc;
    use std::time::Instant;

    let tmp = tempfile::tempdir().unwrap();
    let a = TokenStore::open(tmp.path(), key(12)).unwrap();
    let b = TokenStore::open(tmp.path(), key(12)).unwrap();
    let held = a.lock("tickets").unwrap();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _lock = b.lock("tickets").unwrap();
        tx.send(Instant::now()).unwrap();
        // Another account's lock is independent of this one.
        drop(b.lock("other").unwrap());
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx.try_recv().is_err(), "a second handle waits for the lock");
    // Another account is not blocked meanwhile.
    drop(a.lock("other").unwrap());
    let released = Instant::now();
    drop(held);
    let acquired = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(acquired >= released);
    waiter.join().unwrap();
    #[cfg(unix)]
    assert_eq!(mode(&tmp.path().join("tokens/tickets.lock")), 0o600);
    // The lock file is not a token: loading still finds none.
    assert!(a.load("tickets").unwrap().is_none());
}
