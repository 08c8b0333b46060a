//! Reload on change (`admin.watch_config`): the config file, the Fides files it names and the
//! files its `${file:}` values come from (a rotated secret or key) are read every interval
//! and hashed; a change is applied as a reload (the same all-or-nothing
//! [`Reloader::reload`] as `SIGHUP`) once two reads in a row agree, so an editor's
//! half-written file, or a Kubernetes ConfigMap update in progress, is not taken mid-way.
//!
//! Content, not timestamps: a ConfigMap volume swaps a symlink (`..data`) and keeps old
//! modification times, and a `touch` changes nothing (so does a Secret volume). A reload that finds the new content
//! invalid changes nothing and is not retried until the files change again; after a reload
//! by `SIGHUP` or the admin API, the text it read is not reloaded a second time.

use crate::reload::Reloader;
use serde_yaml_ng::Value;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the config file, its Fides files and its `${file:}` files hold, as one hash. An
/// unreadable file hashes as its error kind: a file that disappears is a change too (the
/// reload then says why).
pub fn fingerprint(config_file: &Path) -> [u8; 32] {
    let mut hash = Sha256::new();
    let text = read_into(&mut hash, config_file);
    let base = config_file.parent().unwrap_or(Path::new("."));
    let named = named_files(text.as_deref().unwrap_or_default());
    for (kind, file) in named
        .fides
        .iter()
        .map(|f| (0, f))
        .chain(named.values.iter().map(|f| (1, f)))
    {
        hash.update([kind]);
        hash.update(file.as_bytes());
        read_into(&mut hash, &base.join(file));
    }
    hash.finalize().into()
}

/// Adds the file's bytes (or its error kind) to `hash`; its text, when it is UTF-8.
fn read_into(hash: &mut Sha256, file: &Path) -> Option<String> {
    match std::fs::read(file) {
        Ok(bytes) => {
            hash.update(b"ok");
            hash.update(&bytes);
            String::from_utf8(bytes).ok()
        }
        Err(e) => {
            hash.update(format!("error {:?}", e.kind()).as_bytes());
            None
        }
    }
}

/// The files a config names, as written (relative to its folder).
#[derive(Debug, Default)]
struct Named {
    /// `saas_config:` paths.
    fides: Vec<String>,
    /// `${file:}` paths.
    values: Vec<String>,
}

/// The files the config text names. Text that does not parse names none; the reload reports
/// it. A `saas_config:` path written with a `${VAR}` is taken literally, so that file is not
/// followed (docs/configuration.md: Hot reload).
fn named_files(config: &str) -> Named {
    let Ok(doc) = serde_yaml_ng::from_str::<Value>(config) else {
        return Named::default();
    };
    let fides = match doc.get("connections") {
        Some(Value::Sequence(connections)) => connections
            .iter()
            .filter_map(|c| c.get("saas_config")?.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    Named {
        fides,
        values: crate::config::file_references(&doc),
    }
}

/// Until `shutdown`: reads the files every `interval` and reloads after a change that two
/// reads in a row agree on.
pub async fn run(
    reloader: Arc<Reloader>,
    config_file: std::path::PathBuf,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let read = |file: std::path::PathBuf| async move {
        tokio::task::spawn_blocking(move || fingerprint(&file))
            .await
            .unwrap_or_default()
    };
    let mut applied = read(config_file.clone()).await;
    let mut seen = applied;
    let mut last_reload = reloader.last();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now = read(config_file.clone()).await;
        if !Arc::ptr_eq(&last_reload, &reloader.last()) {
            // A SIGHUP or `POST /api/v1/reload` read the files meanwhile: no second reload
            // of the same text.
            applied = now;
        } else if now != applied && now == seen {
            tracing::info!(file = %config_file.display(), "the config file changed: reloading");
            reloader.reload().await;
            applied = now;
        }
        last_reload = reloader.last();
        seen = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_the_config_and_its_fides_files() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        let fides = dir.path().join("crm.yml");
        std::fs::write(&fides, "saas_config: {}\n").unwrap();
        std::fs::write(
            &config,
            "connections:\n  - key: crm\n    saas_config: crm.yml\n",
        )
        .unwrap();
        let first = fingerprint(&config);
        assert_eq!(fingerprint(&config), first, "same files, same fingerprint");

        std::fs::write(&fides, "saas_config: { name: x }\n").unwrap();
        let fides_edited = fingerprint(&config);
        assert_ne!(fides_edited, first, "a Fides file edit is a change");

        std::fs::remove_file(&fides).unwrap();
        assert_ne!(fingerprint(&config), fides_edited, "so is its removal");

        std::fs::write(&config, "connections: [ half").unwrap();
        let broken = fingerprint(&config);
        assert_ne!(broken, first);
        assert_eq!(fingerprint(&config), broken, "unparsable text hashes too");
    }

    #[test]
    fn only_saas_config_paths_are_fides_files() {
        let fides_files = |text: &str| named_files(text).fides;
        let names = fides_files(
            "connections:\n  - key: a\n    saas_config: a.yml\n  - key: b\n    saas_config: { saas_config: {} }\n  - key: c\n    client_config: {}\n",
        );
        assert_eq!(names, ["a.yml"]);
        assert!(fides_files("not: [valid").is_empty());
    }

    #[test]
    fn the_fingerprint_follows_the_files_values_come_from_across_a_symlink_swap() {
        let dir = tempfile::tempdir().unwrap();
        // A Kubernetes Secret volume: `client_secret` → `..data/client_secret`, `..data` →
        // a timestamped folder, swapped for a new folder on an update.
        let volume = dir.path().join("secret");
        std::fs::create_dir(&volume).unwrap();
        let version = |name: &str, secret: &str| {
            std::fs::create_dir(volume.join(name)).unwrap();
            std::fs::write(volume.join(name).join("client_secret"), secret).unwrap();
            let tmp = volume.join("..data_tmp");
            std::os::unix::fs::symlink(name, &tmp).unwrap();
            std::fs::rename(&tmp, volume.join("..data")).unwrap();
        };
        version("..v1", "one\n");
        std::os::unix::fs::symlink("..data/client_secret", volume.join("client_secret")).unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            "connections:\n  - key: a\n    secrets: { client_secret: \"x-${file:secret/client_secret}\" }\n",
        )
        .unwrap();
        let first = fingerprint(&config);
        assert_eq!(fingerprint(&config), first);

        version("..v2", "two\n");
        let swapped = fingerprint(&config);
        assert_ne!(swapped, first, "the swapped link's new content is a change");
        std::fs::remove_file(volume.join("..v2").join("client_secret")).unwrap();
        assert_ne!(fingerprint(&config), swapped, "so is the file gone");
        assert_eq!(
            named_files("a: $${file:escaped}\nb: ${file:/run/b}\n").values,
            ["/run/b"]
        );
    }
}
