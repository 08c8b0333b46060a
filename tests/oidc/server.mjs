// Loopback OAuth2/OIDC provider for tokenwarden integration tests.
//
// Prints exactly one stdout line, `LISTENING http://127.0.0.1:<port>`, then serves until
// stdin closes (parent died) or SIGTERM/SIGINT. Everything else goes to stderr.
// Env: OIDC_REDIRECT_URI (required), OIDC_ACCESS_TTL (seconds, default 3); optional, for
// client authentication without a secret (README "Clients without a secret"):
// OIDC_TLS_CERT + OIDC_TLS_KEY + OIDC_TLS_CA serve HTTPS (the issuer becomes https://…) and
// ask every client for a certificate; OIDC_TLS_CLIENT_DN registers the tls_client_auth client
// `mtls`; OIDC_PKJWT_RSA_KEY / OIDC_PKJWT_EC_KEY (a PEM key file, private or public) register
// the private_key_jwt clients `pkjwt-rsa` / `pkjwt-ec` (OIDC_PKJWT_RSA_KID, OIDC_PKJWT_EC_KID:
// the kid of their JWK; OIDC_PKJWT_EC_CERT: the certificate whose x5t its assertions may carry).
import { createHash, createPublicKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';

// oidc-provider prints some notices with console.info (stdout); keep stdout for the one line.
console.info = console.log = (...args) => console.error(...args);
const quiet = [/devInteractions is enabled/, /in-memory adapter is used/, /already parsed request body detected/];
const warn = console.warn;
console.warn = (...args) => {
  if (!quiet.some((re) => re.test(String(args[0])))) warn(...args);
};

const { default: Provider } = await import('oidc-provider');

const redirectUri = process.env.OIDC_REDIRECT_URI;
if (!redirectUri) {
  console.error('OIDC_REDIRECT_URI is required');
  process.exit(2);
}
const accessTtl = Number(process.env.OIDC_ACCESS_TTL ?? 3);
if (!Number.isInteger(accessTtl) || accessTtl < 1) {
  console.error(`OIDC_ACCESS_TTL must be a positive integer, got ${process.env.OIDC_ACCESS_TTL}`);
  process.exit(2);
}

// Exit when the parent goes away (stdin EOF) or asks us to.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));

const env = process.env;
const tlsFiles = [env.OIDC_TLS_CERT, env.OIDC_TLS_KEY, env.OIDC_TLS_CA];
if (tlsFiles.some(Boolean) && !tlsFiles.every(Boolean)) {
  console.error('OIDC_TLS_CERT, OIDC_TLS_KEY and OIDC_TLS_CA go together');
  process.exit(2);
}
const tls = tlsFiles.every(Boolean);
if (env.OIDC_TLS_CLIENT_DN && !tls) {
  console.error('OIDC_TLS_CLIENT_DN needs HTTPS (OIDC_TLS_CERT, OIDC_TLS_KEY, OIDC_TLS_CA)');
  process.exit(2);
}

// Bind first so the issuer can carry the real ephemeral port.
let handler = (_req, res) => { res.writeHead(503).end(); };
// With TLS every client is asked for a certificate but none is required (browsers and the
// test's own client send none); `socket.authorized` says whether one chains to OIDC_TLS_CA.
const server = tls
  ? https.createServer({
    cert: readFileSync(env.OIDC_TLS_CERT),
    key: readFileSync(env.OIDC_TLS_KEY),
    ca: readFileSync(env.OIDC_TLS_CA),
    requestCert: true,
    rejectUnauthorized: false,
  }, (req, res) => handler(req, res))
  : http.createServer((req, res) => handler(req, res));
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const issuer = `${tls ? 'https' : 'http'}://127.0.0.1:${server.address().port}`;

const common = {
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: [redirectUri],
  scope: 'openid offline_access api:read',
};
const clients = [
  { ...common, client_id: 'cs-post', client_secret: 'post-secret', token_endpoint_auth_method: 'client_secret_post' },
  { ...common, client_id: 'cs-basic', client_secret: 's3cr:et%+/=&x', token_endpoint_auth_method: 'client_secret_basic' },
];
// The clients without a secret also have client_credentials.
const secretless = { ...common, grant_types: ['client_credentials', 'authorization_code', 'refresh_token'] };
// Their public JWK from a PEM key file (a private key's public half).
const publicJwk = (file, kid) => ({ ...createPublicKey(readFileSync(file)).export({ format: 'jwk' }), kid, use: 'sig' });
// x5t the private_key_jwt clients' assertions must carry when they carry one: base64url SHA-1
// of the certificate's DER (RFC 7515 §4.1.7).
const expectedX5t = {};
if (env.OIDC_PKJWT_RSA_KEY) {
  clients.push({ ...secretless, client_id: 'pkjwt-rsa', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [publicJwk(env.OIDC_PKJWT_RSA_KEY, env.OIDC_PKJWT_RSA_KID ?? 'rsa-1')] } });
}
if (env.OIDC_PKJWT_EC_KEY) {
  clients.push({ ...secretless, client_id: 'pkjwt-ec', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [publicJwk(env.OIDC_PKJWT_EC_KEY, env.OIDC_PKJWT_EC_KID ?? 'ec-1')] } });
  if (env.OIDC_PKJWT_EC_CERT) {
    expectedX5t['pkjwt-ec'] = createHash('sha1').update(new X509Certificate(readFileSync(env.OIDC_PKJWT_EC_CERT)).raw).digest('base64url');
  }
}
if (env.OIDC_TLS_CLIENT_DN) {
  clients.push({ ...secretless, client_id: 'mtls', token_endpoint_auth_method: 'tls_client_auth', tls_client_auth_subject_dn: env.OIDC_TLS_CLIENT_DN });
}
const authMethodOf = Object.fromEntries(clients.map((c) => [c.client_id, c.token_endpoint_auth_method]));

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const DAY = 24 * 60 * 60;

// The certificate the client presented on this request's TLS connection, if any.
const peerCertificate = (ctx) => {
  const peer = ctx.req.socket.getPeerCertificate?.();
  return peer?.raw ? new X509Certificate(peer.raw) : undefined;
};
// A certificate's subject as an RFC 4514 string (most specific RDN first), e.g. `CN=client`.
const subjectDn = (cert) => cert.subject.split('\n').reverse().join(',');

// oidc-provider's own in-memory adapter is an LRU of 1000 entries: with a few hundred
// accounts refreshing every few seconds it evicts idle grants, and their next refresh fails
// with invalid_grant. This one is the same, in a Map that only expiry empties.
const storage = new Map(); // key -> { value, expiresAt (ms, or Infinity) }
const put = (key, value, expiresIn) => storage.set(key, { value, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : Infinity });
const get = (key) => {
  const entry = storage.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt <= Date.now()) { storage.delete(key); return undefined; }
  return entry.value;
};
const grantable = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest']);
class MapAdapter {
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  async destroy(id) { storage.delete(this.key(id)); }
  async consume(id) { const v = get(this.key(id)); if (v) v.consumed = Math.floor(Date.now() / 1000); }
  async find(id) { return get(this.key(id)); }
  async findByUid(uid) { return this.find(get(`sessionUid:${uid}`)); }
  async findByUserCode(userCode) { return this.find(get(`userCode:${userCode}`)); }
  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    if (this.model === 'Session') put(`sessionUid:${payload.uid}`, id, expiresIn);
    const { grantId, userCode } = payload;
    if (grantable.has(this.model) && grantId) {
      const tokens = get(`grant:${grantId}`);
      if (tokens) tokens.push(key); else put(`grant:${grantId}`, [key]);
    }
    if (userCode) put(`userCode:${userCode}`, id, expiresIn);
    put(key, payload, expiresIn);
  }
  async revokeByGrantId(grantId) {
    for (const key of get(`grant:${grantId}`) ?? []) storage.delete(key);
    storage.delete(`grant:${grantId}`);
  }
}

const provider = new Provider(issuer, {
  adapter: MapAdapter,
  clients,
  jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: 'test' }] },
  cookies: { keys: ['tokenwarden-test-cookie-key'] },
  scopes: ['openid', 'offline_access', 'api:read'],
  pkce: { methods: ['S256'], required: () => true },
  // Refresh tokens are issued by the default issueRefreshToken: client allows refresh_token AND the
  // code carries offline_access (which the authorize request only keeps with prompt=consent).
  rotateRefreshToken: true,
  clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt', ...(tls ? ['tls_client_auth'] : [])],
  // enabledJWA.clientAuthSigningAlgValues keeps its default, which has RS256, PS256 and ES256.
  features: {
    devInteractions: { enabled: true },
    resourceIndicators: { enabled: false },
    clientCredentials: { enabled: true },
    mTLS: {
      enabled: tls,
      tlsClientAuth: tls,
      getCertificate: peerCertificate,
      certificateAuthorized: (ctx) => ctx.req.socket.authorized === true,
      certificateSubjectMatches: (ctx, property, expected) => property === 'tls_client_auth_subject_dn'
        && subjectDn(peerCertificate(ctx)) === expected,
    },
  },
  findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  ttl: {
    AccessToken: accessTtl,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 14 * DAY,
    Interaction: 3600,
    Session: 14 * DAY,
    Grant: 14 * DAY,
    ClientCredentials: 600,
    DeviceCode: 600,
    BackchannelAuthenticationRequest: 600,
  },
});

// ---- /__stats + token-endpoint accounting (and strict client auth method) ----
// POST /__hold?ms=N holds the next token request N ms before the provider sees it; if its
// client went away meanwhile (a replica killed mid-refresh) it is dropped unprocessed.
// `accounts` counts the grants answered 200 per account and grant type, `userinfo` the
// answers of /me by status; GET /__issued lists
// every access and refresh token issued (for tests that check logs never show one).
const stats = { token_requests: 0, grants: {}, auth_methods: {}, errors: {}, held: 0, abandoned: 0, accounts: {}, userinfo: {}, clients: {}, client_certificates: {} };
const issued = { access_tokens: [], refresh_tokens: [] };
// Every client_assertion the token endpoint received, decoded (GET /__assertions).
const assertions = [];
const decodeJwtPart = (part) => { try { return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')); } catch { return null; } };
let holdNextMs = 0;
const bump = (obj, key) => { obj[key] = (obj[key] ?? 0) + 1; };
const readBody = (req) => new Promise((resolve, reject) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => resolve(Buffer.concat(chunks)));
  req.on('error', reject);
});
const oauthError = (ctx, status, error, description) => {
  ctx.status = status;
  ctx.body = { error, error_description: description };
  bump(stats.errors, error);
};

provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && ctx.path === '/__stats') {
    ctx.set('cache-control', 'no-store');
    ctx.body = stats;
    return;
  }
  if (ctx.method === 'GET' && ctx.path === '/__assertions') {
    ctx.set('cache-control', 'no-store');
    ctx.body = assertions;
    return;
  }
  if (ctx.method === 'GET' && ctx.path === '/__issued') {
    ctx.set('cache-control', 'no-store');
    ctx.body = issued;
    return;
  }
  if (ctx.method === 'POST' && ctx.path === '/__hold') {
    holdNextMs = Number(ctx.query.ms ?? 0);
    ctx.status = 204;
    return;
  }
  if (ctx.path === '/me') {
    try { await next(); } finally { bump(stats.userinfo, String(ctx.status)); }
    return;
  }
  if (ctx.method !== 'POST' || ctx.path !== '/token') return next();

  if (holdNextMs > 0) {
    const ms = holdNextMs;
    holdNextMs = 0;
    let gone = false;
    ctx.res.once('close', () => { gone = true; });
    stats.held += 1;
    await new Promise((resolve) => setTimeout(resolve, ms));
    stats.held -= 1;
    if (gone || ctx.req.socket.destroyed) {
      stats.abandoned += 1;
      ctx.respond = false;
      return;
    }
  }
  stats.token_requests += 1;
  // Read the body here so we can count/inspect it; oidc-provider then uses the pre-read body.
  const raw = await readBody(ctx.req);
  ctx.req.body = raw;
  const form = new URLSearchParams(raw.toString('utf8'));
  bump(stats.grants, form.get('grant_type') ?? '(none)');

  // oidc-provider accepts either secret transport for either client; be strict like a real AS.
  const authz = ctx.get('authorization');
  let used = 'none';
  let clientId = form.get('client_id');
  if (/^basic /i.test(authz)) {
    used = 'client_secret_basic';
    const decoded = Buffer.from(authz.slice(6).trim(), 'base64').toString('utf8');
    try { clientId = decodeURIComponent(decoded.split(':')[0].replace(/\+/g, '%20')); } catch { clientId = null; }
  } else if (form.has('client_secret')) {
    used = 'client_secret_post';
  } else if (form.has('client_assertion')) {
    used = 'private_key_jwt';
  } else if (peerCertificate(ctx)) {
    used = 'tls_client_auth';
  }
  bump(stats.auth_methods, used);
  const peer = peerCertificate(ctx);
  if (peer) bump(stats.client_certificates, subjectDn(peer));
  if (form.has('client_assertion')) {
    const [header, claims] = form.get('client_assertion').split('.').slice(0, 2).map(decodeJwtPart);
    clientId ??= claims?.sub;
    const record = { client_id: clientId, assertion_type: form.get('client_assertion_type'), header, claims };
    if (expectedX5t[clientId] && header?.x5t !== undefined) record.x5t_matches = header.x5t === expectedX5t[clientId];
    assertions.push(record);
  }
  bump(stats.clients, clientId ?? '(none)');
  const expected = authMethodOf[clientId];
  if (expected && used !== 'none' && used !== expected) {
    oauthError(ctx, 401, 'invalid_client', `client ${clientId} must authenticate with ${expected}, not ${used}`);
    return;
  }

  await next();
  if (ctx.status >= 400 && ctx.body?.error) bump(stats.errors, ctx.body.error);
  if (ctx.status === 200 && ctx.body?.access_token) {
    const account = ctx.oidc?.account?.accountId ?? '(none)';
    bump((stats.accounts[account] ??= {}), form.get('grant_type') ?? '(none)');
    issued.access_tokens.push(ctx.body.access_token);
    if (ctx.body.refresh_token) issued.refresh_tokens.push(ctx.body.refresh_token);
  }
});

handler = provider.callback();
process.stdout.write(`LISTENING ${issuer}\n`);
