//! Bad configs → the exact problem lines the loader reports (`file:line:column: message`),
//! every problem of a file at once. `tokenwarden check` and `run` print these lines.

use std::path::Path;

/// One bad config and what the loader must say about it.
struct Case {
    name: &'static str,
    /// The main file, written as `config.yaml`.
    config: &'static str,
    /// Other files beside it (Fides configs).
    files: &'static [(&'static str, &'static str)],
    /// The environment `${VAR}` sees.
    env: &'static [(&'static str, &'static str)],
    /// The problem lines, with paths relative to the config's directory.
    expected: &'static [&'static str],
}

/// A Fides file that loads.
const FIDES_OK: &str = r#"saas_config:
  fides_key: acme
  name: Acme
  type: acme
  connector_params:
    - name: domain
      default_value: api.acme.example
    - name: client_id
    - name: client_secret
  client_config:
    protocol: https
    host: <domain>
    authentication:
      strategy: oauth2_client_credentials
      configuration:
        token_request:
          method: POST
          path: /oauth/token
          body: '{"client_id": "<client_id>", "client_secret": "<client_secret>"}'
  endpoints: []
"#;

const CASES: &[Case] = &[
    Case {
        name: "a type error and an unknown strategy hide nothing",
        config: r#"proxy:
  max_connections: lots
  listen: nowhere
connections:
  - key: api
    pkce: yes please
    secrets: { client_id: abc }
    client_config:
      protocol: https
      host: api.example
      authentication:
        strategy: oauth2_client_credential
        configuration:
          token_request:
            method: POST
            path: /oauth/token
            body: '{"client_id": "<client_id>", "client_secret": "<client_secret>", "code": "<code>"}'
"#,
        files: &[],
        env: &[],
        expected: &[
            "config.yaml:2:3: proxy.max_connections: invalid type: string \"lots\", expected usize",
            "config.yaml:3:3: proxy.listen: bad listen address `nowhere`: expected IP:PORT, such as 127.0.0.1:8080",
            "config.yaml:6:5: connections[0].pkce: invalid type: string \"yes please\", expected a boolean",
            "config.yaml:12:9: connections[0].client_config.authentication.strategy: connection `api`: unknown strategy `oauth2_client_credential`; supported strategies: oauth2_authorization_code, oauth2_client_credentials, oauth2_jwt_bearer, google_cloud_service_account, bearer, basic, api_key",
            "config.yaml:17:13: connections[0].client_config.authentication.configuration.token_request.body: connection `api`: placeholder <client_secret> is not resolved: add `client_secret` to the connection's secrets",
        ],
    },
    Case {
        name: "a misspelled key in any section",
        config: r#"proxy:
  listn: 127.0.0.1:8080
admin:
  tokn: abc
store:
  ky: abc
tls:
  ca_fil: x.pem
log:
  levl: debug
connections:
  - key: api
    saas_config: acme.yml
    secrets: { client_id: a, client_secret: b }
    pcke: true
"#,
        files: &[("acme.yml", FIDES_OK)],
        env: &[],
        expected: &[
            "config.yaml:2:3: proxy.listn: unknown field `listn`; did you mean `listen`?",
            "config.yaml:4:3: admin.tokn: unknown field `tokn`; did you mean `token`?",
            "config.yaml:6:3: store.ky: unknown field `ky`; did you mean `key`?",
            "config.yaml:8:3: tls.ca_fil: unknown field `ca_fil`; did you mean `ca_file`?",
            "config.yaml:10:3: log.levl: unknown field `levl`; did you mean `level`?",
            "config.yaml:15:5: connections[0].pcke: unknown field `pcke`; did you mean `pkce`?",
        ],
    },
    Case {
        name: "HTTP/2 settings",
        config: r#"proxy:
  stream_idle_timeout: 0s
connections:
  - key: api
    saas_config: acme.yml
    upstream_http2: sometimes
    secrets: { client_id: abc, client_secret: def }
"#,
        files: &[("acme.yml", FIDES_OK)],
        env: &[],
        expected: &[
            "config.yaml:2:3: proxy.stream_idle_timeout: must be more than 0s",
            "config.yaml:6:5: connections[0].upstream_http2: unknown value `sometimes`: expected auto, never or always",
        ],
    },
    Case {
        name: "placeholder settings",
        config: r#"connections:
  - key: api
    saas_config: acme.yml
    secrets: { client_id: abc, client_secret: def }
    placeholder: twph_short
    inject: sometimes
  - key: bare
    saas_config: acme.yml
    secrets: { client_id: abc, client_secret: def }
    require_placeholder: true
  - key: one
    saas_config: acme.yml
    secrets: { client_id: abc, client_secret: def }
    placeholder: twph_one_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
  - key: two
    saas_config: acme.yml
    secrets: { client_id: abc, client_secret: def }
    reverse_only: true
    placeholder: twph_one_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
"#,
        files: &[("acme.yml", FIDES_OK)],
        env: &[],
        expected: &[
            "config.yaml:5:5: connections[0].placeholder: a placeholder is `twph_` and at least 24 letters, digits, `_` or `-` (make one with `tokenwarden placeholder api`)",
            "config.yaml:6:5: connections[0].inject: unknown value `sometimes`: expected always, if_absent or placeholder",
            "config.yaml:10:5: connections[1].require_placeholder: require_placeholder needs the connection's `placeholder:`",
            "config.yaml:19:5: connections[3].placeholder: connection `one` has the same placeholder: each connection needs its own",
        ],
    },
    Case {
        name: "unknown top-level key",
        config: "proxy:\n  listen: 127.0.0.1:8080\nconnection:\n  - key: api\n",
        files: &[],
        env: &[],
        expected: &[
            "config.yaml:3:1: connection: unknown field `connection`; did you mean `connections`?",
        ],
    },
    Case {
        name: "unknown key inside a connection",
        config: r#"connections:
  - key: api
    saas_config: acme.yml
    secret:
      client_id: abc
"#,
        files: &[("acme.yml", FIDES_OK)],
        env: &[],
        expected: &[
            "config.yaml:4:5: connections[0].secret: unknown field `secret`; did you mean `secrets`?",
            // The rest of the connection is still checked: without `secrets`, nothing fills these.
            "acme.yml:19:11: saas_config.client_config.authentication.configuration.token_request.body: connection `api`: placeholder <client_id> is not resolved: add `client_id` to the connection's secrets",
            "acme.yml:19:11: saas_config.client_config.authentication.configuration.token_request.body: connection `api`: placeholder <client_secret> is not resolved: add `client_secret` to the connection's secrets",
        ],
    },
    Case {
        name: "a token_rejected_statuses entry that is not 4xx",
        config: r#"connections:
  - key: api
    saas_config: acme.yml
    secrets: { client_id: abc, client_secret: xyz }
    token_rejected_statuses: [401, 500]
"#,
        files: &[("acme.yml", FIDES_OK)],
        env: &[],
        expected: &[
            "config.yaml:5:36: connections[0].token_rejected_statuses[1]: `500` is not a 4xx status (a rejected token is answered 401, or 403 by some APIs)",
        ],
    },
    Case {
        name: "unset environment variable",
        config: r#"connections:
  - key: api
    saas_config: acme.yml
    secrets:
      client_id: ${ACME_ID}
      client_secret: ${ACME_SECRET}
"#,
        files: &[("acme.yml", FIDES_OK)],
        env: &[("ACME_ID", "abc")],
        expected: &[
            "config.yaml:6:7: connections[0].secrets.client_secret: environment variable `ACME_SECRET` is not set",
        ],
    },
    Case {
        name: "unset variables in checked values are reported once",
        config: r#"proxy:
  listen: ${TW_LISTEN}
admin:
  public_url: ${TW_PUBLIC_URL}
connections:
  - key: api
    client_config:
      protocol: https
      host: ${TW_HOST}
      authentication: { strategy: bearer, configuration: { token: abc } }
"#,
        files: &[],
        env: &[],
        // Not also "bad listen address `${TW_LISTEN}`", "not an http:// URL", "bad host".
        expected: &[
            "config.yaml:2:3: proxy.listen: environment variable `TW_LISTEN` is not set",
            "config.yaml:4:3: admin.public_url: environment variable `TW_PUBLIC_URL` is not set",
            "config.yaml:9:7: connections[0].client_config.host: environment variable `TW_HOST` is not set",
        ],
    },
    Case {
        name: "unquoted variable inside a flow mapping",
        config: r#"connections:
  - key: api
    saas_config: acme.yml
    secrets: { client_id: abc, client_secret: ${ACME_SECRET} }
"#,
        files: &[("acme.yml", FIDES_OK)],
        env: &[("ACME_SECRET", "xyz")],
        expected: &[
            "config.yaml:4:48: invalid YAML: did not find expected ',' or '}' (inside `{ … }` or `[ … ]`, quote a variable: \"${VAR}\")",
        ],
    },
    Case {
        name: "unknown strategy",
        config: r#"connections:
  - key: api
    client_config:
      protocol: https
      host: api.example.com
      authentication:
        strategy: oauth2_password
        configuration: {}
"#,
        files: &[],
        env: &[],
        expected: &[
            "config.yaml:7:9: connections[0].client_config.authentication.strategy: connection `api`: unknown strategy `oauth2_password`; supported strategies: oauth2_authorization_code, oauth2_client_credentials, oauth2_jwt_bearer, google_cloud_service_account, bearer, basic, api_key",
        ],
    },
    Case {
        name: "unresolved placeholder in the host",
        config: r#"connections:
  - key: api
    secrets: { client_id: abc, client_secret: xyz }
    client_config:
      protocol: https
      host: <subdomain>.example.com
      authentication:
        strategy: oauth2_client_credentials
        configuration:
          token_request:
            method: POST
            path: /oauth/token
            body: '{"client_id": "<client_id>", "client_secret": "<client_secret>"}'
"#,
        files: &[],
        env: &[],
        expected: &[
            "config.yaml:6:7: connections[0].client_config.host: connection `api`: placeholder <subdomain> is not resolved: add `subdomain` to the connection's secrets",
        ],
    },
    Case {
        name: "unresolved placeholder in the token_request body",
        config: r#"connections:
  - key: api
    secrets: { client_id: abc, client_secret: xyz }
    client_config:
      protocol: https
      host: api.example.com
      authentication:
        strategy: oauth2_client_credentials
        configuration:
          token_request:
            method: POST
            path: /oauth/token
            body: '{"client_id": "<client_id>", "audience": "<audience>", "code": "<code>"}'
"#,
        files: &[],
        env: &[],
        // `<code>` is filled at run time only in an authorization-code token request.
        expected: &[
            "config.yaml:13:13: connections[0].client_config.authentication.configuration.token_request.body: connection `api`: placeholder <audience> is not resolved: add `audience` to the connection's secrets",
            "config.yaml:13:13: connections[0].client_config.authentication.configuration.token_request.body: connection `api`: placeholder <code> is filled at run time only in the request that receives it (the token_request of oauth2_authorization_code)",
        ],
    },
    Case {
        name: "unresolved placeholder in a Fides file",
        config: r#"connections:
  - key: acme
    saas_config: acme.yml
"#,
        files: &[("acme.yml", FIDES_OK)],
        env: &[],
        expected: &[
            "acme.yml:19:11: saas_config.client_config.authentication.configuration.token_request.body: connection `acme`: placeholder <client_id> is not resolved: add `client_id` to the connection's secrets",
            "acme.yml:19:11: saas_config.client_config.authentication.configuration.token_request.body: connection `acme`: placeholder <client_secret> is not resolved: add `client_secret` to the connection's secrets",
        ],
    },
    Case {
        name: "bad listen addresses",
        config: "proxy:\n  listen: localhost:8080\nadmin:\n  listen: 127.0.0.1:99999\n",
        files: &[],
        env: &[],
        expected: &[
            "config.yaml:2:3: proxy.listen: bad listen address `localhost:8080`: expected IP:PORT, such as 127.0.0.1:8080",
            "config.yaml:4:3: admin.listen: bad listen address `127.0.0.1:99999`: expected IP:PORT, such as 127.0.0.1:9090",
        ],
    },
    Case {
        name: "duplicate connection keys",
        config: r#"connections:
  - key: acme
    saas_config: acme.yml
    secrets: { client_id: abc, client_secret: xyz }
  - key: acme
    saas_config: acme.yml
    secrets: { client_id: def, client_secret: uvw }
"#,
        files: &[("acme.yml", FIDES_OK)],
        env: &[],
        expected: &["config.yaml:5:5: connections[1].key: duplicate connection key `acme`"],
    },
    Case {
        name: "missing saas_config file",
        config: r#"connections:
  - key: acme
    saas_config: fides/acme.yml
    secrets: { client_id: abc, client_secret: xyz }
"#,
        files: &[],
        env: &[],
        expected: &[
            "config.yaml:3:5: connections[0].saas_config: connection `acme`: cannot read the Fides file `fides/acme.yml`: No such file or directory (os error 2)",
        ],
    },
    Case {
        name: "saas_config file with bad YAML",
        config: r#"connections:
  - key: acme
    saas_config: acme.yml
    secrets: { client_id: abc, client_secret: xyz }
"#,
        files: &[(
            "acme.yml",
            "saas_config:\n  fides_key: acme\n  name: [Acme\n  type: acme\n",
        )],
        env: &[],
        expected: &[
            "acme.yml:4:7: connection `acme`: invalid YAML: did not find expected ',' or ']'",
        ],
    },
    Case {
        name: "saas_config file that is not a Fides config",
        config: r#"connections:
  - key: acme
    saas_config: acme.yml
    secrets: { client_id: abc, client_secret: xyz }
"#,
        files: &[("acme.yml", "fides_key: acme\nname: Acme\n")],
        env: &[],
        expected: &["acme.yml:1:1: connection `acme`: missing field `saas_config`"],
    },
    Case {
        name: "both saas_config and client_config",
        config: r#"connections:
  - key: acme
    saas_config: acme.yml
    client_config: { protocol: https, host: api.acme.example }
    secrets: { client_id: abc, client_secret: xyz }
"#,
        files: &[("acme.yml", FIDES_OK)],
        env: &[],
        expected: &[
            "config.yaml:4:5: connections[0].client_config: connection `acme` has both saas_config and client_config; keep one",
        ],
    },
    Case {
        name: "neither saas_config nor client_config",
        config: "connections:\n  - key: acme\n    secrets: { client_id: abc }\n",
        files: &[],
        env: &[],
        expected: &[
            "config.yaml:2:5: connections[0]: connection `acme` needs a saas_config (a Fides file) or a client_config",
        ],
    },
    Case {
        name: "several problems at once, in file order",
        config: r#"proxy:
  listen: 8080
  colour: blue
admin:
  listen: 127.0.0.1:9090
mystery: true
connections:
  - key: acme
    saas_config: acme.yml
    secrets:
      client_id: ${ACME_ID}
  - key: acme
    client_config:
      protocol: https
      host: <tenant>.example.com
      authentication: { strategy: oauth2_magic }
  - key: other
    saas_config: missing.yml
"#,
        files: &[("acme.yml", FIDES_OK)],
        env: &[],
        expected: &[
            "config.yaml:2:3: proxy.listen: bad listen address `8080`: expected IP:PORT, such as 127.0.0.1:8080",
            "config.yaml:3:3: proxy.colour: unknown field `colour`, expected one of `listen`, `connect_timeout`, `response_timeout`, `upstream_read_timeout`, `header_read_timeout`, `via_pseudonym`, `connect_passthrough`, `worker_threads`, `max_connections`, `max_requests_per_connection`, `max_buffered_head_bytes`, `max_connection_lifetime`, `body_read_timeout`, `tunnel_idle_timeout`, `stream_idle_timeout`, `access_log`, `unauthorized_refresh_interval`, `intercept`",
            "config.yaml:6:1: mystery: unknown field `mystery`, expected one of `proxy`, `admin`, `store`, `tls`, `log`, `connections`, `templates`",
            "config.yaml:11:7: connections[0].secrets.client_id: environment variable `ACME_ID` is not set",
            "config.yaml:12:5: connections[1].key: duplicate connection key `acme`",
            "config.yaml:15:7: connections[1].client_config.host: connection `acme`: placeholder <tenant> is not resolved: add `tenant` to the connection's secrets",
            "config.yaml:16:25: connections[1].client_config.authentication.strategy: connection `acme`: unknown strategy `oauth2_magic`; supported strategies: oauth2_authorization_code, oauth2_client_credentials, oauth2_jwt_bearer, google_cloud_service_account, bearer, basic, api_key",
            "config.yaml:18:5: connections[2].saas_config: connection `other`: cannot read the Fides file `missing.yml`: No such file or directory (os error 2)",
            "acme.yml:19:11: saas_config.client_config.authentication.configuration.token_request.body: connection `acme`: placeholder <client_secret> is not resolved: add `client_secret` to the connection's secrets",
        ],
    },
    Case {
        name: "an empty file",
        config: "",
        files: &[],
        env: &[],
        expected: &["config.yaml: connections: at least one connection or template is required (see docs/configuration.md: Connections and strategies, and docs/runtime-connections.md)"],
    },
    Case {
        name: "an empty connections list",
        config: "proxy:\n  listen: 127.0.0.1:8080\nconnections: []\n",
        files: &[],
        env: &[],
        expected: &["config.yaml:3:1: connections: at least one connection or template is required (see docs/configuration.md: Connections and strategies, and docs/runtime-connections.md)"],
    },
    Case {
        name: "a passthrough entry for a connection's host, on another port",
        config: "proxy:\n  connect_passthrough: [\"api.acme.example:8443\", \"other.example:443\"]\nconnections:\n  - key: acme\n    saas_config: acme.yml\n    secrets: { client_id: a, client_secret: b }\n",
        files: &[("acme.yml", FIDES_OK)],
        env: &[],
        expected: &["config.yaml:2:25: proxy.connect_passthrough[0]: `api.acme.example:8443` can never be tunnelled: its host is connection `acme`'s, and a host with credentials is never tunnelled untouched: CONNECT to it is refused, or intercepted with proxy.intercept (send http:// requests, or turn interception on)"],
    },
    Case {
        name: "zero idle timeouts and a head budget below one head",
        config: "proxy:\n  tunnel_idle_timeout: 0s\n  upstream_read_timeout: 0\n  max_buffered_head_bytes: 1000\nconnections:\n  - key: acme\n    saas_config: acme.yml\n    secrets: { client_id: a, client_secret: b }\n",
        files: &[("acme.yml", FIDES_OK)],
        env: &[],
        expected: &[
            "config.yaml:2:3: proxy.tunnel_idle_timeout: must be more than 0s",
            "config.yaml:3:3: proxy.upstream_read_timeout: must be more than 0s",
            "config.yaml:4:3: proxy.max_buffered_head_bytes: must be at least 65536 (one request head of the largest size)",
        ],
    },
    Case {
        name: "redis store without url or key, with a file path and a tiny lease",
        config: "store:\n  backend: redis\n  path: tokens.db\n  lease_ttl: 10ms\nconnections: []\n",
        files: &[],
        env: &[],
        expected: &[
            "config.yaml:1:1: store.key: is required with `backend: redis` (every replica needs the same key)",
            "config.yaml:1:1: store.url: is required with `backend: redis` (or `sentinel`, or `cluster`), such as redis://127.0.0.1:6379/0",
            "config.yaml:3:3: store.path: only applies with `backend: sqlite`; Redis holds the tokens",
            "config.yaml:4:3: store.lease_ttl: must be at least 5s (a token request and the write of its result must fit in it)",
        ],
    },
    Case {
        name: "an unknown backend",
        config: "store:\n  backend: memcached\nconnections: []\n",
        files: &[],
        env: &[],
        expected: &["config.yaml:2:3: store.backend: unknown value `memcached`: expected sqlite or redis"],
    },
    Case {
        name: "redis-only fields on the file store",
        config: "store:\n  path: tokens.db\n  poll_interval: 1s\n  url: redis://127.0.0.1\nconnections: []\n",
        files: &[],
        env: &[],
        expected: &[
            "config.yaml:3:3: store.poll_interval: only applies with `backend: redis`",
            "config.yaml:4:3: store.url: only applies with `backend: redis`",
        ],
    },
    Case {
        name: "a redis URL that is not one is not echoed",
        config: "store:\n  backend: redis\n  url: \"http://:hunter2@cache:6379\"\n  key: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\nconnections: []\n",
        files: &[],
        env: &[],
        expected: &[
            "config.yaml:3:3: store.url: is not a redis://HOST[:PORT][/DB] or rediss://HOST[:PORT][/DB] URL",
        ],
    },
    Case {
        name: "a redis URL that turns certificate verification off",
        config: "store:\n  backend: redis\n  url: \"rediss://:hunter2@cache:6380/#insecure\"\n  key: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\nconnections: []\n",
        files: &[],
        env: &[],
        expected: &[
            "config.yaml:3:3: store.url: takes no #fragment: the server's certificate is always verified (for a private CA, set store.tls.ca_file)",
        ],
    },
    Case {
        name: "redis credentials given twice, or a user without a password",
        config: "store:\n  backend: redis\n  url: \"redis://:hunter2@cache:6379\"\n  password: hunter3\n  password_file: pw.txt\n  key: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n  sentinel:\n    master_name: main\n    nodes: [\"s0:26379\"]\n    username: watcher\nconnections: []\n",
        files: &[("pw.txt", "hunter4\n")],
        env: &[],
        expected: &[
            "config.yaml:5:3: store.password_file: give either `password` or `password_file`, not both",
            "config.yaml:7:3: store.sentinel: give either `url` (one server) or `sentinel` (the sentinels that name the master), not both",
        ],
    },
    Case {
        name: "a sentinel section with no master name, a bad node and a user without a password",
        config: "store:\n  backend: redis\n  key: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n  min_replicas_acked: 40\n  sentinel:\n    nodes: [\"s0:26379\", \"redis://s1\"]\n    username: watcher\n    tls: true\nconnections: []\n",
        files: &[],
        env: &[],
        expected: &[
            "config.yaml:4:3: store.min_replicas_acked: must be at most 16",
            "config.yaml:5:3: store.sentinel.master_name: is required: the name the sentinels monitor the master under",
            "config.yaml:6:25: store.sentinel.nodes[1]: `redis://s1` is not HOST[:PORT]",
            "config.yaml:7:5: store.sentinel.username: needs a `password` or `password_file` (an ACL user signs in with both)",
            "config.yaml:8:5: store.sentinel.tls: TLS to the sentinels uses the data nodes' `store.tls`: add it",
        ],
    },
    Case {
        name: "a redis server name that is no name",
        config: "store:\n  backend: redis\n  url: \"rediss://10.0.0.5:6380\"\n  key: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n  tls:\n    server_name: \"redis internal\"\nconnections: []\n",
        files: &[],
        env: &[],
        expected: &[
            "config.yaml:6:5: store.tls.server_name: `redis internal` is not a DNS name or IP address",
        ],
    },
    Case {
        name: "a redis server name with a cluster",
        config: "store:\n  backend: redis\n  key: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n  tls:\n    server_name: redis.internal\n  cluster:\n    nodes: [\"c0:7000\"]\nconnections: []\n",
        files: &[],
        env: &[],
        expected: &[
            "config.yaml:5:5: store.tls.server_name: is not available with `store.cluster`: its nodes are reached at the addresses the cluster announces, each verified against its own; make them names on the certificates (`cluster-announce-hostname` and `cluster-preferred-endpoint-type hostname` in redis.conf)",
        ],
    },
    Case {
        name: "a redis cluster beside a url",
        config: "store:\n  backend: redis\n  url: \"redis://:hunter2@cache:6379\"\n  key: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n  cluster:\n    nodes: [\"c0:7000\"]\nconnections: []\n",
        files: &[],
        env: &[],
        expected: &[
            "config.yaml:5:3: store.cluster: give one of `url` (one server), `sentinel` (the sentinels that name the master) or `cluster` (the nodes of a Redis Cluster), not several",
        ],
    },
    Case {
        name: "a redis cluster beside sentinels",
        config: "store:\n  backend: redis\n  key: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n  sentinel:\n    master_name: main\n    nodes: [\"s0:26379\"]\n  cluster:\n    nodes: [\"c0:7000\"]\nconnections: []\n",
        files: &[],
        env: &[],
        expected: &[
            "config.yaml:7:3: store.cluster: give one of `url` (one server), `sentinel` (the sentinels that name the master) or `cluster` (the nodes of a Redis Cluster), not several",
        ],
    },
    Case {
        name: "a redis cluster without nodes, and a key prefix with a hash tag",
        config: "store:\n  backend: redis\n  key: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n  key_prefix: \"tw:{x}:\"\n  cluster:\n    nodes: []\nconnections: []\n",
        files: &[],
        env: &[],
        expected: &[
            "config.yaml:4:3: store.key_prefix: holds `{` or `}`, which a Redis Cluster reads as a hash tag: leave them out",
            "config.yaml:6:5: store.cluster.nodes: is required: HOST:PORT of one or more cluster nodes (the others are found from them), such as [\"redis-0:6379\", \"redis-1:6379\"]",
        ],
    },
    Case {
        name: "a redis cluster with bad nodes, one a URL with a password (never quoted)",
        config: "store:\n  backend: redis\n  key: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n  cluster:\n    nodes: [\"c0:7000\", \"redis://:hunter2@c1\", \"c2:x\"]\nconnections: []\n",
        files: &[],
        env: &[],
        expected: &[
            "config.yaml:5:24: store.cluster.nodes[1]: is not HOST[:PORT]: give credentials as `store.username` and `store.password`, not in a node's address",
            "config.yaml:5:47: store.cluster.nodes[2]: `c2:x` is not HOST[:PORT]",
        ],
    },
    Case {
        name: "redis TLS settings that cannot work",
        config: "store:\n  backend: redis\n  url: \"redis://cache:6379\"\n  key: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n  tls:\n    ca_file: ca.pem\nconnections: []\n",
        files: &[("ca.pem", "not a certificate\n")],
        env: &[],
        expected: &[
            "config.yaml:5:3: store.tls: TLS to one server is chosen by the URL: use rediss://",
        ],
    },
    Case {
        name: "a redis CA that is not PEM and a certificate without its key",
        config: "store:\n  backend: redis\n  url: \"rediss://cache:6380\"\n  key: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n  tls:\n    ca_file: ca.pem\n    cert_file: client.pem\nconnections: []\n",
        files: &[("ca.pem", "not a certificate\n")],
        env: &[],
        expected: &[
            "config.yaml:5:3: store.tls.key_file: is required with `cert_file`: the client certificate's private key",
            "config.yaml:6:5: store.tls.ca_file: ca.pem holds no usable PEM certificate",
        ],
    },
    Case {
        name: "client_auth: a key too short to sign, a field of the other method, an unknown method, a GET token request",
        config: r#"connections:
  - key: short
    secrets: { client_id: abc }
    client_auth:
      method: private_key_jwt
      key: ${SHORT_KEY}
      upstream: true
    client_config: { protocol: https, host: a.example, authentication: { strategy: oauth2_client_credentials, configuration: { token_request: { method: POST, path: /token } } } }
  - key: unknown
    secrets: { client_id: abc }
    client_auth: { method: client_secret_jwt }
    client_config: { protocol: https, host: b.example, authentication: { strategy: oauth2_client_credentials, configuration: { token_request: { method: POST, path: /token } } } }
  - key: get
    secrets: { client_id: abc }
    client_auth: { method: private_key_jwt, key: "${KEY}" }
    client_config: { protocol: https, host: c.example, authentication: { strategy: oauth2_client_credentials, configuration: { token_request: { method: GET, path: /token } } } }
  - key: mtls
    client_auth: { method: tls_client_auth, key: "${KEY}", alg: RS256 }
    client_config: { protocol: https, host: d.example, authentication: { strategy: oauth2_client_credentials, configuration: { token_request: { method: POST, path: /token } } } }
"#,
        files: &[],
        env: &[
            ("SHORT_KEY", include_str!("../fixtures/keys/rsa-1024.pem")),
            ("KEY", include_str!("../fixtures/keys/rsa.pem")),
        ],
        expected: &[
            "config.yaml:6:7: connections[0].client_auth.key: the key cannot sign: RSA keys shorter than 2048 bits are refused",
            "config.yaml:7:7: connections[0].client_auth.upstream: upstream does not apply to private_key_jwt",
            "config.yaml:11:20: connections[1].client_auth.method: unknown method `client_secret_jwt`: expected private_key_jwt or tls_client_auth",
            "config.yaml:15:5: connections[2].client_auth: private_key_jwt sends its client assertion in the body: the token and refresh requests must be POSTs",
            "config.yaml:18:5: connections[3].client_auth.cert: the certificate is missing: tls_client_auth needs `cert`",
            "config.yaml:18:60: connections[3].client_auth.alg: alg does not apply to tls_client_auth",
        ],
    },
    Case {
        name: "oauth2_jwt_bearer: no audience, a GET token request, an encrypted key",
        config: r#"connections:
  - key: box
    secrets: { client_id: abc, private_key: "${ENCRYPTED}" }
    client_config:
      protocol: https
      host: api.box.com
      authentication:
        strategy: oauth2_jwt_bearer
        configuration:
          token_request: { method: GET, path: /oauth2/token }
          assertion:
            issuer: <client_id>
            key: <private_key>
            lifetime: 7200
            claims: { box_sub_type: enterprise }
"#,
        files: &[],
        env: &[("ENCRYPTED", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n")],
        expected: &[
            "config.yaml:10:28: connections[0].client_config.authentication.configuration.token_request.method: connection `box`: oauth2_jwt_bearer sends its assertion in the body: the token request must be a POST",
            "config.yaml:11:11: connections[0].client_config.authentication.configuration.assertion: connection `box`: the assertion needs an `audience` (the authorization server's token endpoint URL, or what the provider documents)",
            "config.yaml:13:13: connections[0].client_config.authentication.configuration.assertion.key: connection `box`: the key is encrypted (a passphrase-protected PEM); give tokenwarden the decrypted key, e.g. from `openssl pkey -in key.pem -out decrypted.pem`",
            "config.yaml:14:13: connections[0].client_config.authentication.configuration.assertion.lifetime: connection `box`: lifetime must be between 1 and 3600 seconds",
        ],
    },
    Case {
        name: "google_cloud_service_account: missing fields, a key that is not RSA, keyfile_creds that is not JSON",
        config: r#"connections:
  - key: sheets
    secrets: { client_email: sa@p.iam.gserviceaccount.com, private_key: "${EC_KEY}" }
    client_config: { protocol: https, host: sheets.googleapis.com, authentication: { strategy: google_cloud_service_account } }
  - key: drive
    secrets: { keyfile_creds: "not json" }
    client_config: { protocol: https, host: www.googleapis.com, authentication: { strategy: google_cloud_service_account, configuration: { scope: [x] } } }
"#,
        files: &[],
        env: &[("EC_KEY", include_str!("../fixtures/keys/ec.pem"))],
        expected: &[
            "config.yaml:3:5: connections[0].secrets: google_cloud_service_account needs project_id in secrets (or keyfile_creds, the key file)",
            "config.yaml:3:60: connections[0].secrets.private_key: the service account's private_key: alg RS256 cannot sign with this P-256 EC key",
            "config.yaml:6:16: connections[1].secrets.keyfile_creds: keyfile_creds is not a service-account key file (a JSON object)",
            "warning: config.yaml:7:140: connections[1].client_config.authentication.configuration.scope: connection `drive`: unknown key `scope` is ignored (as Fides ignores it); did you mean `scopes`?",
        ],
    },
];

/// Loads `case` from a fresh directory → its problem lines, paths relative to that directory.
fn problems(case: &Case) -> Result<Vec<String>, String> {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in case.files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, case.config).unwrap();
    let env = |name: &str| {
        case.env
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned())
    };
    match tokenwarden::config::load_with_env(&file, &env) {
        Ok(config) => Err(format!(
            "loaded with {} connection(s)",
            config.connections.len()
        )),
        Err(problems) => Ok(relative(&problems.to_string(), dir.path())),
    }
}

fn relative(text: &str, dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    text.lines().map(|l| l.replace(&prefix, "")).collect()
}

#[test]
fn each_bad_config_gets_its_exact_problem_lines() {
    let mut failures = Vec::new();
    for case in CASES {
        match problems(case) {
            Ok(lines) if lines == case.expected => {}
            Ok(lines) => failures.push(format!(
                "{}:\n  expected {:#?}\n  got      {:#?}",
                case.name, case.expected, lines
            )),
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_cases_are_one_fix_away_from_loading() {
    // The fixture is valid on its own, so each case fails for its own reason.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("acme.yml"), FIDES_OK).unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "connections:\n  - key: acme\n    saas_config: acme.yml\n    secrets:\n      client_id: ${ACME_ID}\n      client_secret: xyz\n",
    )
    .unwrap();
    let config = tokenwarden::config::load_with_env(&file, &|name| {
        (name == "ACME_ID").then(|| "abc".to_owned())
    })
    .unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(config.connections.len(), 1);
    assert_eq!(config.connections[0].upstream.authority, "api.acme.example");
}

#[test]
fn problems_never_show_a_secret_value() {
    // A bad strategy next to real secrets: the message names the fields, not their values.
    let case = Case {
        name: "secrets in a broken connection",
        config: r#"connections:
  - key: api
    secrets:
      client_secret: ${ACME_SECRET}
      api_token: literal-token-value
    client_config:
      protocol: https
      host: <nope>
      authentication:
        strategy: bearer
        configuration: { token: "<api_token>-<missing>" }
"#,
        files: &[],
        env: &[("ACME_SECRET", "env-secret-value")],
        expected: &[],
    };
    let lines = problems(&case).unwrap();
    assert!(!lines.is_empty());
    let text = lines.join("\n");
    assert!(
        text.contains("<missing>") && text.contains("<nope>"),
        "{text}"
    );
    for secret in ["env-secret-value", "literal-token-value"] {
        assert!(!text.contains(secret), "{text}");
    }
}
