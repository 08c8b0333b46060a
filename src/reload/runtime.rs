//! A runtime connection's change as the running sidecar applies it: one insert or remove
//! in the registry (never a rebuild from the config), the proxy swapped to it, and the
//! connection's refresher stopped and started as a reload does for a changed connection.

use super::{proxy, Reloader};
use crate::config::{AdminSettings, Connection, Definition, Template};
use crate::registry::{Entry, Registry};
use crate::token::store::redis::Versioned;
use std::path::Path;
use std::sync::Arc;

impl Reloader {
    /// The connector types runtime connections are made from, as last applied.
    pub fn templates(&self) -> Arc<Vec<Arc<Template>>> {
        self.templates.load_full()
    }

    /// The admin settings a runtime connection is built under: the ones the process started
    /// with, but `public_url` as last applied (the default `redirect_uri` follows it).
    pub fn admin_settings(&self) -> AdminSettings {
        let mut admin = self.started.admin.clone();
        admin.public_url = self.public_url().map(|u| String::clone(&u));
        admin
    }

    /// `store.on_unreadable` as the process started with it.
    pub fn unreadable(&self) -> crate::config::Unreadable {
        self.started.store.on_unreadable
    }

    /// The config file (where file connections are changed).
    pub fn config_file(&self) -> &Path {
        &self.started.file
    }

    /// The problems of a config whose file connections take a runtime connection's key:
    /// the two would be one connection with two definitions.
    pub(super) fn taken_by_runtime(&self, config: &crate::config::Config) -> Vec<String> {
        let registry = self.registry.load();
        (config.connections.iter())
            .filter(|c| registry.get(&c.key).is_some_and(|e| e.runtime.is_some()))
            .map(|c| {
                let file = config.file.display();
                format!("{file}: connection `{}` is a runtime connection's key (created through the connection API): delete that one first, or choose another key", c.key)
            })
            .collect()
    }

    /// Serves `conn`, the runtime connection `definition` makes (the entry keeps it without
    /// its secrets: they are in the store, and in `conn`'s params): added, or in place of its
    /// previous definition. Its tokens are kept when the change leaves what they were
    /// obtained under alone (the same grant identity), else dropped, as a reload does;
    /// a new one starts with `stored`, the token set the store holds for it (start-up).
    /// The previous refresher is stopped (and waited for) before the new one starts.
    pub async fn put_runtime(
        &self,
        conn: Arc<Connection>,
        definition: &Definition,
        stored: Option<Versioned>,
    ) -> Arc<Entry> {
        let key = conn.key.clone();
        let (entry, previous) = {
            let _one_at_a_time = self.busy.lock().await;
            let registry = self.registry.load_full();
            let previous = registry.get(&key).cloned();
            let mut entry = match &previous {
                Some(old) if old.conn.grant_identity == conn.grant_identity => {
                    Entry::with_tokens(conn, Arc::clone(&old.tokens), old.grants.as_ref())
                }
                _ => Entry::new(conn),
            };
            entry.runtime = Some(Arc::new(definition.without_secrets()));
            let entry = Arc::new(entry);
            if let Some(stored) = stored {
                super::restore(
                    std::slice::from_ref(&entry),
                    &[],
                    [(key.clone(), stored)].into(),
                );
            }
            let hosts = [
                Some(entry.conn.upstream.host.as_str()),
                previous.as_ref().map(|old| old.conn.upstream.host.as_str()),
            ];
            self.swap_registry(&registry, registry.with(Arc::clone(&entry)), &hosts);
            (entry, previous)
        };
        if let Some(old) = previous {
            self.stop_refresher(&key).await;
            if old.conn.grant_identity != entry.conn.grant_identity {
                tracing::info!(connection = %key, "its token endpoint, client, upstream or scope changed: the token obtained before is dropped");
                self.forget(&key).await;
            }
        }
        self.start_refresher(&entry);
        entry
    }

    /// Stops serving the runtime connection `key` and stops its refresher (waiting for a
    /// token request under way); its stored definition and tokens are the caller's to
    /// delete. Returns its entry, if it was served.
    pub async fn remove_runtime(&self, key: &str) -> Option<Arc<Entry>> {
        let removed = {
            let _one_at_a_time = self.busy.lock().await;
            let registry = self.registry.load_full();
            let removed = registry.get(key).cloned()?;
            let host = Some(removed.conn.upstream.host.as_str());
            self.swap_registry(&registry, registry.without(key), &[host]);
            removed
        };
        self.stop_refresher(key).await;
        Some(removed)
    }

    /// Makes `next` (one change from `running`, on `hosts`) the running registry, with the
    /// proxy settings as last applied. A host of `hosts` that comes or goes has its
    /// interception certificates minted or dropped (the other hosts' stay as they are).
    fn swap_registry(&self, running: &Registry, next: Registry, hosts: &[Option<&str>]) {
        let next = Arc::new(next);
        if let Some(intercept) = &self.intercept {
            for host in hosts.iter().flatten() {
                let (was, is) = (running.knows_host(host), next.knows_host(host));
                if was != is {
                    if let Err(e) = intercept.host(host, is) {
                        tracing::error!(error = %e, host, "interception certificates not minted for a new host");
                    }
                }
            }
        }
        let settings = self.proxy_settings.lock().expect("proxy settings lock");
        let proxy = proxy(
            Arc::clone(&next),
            &settings,
            self.own_addrs.clone(),
            self.intercept.as_ref(),
        );
        drop(settings);
        self.registry.store(next);
        self.proxy.store(Arc::new(proxy));
    }
}
