// Loopback OAuth2/OIDC provider for tokenwarden integration tests.
//
// Prints exactly one stdout line, `LISTENING http://127.0.0.1:<port>`, then serves until
// stdin closes (parent died) or SIGTERM/SIGINT. Everything else goes to stderr.
// Env: OIDC_REDIRECT_URI (required), OIDC_ACCESS_TTL (seconds, default 3).
import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';

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

// Bind first so the issuer can carry the real ephemeral port.
let handler = (_req, res) => { res.writeHead(503).end(); };
const server = http.createServer((req, res) => handler(req, res));
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

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
const authMethodOf = Object.fromEntries(clients.map((c) => [c.client_id, c.token_endpoint_auth_method]));

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const DAY = 24 * 60 * 60;

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
  features: {
    devInteractions: { enabled: true },
    resourceIndicators: { enabled: false },
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
const stats = { token_requests: 0, grants: {}, auth_methods: {}, errors: {}, held: 0, abandoned: 0, accounts: {}, userinfo: {} };
const issued = { access_tokens: [], refresh_tokens: [] };
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
  }
  bump(stats.auth_methods, used);
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
