// Executable spec: drive server.mjs's dev login/consent forms with plain HTTP + a cookie jar,
// then exercise the token endpoint (code exchange, rotating refresh, Basic auth encoding).
// Prints PASS/FAIL lines and a closing "N passed, N failed" line; exits 1 on any failure.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const REDIRECT_URI = 'http://127.0.0.1:9/cb'; // closed port: never followed
const ACCESS_TTL = 2;

let passed = 0;
let failed = 0;
function check(name, ok, detail = '') {
  if (ok) passed += 1; else failed += 1;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}${!ok && detail ? ` -- ${detail}` : ''}`);
  return ok;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const b64url = (buf) => buf.toString('base64url');
// application/x-www-form-urlencoded, as RFC 6749 §2.3.1 / Appendix B asks for Basic credentials.
const formEncode = (s) => new URLSearchParams({ v: s }).toString().slice(2);

// ---- start the provider ----
const child = spawn(process.execPath, [fileURLToPath(new URL('./server.mjs', import.meta.url))], {
  env: { ...process.env, OIDC_REDIRECT_URI: REDIRECT_URI, OIDC_ACCESS_TTL: String(ACCESS_TTL) },
  stdio: ['pipe', 'pipe', 'inherit'], // keep stdin open: the server exits when it closes
});
const issuer = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('server did not print LISTENING in 10s')), 10_000);
  createInterface({ input: child.stdout }).once('line', (line) => {
    clearTimeout(timer);
    const m = /^LISTENING (http:\/\/127\.0\.0\.1:\d+)$/.exec(line);
    if (m) resolve(m[1]); else reject(new Error(`unexpected first line: ${line}`));
  });
  child.once('exit', (code) => reject(new Error(`server exited early (${code})`)));
});
console.log(`# provider at ${issuer}`);

// ---- minimal cookie jar (name + path; path-prefix matching; expiry deletes) ----
class Jar {
  #cookies = new Map(); // `${path}\t${name}` -> { name, value, path }

  store(res, requestUrl) {
    for (const header of res.headers.getSetCookie()) {
      const [pair, ...attrs] = header.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = new URL(requestUrl).pathname.replace(/\/[^/]*$/, '') || '/';
      let expired = false;
      for (const attr of attrs) {
        const [k, v = ''] = attr.split('=');
        if (k.toLowerCase() === 'path') path = v;
        if (k.toLowerCase() === 'expires' && Date.parse(v) <= Date.now()) expired = true;
        if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
      }
      const key = `${path}\t${name}`;
      if (expired) this.#cookies.delete(key); else this.#cookies.set(key, { name, value, path });
    }
  }

  header(url) {
    const { pathname } = new URL(url);
    return [...this.#cookies.values()]
      .filter((c) => pathname === c.path || pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }
}

async function http(jar, method, url, form) {
  const headers = {};
  const cookie = jar.header(url);
  if (cookie) headers.cookie = cookie;
  const res = await fetch(url, {
    method, headers, redirect: 'manual', body: form ? new URLSearchParams(form) : undefined,
  });
  jar.store(res, url);
  const location = res.headers.get('location');
  return { status: res.status, location: location && new URL(location, url).href, body: await res.text() };
}

// Extract <form action> and its <input name value> pairs from the dev interaction HTML.
function parseForm(html) {
  const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1];
  const fields = {};
  for (const m of html.matchAll(/<input([^>]*)>/g)) {
    const name = /name="([^"]*)"/.exec(m[1])?.[1];
    if (name) fields[name] = /value="([^"]*)"/.exec(m[1])?.[1] ?? '';
  }
  return { action, fields };
}

// ---- THE RECIPE: authorization URL -> code at the redirect URI ----
async function authorize(clientId, { promptConsent = true, label = clientId } = {}) {
  const jar = new Jar();
  const verifier = b64url(randomBytes(32));
  const challenge = b64url(createHash('sha256').update(verifier).digest());
  const state = b64url(randomBytes(12));
  const params = {
    client_id: clientId,
    response_type: 'code',
    redirect_uri: REDIRECT_URI,
    scope: 'openid offline_access api:read',
    state,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  };
  if (promptConsent) params.prompt = 'consent';
  const authUrl = `${issuer}/auth?${new URLSearchParams(params)}`;
  const t = (s) => `[${label}] ${s}`;
  const interactionRe = new RegExp(`^${issuer}/interaction/([\\w-]+)$`);

  // 1. GET /auth?... -> 303 Location: /interaction/<uid1> (relative)
  let r = await http(jar, 'GET', authUrl);
  const uid1 = interactionRe.exec(r.location ?? '')?.[1];
  if (!check(t('1 GET /auth -> 303 /interaction/<uid>'), r.status === 303 && uid1, `${r.status} ${r.location}`)) return null;

  // 2. GET /interaction/<uid1> -> 200 login form
  r = await http(jar, 'GET', r.location);
  let form = parseForm(r.body);
  check(t('2 GET /interaction/<uid> -> 200 login form (prompt,login,password)'),
    r.status === 200 && form.fields.prompt === 'login' && 'login' in form.fields && 'password' in form.fields
      && form.action === `${issuer}/interaction/${uid1}`,
    `${r.status} ${JSON.stringify(form)}`);

  // 3. POST /interaction/<uid1> prompt=login&login=..&password=.. -> 303 /auth/<uid1>
  r = await http(jar, 'POST', `${issuer}/interaction/${uid1}`, { ...form.fields, login: 'alice', password: 'anything' });
  if (!check(t('3 POST login -> 303 /auth/<uid>'), r.status === 303 && r.location === `${issuer}/auth/${uid1}`,
    `${r.status} ${r.location}`)) return null;

  // 4. GET /auth/<uid1> (resume; needs _interaction_resume cookie) -> 303 /interaction/<uid2>
  r = await http(jar, 'GET', r.location);
  const uid2 = interactionRe.exec(r.location ?? '')?.[1];
  if (!check(t('4 GET /auth/<uid> -> 303 /interaction/<uid2> (new uid)'), r.status === 303 && uid2 && uid2 !== uid1,
    `${r.status} ${r.location}`)) return null;

  // 5. GET /interaction/<uid2> -> 200 consent form
  r = await http(jar, 'GET', r.location);
  form = parseForm(r.body);
  check(t('5 GET /interaction/<uid2> -> 200 consent form (prompt=consent)'),
    r.status === 200 && form.fields.prompt === 'consent' && form.action === `${issuer}/interaction/${uid2}`,
    `${r.status} ${JSON.stringify(form)}`);

  // 6. POST /interaction/<uid2> prompt=consent -> 303 /auth/<uid2>
  r = await http(jar, 'POST', `${issuer}/interaction/${uid2}`, form.fields);
  if (!check(t('6 POST consent -> 303 /auth/<uid2>'), r.status === 303 && r.location === `${issuer}/auth/${uid2}`,
    `${r.status} ${r.location}`)) return null;

  // 7. GET /auth/<uid2> -> 303 <redirect_uri>?code=..&state=..&iss=..  (do not follow)
  r = await http(jar, 'GET', r.location);
  const cb = r.location ? new URL(r.location) : null;
  const code = cb?.searchParams.get('code');
  if (!check(t('7 GET /auth/<uid2> -> 303 redirect_uri?code&state&iss'),
    r.status === 303 && `${cb.origin}${cb.pathname}` === REDIRECT_URI && code
      && cb.searchParams.get('state') === state && cb.searchParams.get('iss') === issuer,
    `${r.status} ${r.location}`)) return null;

  return { code, verifier };
}

// ---- token endpoint ----
function clientAuth(client, how) {
  const headers = {};
  const form = {};
  if (how === 'post') {
    form.client_id = client.id;
    form.client_secret = client.secret;
  } else if (how === 'basic') {
    headers.authorization = `Basic ${Buffer.from(`${formEncode(client.id)}:${formEncode(client.secret)}`).toString('base64')}`;
  } else if (how === 'basic-raw') { // NOT encoded: wrong per RFC 6749 §2.3.1
    headers.authorization = `Basic ${Buffer.from(`${client.id}:${client.secret}`).toString('base64')}`;
  }
  return { headers, form };
}

async function token(client, how, params) {
  const auth = clientAuth(client, how);
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: auth.headers,
    body: new URLSearchParams({ ...params, ...auth.form }),
  });
  return { status: res.status, json: await res.json() };
}

async function fullFlow(client, how) {
  const t = (s) => `[${client.id}] ${s}`;
  const got = await authorize(client.id);
  if (!got) return;

  let r = await token(client, how, {
    grant_type: 'authorization_code', code: got.code, redirect_uri: REDIRECT_URI, code_verifier: got.verifier,
  });
  const scopes = new Set(r.json.scope?.split(' '));
  if (!check(t(`code exchange (${how}) -> 200 access+refresh token`),
    r.status === 200 && r.json.access_token && r.json.refresh_token && r.json.token_type === 'Bearer'
      && r.json.expires_in === ACCESS_TTL && scopes.has('offline_access') && scopes.has('api:read'),
    `${r.status} ${JSON.stringify(r.json)}`)) return;

  const rt1 = r.json.refresh_token;
  const at1 = r.json.access_token;
  let me = await fetch(`${issuer}/me`, { headers: { authorization: `Bearer ${at1}` } });
  check(t('fresh access token accepted at /me'), me.status === 200, String(me.status));

  r = await token(client, how, { grant_type: 'refresh_token', refresh_token: rt1 });
  const rt2 = r.json.refresh_token;
  check(t('refresh #1 -> 200, new access + rotated refresh token'),
    r.status === 200 && r.json.access_token && r.json.access_token !== at1 && rt2 && rt2 !== rt1
      && r.json.expires_in === ACCESS_TTL,
    `${r.status} ${JSON.stringify(r.json)}`);

  r = await token(client, how, { grant_type: 'refresh_token', refresh_token: rt2 });
  const rt3 = r.json.refresh_token;
  check(t('refresh #2 -> 200, rotated again'), r.status === 200 && rt3 && rt3 !== rt2 && rt3 !== rt1,
    `${r.status} ${JSON.stringify(r.json)}`);

  r = await token(client, how, { grant_type: 'refresh_token', refresh_token: rt1 });
  check(t('reused old refresh token -> 400 invalid_grant'), r.status === 400 && r.json.error === 'invalid_grant',
    `${r.status} ${JSON.stringify(r.json)}`);

  // oidc-provider's reuse detection revokes the whole grant: the newest token dies too.
  r = await token(client, how, { grant_type: 'refresh_token', refresh_token: rt3 });
  check(t('after reuse, latest refresh token also revoked -> 400 invalid_grant'),
    r.status === 400 && r.json.error === 'invalid_grant', `${r.status} ${JSON.stringify(r.json)}`);

  if (client.id === 'cs-post') {
    await sleep((ACCESS_TTL + 1) * 1000);
    me = await fetch(`${issuer}/me`, { headers: { authorization: `Bearer ${at1}` } });
    check(t(`access token rejected at /me after ${ACCESS_TTL}s TTL -> 401`), me.status === 401, String(me.status));
  }
}

const csPost = { id: 'cs-post', secret: 'post-secret' };
const csBasic = { id: 'cs-basic', secret: 's3cr:et%+/=&x' };

try {
  await fullFlow(csPost, 'post');
  await fullFlow(csBasic, 'basic');

  // Basic credential encoding and strict auth-method checks (each uses a fresh code).
  let got = await authorize('cs-basic', { label: 'cs-basic raw' });
  let r = await token(csBasic, 'basic-raw', {
    grant_type: 'authorization_code', code: got.code, redirect_uri: REDIRECT_URI, code_verifier: got.verifier,
  });
  check('[cs-basic] Basic with NOT-urlencoded secret -> 400 invalid_request',
    r.status === 400 && r.json.error === 'invalid_request', `${r.status} ${JSON.stringify(r.json)}`);
  r = await token(csBasic, 'post', {
    grant_type: 'authorization_code', code: got.code, redirect_uri: REDIRECT_URI, code_verifier: got.verifier,
  });
  check('[cs-basic] client_secret_post for a basic client -> 401 invalid_client (harness strictness)',
    r.status === 401 && r.json.error === 'invalid_client', `${r.status} ${JSON.stringify(r.json)}`);
  r = await token(csPost, 'basic', {
    grant_type: 'authorization_code', code: got.code, redirect_uri: REDIRECT_URI, code_verifier: got.verifier,
  });
  check('[cs-post] client_secret_basic for a post client -> 401 invalid_client (harness strictness)',
    r.status === 401 && r.json.error === 'invalid_client', `${r.status} ${JSON.stringify(r.json)}`);
  r = await token(csBasic, 'basic', {
    grant_type: 'authorization_code', code: got.code, redirect_uri: REDIRECT_URI, code_verifier: 'x'.repeat(43),
  });
  check('[cs-basic] wrong code_verifier -> 400 invalid_grant', r.status === 400 && r.json.error === 'invalid_grant',
    `${r.status} ${JSON.stringify(r.json)}`);

  // PKCE is mandatory: no code_challenge -> error redirect to redirect_uri.
  const noPkce = await http(new Jar(), 'GET', `${issuer}/auth?${new URLSearchParams({
    client_id: 'cs-post', response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'openid', state: 's',
  })}`);
  const err = noPkce.location && new URL(noPkce.location);
  check('authorize without code_challenge -> 303 redirect_uri?error=invalid_request',
    noPkce.status === 303 && err?.searchParams.get('error') === 'invalid_request', `${noPkce.status} ${noPkce.location}`);

  // Gotcha: without prompt=consent, offline_access is silently dropped -> no refresh token.
  got = await authorize('cs-post', { promptConsent: false, label: 'cs-post no-prompt' });
  r = await token(csPost, 'post', {
    grant_type: 'authorization_code', code: got.code, redirect_uri: REDIRECT_URI, code_verifier: got.verifier,
  });
  check('[cs-post] without prompt=consent: 200 but no refresh_token, no offline_access scope',
    r.status === 200 && r.json.access_token && !r.json.refresh_token && !r.json.scope.split(' ').includes('offline_access'),
    `${r.status} ${JSON.stringify(r.json)}`);

  // /__stats counts every POST /token by grant_type.
  const stats = await (await fetch(`${issuer}/__stats`)).json();
  console.log(`# stats ${JSON.stringify(stats)}`);
  check('/__stats counts token requests by grant_type',
    stats.token_requests === 15 && stats.grants.authorization_code === 7 && stats.grants.refresh_token === 8,
    JSON.stringify(stats));
  // Successful grants per account, all as alice: 3 codes redeemed (the two full flows and the
  // no-prompt one; the raw-Basic code is refused throughout) and 4 refreshes (2 per full flow).
  check('/__stats counts successful grants per account',
    JSON.stringify(stats.accounts) === JSON.stringify({ alice: { authorization_code: 3, refresh_token: 4 } }),
    JSON.stringify(stats.accounts));
  check('/__stats counts /me answers by status (two fresh tokens, one expired)',
    stats.userinfo['200'] === 2 && stats.userinfo['401'] === 1, JSON.stringify(stats.userinfo));
  const issued = await (await fetch(`${issuer}/__issued`)).json();
  check('/__issued lists every token issued',
    issued.access_tokens.length === 7 && issued.refresh_tokens.length === 6
      && issued.access_tokens.every((t) => typeof t === 'string' && t.length >= 32),
    JSON.stringify({ a: issued.access_tokens.length, r: issued.refresh_tokens.length }));
} catch (e) {
  check('no exception', false, e.stack);
} finally {
  child.stdin.end(); // closing stdin is how the server is told to exit
}

const exitCode = await new Promise((resolve) => {
  const timer = setTimeout(() => { child.kill('SIGKILL'); resolve('timeout'); }, 5000);
  child.once('exit', (code) => { clearTimeout(timer); resolve(code); });
});
check('server exits when its stdin closes', exitCode === 0, String(exitCode));

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
