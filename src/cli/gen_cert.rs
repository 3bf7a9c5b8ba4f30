//! `authbridge gen-cert`: write a self-signed certificate for localhost (`cert.pem`, and `key.pem`
//! created with mode 0600) for client-side TLS.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use super::failure::Failure;

/// Runs `authbridge gen-cert [--out DIR]`.
pub fn run(out: &Path) -> Result<(), Failure> {
    gen_cert(out).map_err(Failure::Runtime)
}

fn gen_cert(out: &Path) -> anyhow::Result<()> {
    let (cert, key) = crate::tls::self_signed_localhost()?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let cert_path = out.join("cert.pem");
    let key_path = out.join("key.pem");
    std::fs::write(&cert_path, cert)
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    let mut f = open_private(&key_path)?;
    f.write_all(key.expose().as_bytes())?;
    println!(
        "wrote {} and {} (self-signed for localhost, 127.0.0.1, ::1; valid until 2036)\nuse them as `cert:` and `key:` of a listener with tls: starttls or implicit",
        cert_path.display(),
        key_path.display()
    );
    Ok(())
}

fn open_private(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
        .with_context(|| format!("cannot write {}", path.display()))
}
