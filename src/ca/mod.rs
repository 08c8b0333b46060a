//! The local CA of TLS interception (`proxy.intercept`, issue 12): the persisted root that
//! `tokenwarden ca init` creates (key `0600`, certificate PEM; new files only, no link
//! followed), its loading at start (a key file others could read or replace is an error:
//! see `hygiene`), and `tokenwarden ca bundle` (the system roots plus the root, for clients
//! that replace rather than extend their roots).
//!
//! The root signs nothing on the request path: at start (and when a host is added) [`mint`]
//! makes, for each configured host, an intermediate whose X.509 name constraints permit
//! only that host, and its leaf. A stolen intermediate cannot front any other site.

mod hygiene;
pub mod mint;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The root certificate's file name in a `ca init` directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The root key's file name in a `ca init` directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// The trust bundle's file name `ca bundle` writes by default.
pub const BUNDLE_FILE: &str = "bundle.pem";
/// The directory `ca init` and `ca bundle` use without `--dir`.
pub const DEFAULT_DIR: &str = "tokenwarden-ca";
/// Mode of the root key file: the owner reads and writes it, nobody else.
const KEY_MODE: u32 = 0o600;
/// Mode of the directory `ca init` creates.
const DIR_MODE: u32 = 0o700;
/// Mode of the root certificate file (public).
const CERT_MODE: u32 = 0o644;
/// Lifetime of the root (rotate it sooner: see docs/local-proxy.md, Security).
const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The root's common name.
const ROOT_NAME: &str = "tokenwarden local CA";

/// Where the system's trust bundle lives (Debian/Ubuntu/Alpine, Fedora/RHEL, macOS/BSD,
/// openSUSE); `ca bundle` takes the first that exists unless given `--system`.
pub const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} already exists; move it away (or use --dir) to create a new CA")]
    Exists { path: String },
    #[error("CA key {path} is readable by others (mode {mode:o}); it is as sensitive as every token it could front: chmod 600 {path}")]
    LoosePermissions { path: String, mode: u32 },
    #[error("CA key {path} is owned by uid {owner}, not by the user running tokenwarden (uid {user}) or root; another user could replace it: chown it, or use a CA of your own")]
    ForeignOwner { path: String, owner: u32, user: u32 },
    #[error("CA key {path} is under {dir}, a directory writable by anyone without the sticky bit (mode {mode:o}), where anyone could replace it: chmod o-w {dir}, or move the key")]
    OpenDirectory {
        path: String,
        dir: String,
        mode: u32,
    },
    #[error("{path} is a symbolic link (to {target}); ca init writes new files only and follows no link: remove it (or use --dir)")]
    Symlink { path: String, target: String },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("no system trust bundle found (looked for {}); pass --system FILE", SYSTEM_BUNDLES.join(", "))]
    NoSystemRoots,
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The files `ca init` wrote.
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `tokenwarden ca init`: a new root (EC P-256) in `dir` (created `0700` if missing):
/// `ca.key` (`0600`, never overwritten) and `ca.pem`.
pub fn init(dir: &Path) -> Result<CaFiles, CaError> {
    let files = CaFiles {
        cert: dir.join(CA_CERT_FILE),
        key: dir.join(CA_KEY_FILE),
    };
    for path in [&files.cert, &files.key] {
        hygiene::check_new(path)?;
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_error(dir))?;
    // Absolute from here on: the paths printed for the config file must not depend on the
    // directory `ca init` ran in (the config resolves relative paths against its own folder).
    let dir = dir.canonicalize().map_err(io_error(dir))?;
    let files = CaFiles {
        cert: dir.join(CA_CERT_FILE),
        key: dir.join(CA_KEY_FILE),
    };
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, ROOT_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - mint::BACKDATE;
    params.not_after = now + ROOT_VALIDITY;
    let cert = params.self_signed(&key)?;
    write_new(&files.key, KEY_MODE, &key.serialize_pem())?;
    write_new(&files.cert, CERT_MODE, &cert.pem())?;
    Ok(files)
}

/// Writes `text` to a new file at `path` with `mode`: `O_EXCL`, so neither an existing file
/// nor a symbolic link (even one created since [`hygiene::check_new`]) is written through.
fn write_new(path: &Path, mode: u32, text: &str) -> Result<(), CaError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(io_error(path))
}

/// The persisted root, loaded at start: it signs the intermediate ([`mint`]).
pub struct Root {
    pub(crate) issuer: Issuer<'static, KeyPair>,
}

impl Root {
    /// Loads the root certificate and key; a key file that others could read or replace is
    /// refused ([`CaError::LoosePermissions`], [`CaError::ForeignOwner`],
    /// [`CaError::OpenDirectory`]).
    pub fn load(cert: &Path, key: &Path) -> Result<Root, CaError> {
        hygiene::check_key(key)?;
        let invalid = |path: &Path, reason: String| CaError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let key_pem = std::fs::read_to_string(key).map_err(io_error(key))?;
        let cert_pem = std::fs::read_to_string(cert).map_err(io_error(cert))?;
        let pair = KeyPair::from_pem(&key_pem)
            .map_err(|e| invalid(key, format!("not a PEM private key ({e})")))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, pair)
            .map_err(|e| invalid(cert, format!("not a PEM CA certificate ({e})")))?;
        Ok(Root { issuer })
    }
}

/// `tokenwarden ca bundle`: writes `out` with the system roots (`system`, or the first of
/// [`SYSTEM_BUNDLES`] that exists) followed by the root certificate `cert`.
pub fn bundle(cert: &Path, system: Option<&Path>, out: &Path) -> Result<PathBuf, CaError> {
    let system = match system {
        Some(path) => path.to_path_buf(),
        None => SYSTEM_BUNDLES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or(CaError::NoSystemRoots)?,
    };
    let mut text = std::fs::read_to_string(&system).map_err(io_error(&system))?;
    let root = std::fs::read_to_string(cert).map_err(io_error(cert))?;
    if !root.contains("-----BEGIN CERTIFICATE-----") {
        return Err(CaError::Invalid {
            path: cert.display().to_string(),
            reason: "holds no PEM certificate".into(),
        });
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("# {ROOT_NAME} ({})\n", cert.display()));
    text.push_str(&root);
    std::fs::write(out, text).map_err(io_error(out))?;
    Ok(system)
}

/// What `ca init` prints: how to turn interception on and how each client trusts the CA.
pub fn trust_instructions(files: &CaFiles) -> String {
    let (cert, key) = (files.cert.display(), files.key.display());
    let dir = files
        .cert
        .parent()
        .map_or_else(|| ".".into(), |d| d.display().to_string());
    format!(
        "Created {cert} (certificate) and {key} (private key, mode 600).
Keep the key on this machine (or in this pod): whoever holds it can front every configured host.

Turn interception on in the config file:
  proxy:
    intercept: {{ ca_cert: {cert}, ca_key: {key} }}

Then trust the certificate in each client that sends https:// through HTTPS_PROXY:
  curl:             curl --cacert {cert} …   (or CURL_CA_BUNDLE={cert})
  Node 20+:         NODE_EXTRA_CA_CERTS={cert} node app.js   (read only at start)
  Python requests:  REQUESTS_CA_BUNDLE={dir}/{BUNDLE_FILE}
  Python httpx/ssl: SSL_CERT_FILE={dir}/{BUNDLE_FILE}
The last two replace the system roots; write that bundle (system roots + this CA) with:
  tokenwarden ca bundle --dir {dir}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn init_writes_a_private_key_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let files = init(&dir.path().join("ca")).unwrap();
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, KEY_MODE);
        assert!(Root::load(&files.cert, &files.key).is_ok());
        assert!(matches!(
            init(&dir.path().join("ca")),
            Err(CaError::Exists { .. })
        ));
        let text = trust_instructions(&files);
        for needle in [
            "--cacert",
            "NODE_EXTRA_CA_CERTS",
            "REQUESTS_CA_BUNDLE",
            "SSL_CERT_FILE",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
    }

    #[test]
    fn a_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = init(dir.path()).unwrap();
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Root::load(&files.cert, &files.key).err().unwrap();
        assert!(
            matches!(e, CaError::LoosePermissions { mode: 0o644, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    #[test]
    fn the_bundle_is_the_system_roots_then_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let files = init(dir.path()).unwrap();
        let system = dir.path().join("system.pem");
        std::fs::write(
            &system,
            "-----BEGIN CERTIFICATE-----\nsys\n-----END CERTIFICATE-----",
        )
        .unwrap();
        let out = dir.path().join(BUNDLE_FILE);
        bundle(&files.cert, Some(&system), &out).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let root = std::fs::read_to_string(&files.cert).unwrap();
        assert!(
            text.starts_with("-----BEGIN CERTIFICATE-----\nsys\n"),
            "{text}"
        );
        assert!(text.ends_with(&root), "{text}");
    }
}
