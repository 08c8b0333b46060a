//! The manifests in `deploy/kubernetes/` hang together and carry a config tokenwarden
//! accepts: for each variant, the ConfigMap's `config.yaml` is extracted and given to
//! `tokenwarden check` with the environment the Deployment gives the sidecar (from the
//! Secret), every `${VAR}` of the config is set by that environment, the sidecar is a native
//! sidecar with probes on the admin port, and every container runs non-root on a read-only
//! root filesystem without capabilities. (CI checks the schemas with kubernetes-validate.)

use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// A usable store key (32 bytes, base64) in place of the Secret's placeholder.
const STORE_KEY: &str = "CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=";
/// Where the image runs its config from (Dockerfile `CMD`).
const CONFIG_DIR: &str = "/etc/tokenwarden";
const CONFIG_FILE: &str = "config.yaml";
const SIDECAR: &str = "tokenwarden";

/// Every document of every `*.yaml` file in `deploy/kubernetes/{variant}`.
fn manifests(variant: &str) -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes")
        .join(variant);
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value =
                Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            docs.push(value);
        }
    }
    docs
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

/// The `${NAME}`s a config refers to.
fn variables(config: &str) -> Vec<&str> {
    config
        .split("${")
        .skip(1)
        .map(|rest| rest.split('}').next().unwrap())
        .collect()
}

/// The sidecar's environment as the kubelet would build it from the Secret.
fn sidecar_env(sidecar: &Value, secret: &Value) -> BTreeMap<String, String> {
    let secret_name = str_of(&secret["metadata"]["name"]);
    seq(&sidecar["env"])
        .iter()
        .map(|e| {
            let name = str_of(&e["name"]).to_owned();
            let value = match e["value"].as_str() {
                Some(v) => v.to_owned(),
                None => {
                    let r = &e["valueFrom"]["secretKeyRef"];
                    assert_eq!(str_of(&r["name"]), secret_name, "{name}");
                    str_of(&secret["stringData"][str_of(&r["key"])]).to_owned()
                }
            };
            (name, value)
        })
        .collect()
}

/// `tokenwarden check` on `config` with exactly `env` → (exit code, stdout and stderr).
fn check(config: &str, env: &BTreeMap<String, String>) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(CONFIG_FILE);
    std::fs::write(&file, config).unwrap();
    let (code, out, err) = crate::cli::run_check(&file, Some(env));
    (code, out + &err)
}

fn assert_locked_down(pod: &Value, container: &Value) {
    let name = str_of(&container["name"]);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
    assert_eq!(
        seq(&sc["capabilities"]["drop"]),
        [Value::from("ALL")],
        "{name}"
    );
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][bound][resource].as_str().is_some(),
                "{name}: resources.{bound}.{resource}"
            );
        }
    }
}

/// Checks the variant's manifests; returns the app pod's volumes (by name).
fn check_variant(variant: &str, deployment: &str) -> (Vec<Value>, Value) {
    let docs = manifests(variant);
    let config_map = find(&docs, "ConfigMap", SIDECAR);
    let secret = find(&docs, "Secret", SIDECAR);
    let pod = &find(&docs, "Deployment", deployment)["spec"]["template"]["spec"];
    let config = str_of(&config_map["data"][CONFIG_FILE]);

    let sidecar = seq(&pod["initContainers"])
        .iter()
        .find(|c| c["name"] == SIDECAR)
        .expect("tokenwarden among the initContainers");
    assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
    let args: Vec<&str> = seq(&sidecar["args"]).iter().map(str_of).collect();
    assert_eq!(
        args,
        ["run", "--config", &format!("{CONFIG_DIR}/{CONFIG_FILE}")]
    );
    let config_volume = seq(&pod["volumes"])
        .iter()
        .find(|v| v["configMap"]["name"] == SIDECAR)
        .expect("the ConfigMap as a volume");
    assert!(seq(&sidecar["volumeMounts"])
        .iter()
        .any(|m| m["name"] == config_volume["name"] && m["mountPath"] == CONFIG_DIR));

    // Probes on the admin port the config listens on.
    let parsed: Value = serde_yaml_ng::from_str(config).unwrap();
    let admin_port: u64 = str_of(&parsed["admin"]["listen"])
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let port = seq(&sidecar["ports"])
        .iter()
        .find(|p| p["containerPort"] == admin_port)
        .expect("the admin port is declared");
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &sidecar[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], port["name"], "{probe}");
    }
    for c in seq(&pod["initContainers"])
        .iter()
        .chain(seq(&pod["containers"]))
    {
        assert_locked_down(pod, c);
    }

    // The config, with the environment the pod gives the sidecar.
    let mut env = sidecar_env(sidecar, secret);
    for var in variables(config) {
        assert!(
            env.contains_key(var),
            "{variant}: ${{{var}}} is not in the sidecar's env"
        );
    }
    let (code, out) = check(config, &env);
    assert_eq!(
        code,
        Some(64),
        "the placeholder store key is refused: {out}"
    );
    assert!(out.contains("token store"), "{out}");
    env.insert("TOKENWARDEN_STORE_KEY".into(), STORE_KEY.into());
    let (code, out) = check(config, &env);
    assert_eq!(
        code,
        Some(0),
        "{variant}: tokenwarden check refuses the ConfigMap:\n{out}"
    );
    assert!(out.contains("billing") && out.contains("crm"), "{out}");
    for (name, value) in &env {
        if name.ends_with("_SECRET") || name.ends_with("_TOKEN") || name.ends_with("_KEY") {
            assert!(!out.contains(value.as_str()), "check printed {name}");
        }
    }
    (seq(&pod["volumes"]).to_vec(), parsed)
}

#[test]
fn the_file_store_variant_is_one_replica_on_a_volume_with_a_config_check_accepts() {
    let (volumes, config) = check_variant("file-store", "app");
    let docs = manifests("file-store");
    let deployment = find(&docs, "Deployment", "app");
    assert_eq!(
        deployment["spec"]["replicas"], 1,
        "one process per store file"
    );
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(config["store"]["backend"], "sqlite");
    let store_dir = Path::new(str_of(&config["store"]["path"]))
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let pvc = find(&docs, "PersistentVolumeClaim", "tokenwarden-state");
    let volume = volumes
        .iter()
        .find(|v| v["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"])
        .expect("the PVC as a volume");
    let pod = &deployment["spec"]["template"]["spec"];
    let sidecar = &seq(&pod["initContainers"])[0];
    assert!(seq(&sidecar["volumeMounts"])
        .iter()
        .any(|m| m["name"] == volume["name"] && m["mountPath"] == store_dir.as_str()));
}

#[test]
fn the_redis_variant_is_several_replicas_without_a_token_volume() {
    let (volumes, config) = check_variant("redis", "app");
    let docs = manifests("redis");
    let deployment = find(&docs, "Deployment", "app");
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() > 1);
    assert_eq!(config["store"]["backend"], "redis");
    assert!(
        volumes.iter().all(|v| v["persistentVolumeClaim"].is_null()),
        "no PVC for tokens: {volumes:?}"
    );
    // The Secret's redis-url names the Service of redis.yaml.
    let service = find(&docs, "Service", "redis");
    let port = &seq(&service["spec"]["ports"])[0]["port"];
    let url = str_of(&find(&docs, "Secret", SIDECAR)["stringData"]["redis-url"]);
    assert_eq!(
        url,
        format!(
            "redis://{}:{}/0",
            str_of(&service["metadata"]["name"]),
            port.as_u64().unwrap()
        )
    );
    let redis = &find(&docs, "Deployment", "redis")["spec"]["template"]["spec"];
    for c in seq(&redis["containers"]) {
        assert_locked_down(redis, c);
    }
}

#[test]
fn the_redis_tls_variant_reaches_a_managed_redis_over_tls_as_an_acl_user() {
    let (volumes, config) = check_variant("redis-tls", "app");
    let docs = manifests("redis-tls");
    let deployment = find(&docs, "Deployment", "app");
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() > 1);
    assert!(
        volumes.iter().all(|v| v["persistentVolumeClaim"].is_null()),
        "no PVC for tokens: {volumes:?}"
    );
    assert_eq!(config["store"]["backend"], "redis");
    let secret = &find(&docs, "Secret", SIDECAR)["stringData"];
    assert!(str_of(&secret["redis-url"]).starts_with("rediss://"));
    // What check says of the store, with the pod's environment.
    let pod = &deployment["spec"]["template"]["spec"];
    let sidecar = &seq(&pod["initContainers"])[0];
    let mut env = sidecar_env(sidecar, find(&docs, "Secret", SIDECAR));
    env.insert("TOKENWARDEN_STORE_KEY".into(), STORE_KEY.into());
    let (code, out) = check(
        str_of(&find(&docs, "ConfigMap", SIDECAR)["data"][CONFIG_FILE]),
        &env,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("TLS with web PKI roots") && out.contains("user tokenwarden"),
        "{out}"
    );
    assert!(!out.contains(str_of(&secret["redis-password"])), "{out}");
    // No in-cluster Redis: a managed one.
    assert!(docs.iter().all(|d| d["metadata"]["name"] != "redis"));
}
