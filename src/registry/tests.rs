//! Tests of [`super`].

use super::*;

/// Bearer connections `(key, host[:port])` on https, loaded through the real config loader.
fn connections(specs: &[(&str, &str)]) -> Vec<Arc<Connection>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    let mut yaml = String::from("store: { path: tokens.bin }\nconnections:\n");
    for (key, host) in specs {
        yaml.push_str(&format!(
            "  - key: {key}\n    secrets: {{ token: t }}\n    client_config:\n      protocol: https\n      host: {host}\n      authentication:\n        strategy: bearer\n        configuration: {{ token: \"<token>\" }}\n"
        ));
    }
    std::fs::write(&file, yaml).unwrap();
    crate::config::load(&file)
        .unwrap_or_else(|p| panic!("{p}"))
        .connections
}

fn entry(key: &str, host: &str) -> Arc<Entry> {
    let conn = connections(&[(key, host)]).remove(0);
    Arc::new(Entry::new(conn))
}

fn keys<'r>(entries: impl Iterator<Item = &'r Arc<Entry>>) -> Vec<&'r str> {
    entries.map(|e| e.conn.key.as_str()).collect()
}

#[test]
fn one_insert_or_remove_leaves_the_registry_it_came_from_as_it_was() {
    let file = Registry::new(&connections(&[("a", "a.example"), ("b", "b.example")]));
    let one = file.with(entry("c", "c.example"));
    let two = one.with(entry("d", "a.example"));
    assert_eq!(keys(file.iter()), ["a", "b"]);
    assert_eq!(keys(two.iter()), ["a", "b", "c", "d"]);
    assert_eq!(two.len(), 4);
    // Replacing keeps the place, file connection or not.
    let replaced = two
        .with(entry("a", "z.example"))
        .with(entry("c", "c2.example"));
    assert_eq!(keys(replaced.iter()), ["a", "b", "c", "d"]);
    assert_eq!(replaced.get("a").unwrap().conn.upstream.host, "z.example");
    assert!(!replaced.knows_host("c.example") && replaced.knows_host("c2.example"));
    assert_eq!(two.get("a").unwrap().conn.upstream.host, "a.example");
    let less = replaced.without("b").without("c").without("nope");
    assert_eq!(keys(less.iter()), ["a", "d"]);
    assert!(less.get("b").is_none() && !less.knows_host("b.example"));
    // A new one goes last, after the ones created before it (even removed ones).
    let again = less.with(entry("c", "c.example"));
    assert_eq!(keys(again.iter()), ["a", "d", "c"]);
    assert!(Registry::default().is_empty());
}

#[test]
fn pages_walk_the_listing_order() {
    let mut registry = Registry::new(&connections(&[("f0", "f.example"), ("f1", "f.example")]));
    for i in 0..10 {
        registry = registry.with(entry(&format!("r{i}"), "r.example"));
    }
    assert_eq!(registry.len(), 12);
    assert_eq!(keys(registry.page(0, 3)), ["f0", "f1", "r0"]);
    assert_eq!(keys(registry.page(10, 5)), ["r8", "r9"]);
    assert_eq!(registry.page(12, 5).count(), 0);
    assert_eq!(registry.page(3, 0).count(), 0);
}

#[test]
fn a_reload_changes_the_file_connections_and_keeps_the_runtime_ones() {
    let specs = [("a", "a.example"), ("b", "b.example")];
    let registry = Registry::new(&connections(&specs)).with(entry("c", "c.example"));
    let a = Arc::clone(registry.get("a").unwrap());
    // Reordered, one added: the kept entries are the same entries, listed in the new order.
    let (reloaded, changes) = registry.reloaded(&connections(&[
        ("b", "b.example"),
        ("a", "a.example"),
        ("e", "e.example"),
    ]));
    assert_eq!(keys(reloaded.iter()), ["b", "a", "e", "c"]);
    assert_eq!(changes.kept, ["b", "a"]);
    assert_eq!(keys(changes.added.iter()), ["e"]);
    assert!(changes.removed.is_empty() && changes.changed.is_empty());
    assert!(Arc::ptr_eq(reloaded.get("a").unwrap(), &a));
    // Removed from the file: gone, in listing order; the runtime connection stays.
    let (reloaded, changes) = reloaded.reloaded(&connections(&[("a", "a2.example")]));
    assert_eq!(keys(reloaded.iter()), ["a", "c"]);
    assert_eq!(keys(changes.removed.iter()), ["b", "e"]);
    assert_eq!(keys(changes.changed.iter()), ["a"]);
    assert!(!reloaded.knows_host("a.example") && reloaded.knows_host("a2.example"));
    // The file may take a runtime connection's key over: it becomes the file's.
    let (reloaded, changes) =
        reloaded.reloaded(&connections(&[("c", "c.example"), ("a", "a2.example")]));
    assert_eq!(keys(reloaded.iter()), ["c", "a"]);
    assert_eq!(changes.kept, ["c", "a"]);
    let (reloaded, _) = reloaded.reloaded(&connections(&[("a", "a2.example")]));
    assert_eq!(
        keys(reloaded.iter()),
        ["a"],
        "now a file connection, it goes with the file"
    );
}

#[test]
fn forward_mode_chooses_among_the_connections_on_a_host_by_name() {
    let registry = Registry::new(&connections(&[
        ("one", "solo.example"),
        ("a", "shared.example"),
        ("b", "shared.example"),
        ("other-port", "shared.example:8443"),
    ]));
    let chosen = |host, port, named| {
        registry
            .by_authority(host, port, named)
            .map(|e| e.conn.key.as_str())
    };
    assert_eq!(chosen("solo.example", None, None), Ok("one"));
    assert_eq!(chosen("SOLO.example.", None, Some("one")), Ok("one"));
    assert_eq!(
        chosen("solo.example", None, Some("a")),
        Err(Unchosen::Elsewhere)
    );
    assert_eq!(
        chosen("shared.example", None, None),
        Err(Unchosen::Ambiguous)
    );
    assert_eq!(chosen("shared.example", Some(443), Some("b")), Ok("b"));
    assert_eq!(chosen("Shared.Example", None, Some("a")), Ok("a"));
    assert_eq!(
        chosen("shared.example", None, Some("nope")),
        Err(Unchosen::Elsewhere)
    );
    assert_eq!(
        chosen("shared.example", None, Some("other-port")),
        Err(Unchosen::Elsewhere)
    );
    // One connection on that port: no header needed.
    assert_eq!(chosen("shared.example", Some(8443), None), Ok("other-port"));
    assert_eq!(
        chosen("unknown.example", None, Some("a")),
        Err(Unchosen::NoConnection)
    );
    assert_eq!(
        chosen("shared.example", Some(9), None),
        Err(Unchosen::NoConnection)
    );
    assert_eq!(registry.ports_of("shared.example"), [443, 8443]);
    assert_eq!(registry.hosts(), ["solo.example", "shared.example"]);
}

#[test]
fn connections_to_one_upstream_share_an_origin() {
    let registry = Registry::new(&connections(&[
        ("a", "api.example"),
        ("b", "API.example:443"),
        ("c", "api.example:8443"),
    ]));
    let origin = |key| registry.get(key).unwrap().origin.clone();
    assert_eq!(origin("a"), origin("b"));
    assert_ne!(origin("a"), origin("c"));
    assert_eq!(format!("{:?}", origin("c")), "https://api.example:8443");
}

#[test]
fn a_host_of_many_connections_changes_one_at_a_time() {
    let specs: Vec<(String, &str)> = (0..100)
        .map(|i| (format!("k{i}"), "crowd.example"))
        .collect();
    let specs: Vec<(&str, &str)> = specs.iter().map(|(k, h)| (k.as_str(), *h)).collect();
    let conns = connections(&specs);
    let mut registry = Registry::default();
    for conn in &conns {
        registry = registry.with(Arc::new(Entry::new(Arc::clone(conn))));
    }
    let before = registry.clone();
    let fewer = registry.without("k50");
    assert_eq!(before.hosted("crowd.example").map(Hosted::len), Some(100));
    assert_eq!(fewer.hosted("crowd.example").map(Hosted::len), Some(99));
    // Forward mode: the header picks one; without it, several are refused as ambiguous.
    let named = fewer.by_authority("crowd.example", None, Some("k99"));
    assert_eq!(named.map(|e| e.conn.key.as_str()), Ok("k99"));
    assert_eq!(
        fewer.by_authority("crowd.example", None, Some("k50")).err(),
        Some(Unchosen::Elsewhere)
    );
    assert_eq!(
        fewer.by_authority("crowd.example", None, None).err(),
        Some(Unchosen::Ambiguous)
    );
    // The listing of the host follows creation order.
    let first: Vec<&str> = keys(fewer.hosted("crowd.example").unwrap().values().take(3));
    assert_eq!(first, ["k0", "k1", "k2"]);
}

#[test]
fn a_host_list_turns_into_a_map_past_sixteen_and_back() {
    let specs: Vec<(String, &str)> = (0..18)
        .map(|i| (format!("k{i:02}"), "grow.example"))
        .collect();
    let specs: Vec<(&str, &str)> = specs.iter().map(|(k, h)| (k.as_str(), *h)).collect();
    let conns = connections(&specs);
    let mut registry = Registry::default();
    let form = |r: &Registry| match r.hosted("grow.example") {
        Some(Hosted::Few(_)) => "few",
        Some(Hosted::Many(_)) => "many",
        None => "none",
    };
    for (i, conn) in conns.iter().enumerate() {
        registry = registry.with(Arc::new(Entry::new(Arc::clone(conn))));
        assert_eq!(
            form(&registry),
            if i < 16 { "few" } else { "many" },
            "after {}",
            i + 1
        );
    }
    registry = registry.without("k03").without("k07");
    assert_eq!(form(&registry), "few");
    let listed = keys(registry.hosted("grow.example").unwrap().values());
    let expected: Vec<String> = (0..18)
        .filter(|i| ![3, 7].contains(i))
        .map(|i| format!("k{i:02}"))
        .collect();
    assert_eq!(listed, expected);
    // A replaced connection keeps its place in its host's list.
    let replaced = registry.with(Arc::new(Entry::new(Arc::clone(&conns[5]))));
    assert_eq!(
        keys(replaced.hosted("grow.example").unwrap().values()),
        expected
    );
}
