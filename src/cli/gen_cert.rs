//! `authbridge gen-cert`: write a self-signed certificate (`cert.pem`, and `key.pem` created with
//! mode 0600) for client-side TLS, for localhost, 127.0.0.1 and ::1 plus the `--host` names. An
//! existing pair is kept unless `--force` (clients may already trust that certificate).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, anyhow};

use super::failure::Failure;

/// The names every certificate carries.
const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Runs `authbridge gen-cert [--out DIR] [--host NAME]… [--force]`.
pub fn run(out: &Path, hosts: &[String], force: bool) -> Result<(), Failure> {
    let names = names(hosts).map_err(|e| Failure::Usage(anyhow!(e)))?;
    let cert_path = out.join("cert.pem");
    let key_path = out.join("key.pem");
    if !force {
        if let Some(existing) = [&cert_path, &key_path].into_iter().find(|p| p.exists()) {
            return Err(Failure::Usage(anyhow!(
                "{} already exists: pass --force to replace the pair (clients that trust the old \
                 certificate then need the new one), or choose another folder with --out",
                existing.display()
            )));
        }
    }
    write_pair(out, &cert_path, &key_path, &names, force).map_err(Failure::Runtime)?;
    println!(
        "wrote {} and {} (self-signed for {}; valid until 2036)\nuse them as `cert:` and `key:` \
         of a listener with tls: starttls or implicit",
        cert_path.display(),
        key_path.display(),
        names.join(", ")
    );
    Ok(())
}

/// The default names, then each `--host` (a DNS name or an IP address) not already there.
fn names(hosts: &[String]) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|n| (*n).to_owned()).collect();
    for host in hosts {
        let host = host.trim();
        let ok = !host.is_empty()
            && host.len() <= 253
            && rustls::pki_types::ServerName::try_from(host).is_ok();
        if !ok {
            return Err(format!(
                "--host {host:?} is neither a DNS name (mail.example.com) nor an IP address"
            ));
        }
        if !names.iter().any(|n| n.eq_ignore_ascii_case(host)) {
            names.push(host.to_owned());
        }
    }
    Ok(names)
}

fn write_pair(
    out: &Path,
    cert_path: &Path,
    key_path: &Path,
    names: &[String],
    force: bool,
) -> anyhow::Result<()> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("authbridge {}", names[0]),
    );
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let key_pem = crate::secret::SecretString::new(key.serialize_pem());
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    if force {
        // A fresh file, so the key gets mode 0600 whatever the old one had.
        for p in [cert_path, key_path] {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot replace {}", p.display()));
                }
                _ => {}
            }
        }
    }
    create_new(cert_path, 0o644)?.write_all(cert.pem().as_bytes())?;
    create_new(key_path, 0o600)?.write_all(key_pem.expose().as_bytes())?;
    Ok(())
}

/// Creates `path`, which must not exist (no overwrite between the check and the write).
fn create_new(path: &Path, mode: u32) -> anyhow::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    opts.open(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn host_names_are_checked_and_added_once() {
        assert_eq!(names(&[]).unwrap(), ["localhost", "127.0.0.1", "::1"]);
        let more = names(&[
            "mail.example.com".into(),
            "192.0.2.7".into(),
            "LOCALHOST".into(),
        ])
        .unwrap();
        assert_eq!(
            more,
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "mail.example.com",
                "192.0.2.7"
            ]
        );
        for bad in ["", "no spaces.example", "a_b..c", "http://x"] {
            assert!(names(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
