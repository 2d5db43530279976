// Dev OpenID provider of the local platform, laid out like a Keycloak realm.
//
// Built on the OpenID-certified npm `oidc-provider`. Endpoints live at Keycloak's paths
// (/realms/<realm>/protocol/openid-connect/{auth,token,userinfo,certs,logout}), the login form uses
// Keycloak's field names (username, password, #kc-login), ID tokens are RS256-signed and carry
// Keycloak's `groups` and `realm_access.roles` claims. Users come from a realm file (realm.json).
//
// Users can change while it runs, as an administrator changes them in Keycloak: the optional file
// <SSO_STATE_DIR>/user-changes.json, read at every login, token and userinfo request, replaces fields
// of realm users, e.g. {"alice": {"groups": ["/team-nlp"]}, "bob": {"enabled": false}}. A disabled
// user cannot log in, and their refresh tokens and access tokens are refused (as in Keycloak).
//
// Settings (environment, all set by `mlplatform-local`):
//   SSO_HOST, SSO_PORT          where to listen (loopback by default)
//   SSO_REALM_FILE              realm export: clients and users
//   SSO_HUB_URL                 public URL of the hub (redirect and post-logout URIs)
//   SSO_CLIENT_SECRET           the hub's client secret
//   SSO_STATE_DIR               signing keys and cookie keys are kept here, so restarts keep tokens valid
//   SSO_ACCESS_TOKEN_TTL        access token lifetime in seconds (default 300, like Keycloak)
//   SSO_ID_TOKEN_TTL            ID token lifetime in seconds (default 300)
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import Provider from 'oidc-provider';

const env = process.env;
const HOST = env.SSO_HOST || '127.0.0.1';
const PORT = Number(env.SSO_PORT || 18080);
const realm = JSON.parse(fs.readFileSync(env.SSO_REALM_FILE, 'utf8'));
const REALM_PATH = `/realms/${realm.realm}`;
const ISSUER = `http://${HOST}:${PORT}${REALM_PATH}`;
const HUB_URL = (env.SSO_HUB_URL || 'http://127.0.0.1:18000').replace(/\/$/, '');
const LOGIN_PATH = `${REALM_PATH}/login-actions/authenticate`;
const USERS = Object.fromEntries(realm.users.map((u) => [u.username, u]));
const STATE_DIR = env.SSO_STATE_DIR || '.';
const CHANGES_FILE = path.join(STATE_DIR, 'user-changes.json');
const CHANGEABLE = ['groups', 'realmRoles', 'enabled'];

// The realm user as it is now (user-changes.json over realm.json); undefined if unknown or disabled.
function currentUser(username) {
  if (!Object.hasOwn(USERS, username)) return undefined;
  let changes = {};
  try {
    changes = JSON.parse(fs.readFileSync(CHANGES_FILE, 'utf8'));
  } catch (err) {
    if (err.code !== 'ENOENT') console.error(`ignoring ${CHANGES_FILE}: ${err.message}`);
  }
  const changed = Object.hasOwn(changes, username) ? changes[username] : {};
  const user = { ...USERS[username] };
  for (const key of CHANGEABLE) if (Object.hasOwn(changed, key)) user[key] = changed[key];
  return user.enabled === false ? undefined : user;
}

if (!env.SSO_CLIENT_SECRET) {
  console.error('SSO_CLIENT_SECRET is not set: the hub client needs a secret');
  process.exit(2);
}

// Keys survive restarts (like a Keycloak realm's keys), so sessions and issued tokens stay valid.
function loadState(dir) {
  const file = path.join(dir, 'sso-keys.json');
  if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8'));
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), alg: 'RS256', use: 'sig' };
  const state = { jwks: { keys: [jwk] }, cookieKeys: [crypto.randomBytes(32).toString('hex')] };
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(file, JSON.stringify(state), { mode: 0o600 });
  return state;
}
const state = loadState(STATE_DIR);

const html = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${html(title)}</title>
<style>body{font-family:sans-serif;background:#f0f0f0}main{max-width:360px;margin:60px auto;background:#fff;
padding:24px 32px;box-shadow:0 2px 4px rgba(0,0,0,.2)}label{display:block;margin-top:12px}input{width:100%;
padding:6px;box-sizing:border-box}#kc-login,#kc-logout{margin-top:18px;width:100%;padding:8px;background:#0066cc;
color:#fff;border:0}.kc-feedback-text{color:#c00}</style></head><body><main>${body}</main></body></html>`;

const provider = new Provider(ISSUER, {
  clients: realm.clients.map((c) => ({
    client_id: c.clientId,
    client_name: c.name,
    client_secret: env.SSO_CLIENT_SECRET,
    redirect_uris: [HUB_URL + c.redirectPath],
    post_logout_redirect_uris: [HUB_URL + c.postLogoutRedirectPath],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  })),
  jwks: state.jwks,
  cookies: { keys: state.cookieKeys },
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups', 'roles'],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name', 'given_name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
    roles: ['realm_access'],
  },
  conformIdTokenClaims: false, // Keycloak puts mapped claims into the ID token as well
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: false,
  async findAccount(ctx, sub) {
    const u = currentUser(sub); // undefined: refresh and userinfo refused
    if (!u) return undefined;
    return {
      accountId: sub,
      async claims() {
        return {
          sub, preferred_username: sub, name: u.firstName, given_name: u.firstName,
          email: u.email, email_verified: true, groups: u.groups, realm_access: { roles: u.realmRoles },
        };
      },
    };
  },
  // First-party client: no consent screen (Keycloak's consentRequired=false).
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid offline_access profile email groups roles');
    await grant.save();
    return grant;
  },
  interactions: { url: (ctx, interaction) => `${LOGIN_PATH}/${interaction.uid}` },
  routes: {
    authorization: '/protocol/openid-connect/auth',
    token: '/protocol/openid-connect/token',
    userinfo: '/protocol/openid-connect/userinfo',
    jwks: '/protocol/openid-connect/certs',
    end_session: '/protocol/openid-connect/logout',
    revocation: '/protocol/openid-connect/revoke',
    introspection: '/protocol/openid-connect/token/introspect',
    pushed_authorization_request: '/protocol/openid-connect/ext/par/request',
  },
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    introspection: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // Like Keycloak: a logout that carries a valid id_token_hint needs no confirmation.
      async logoutSource(ctx, form) {
        const hinted = Boolean(ctx.oidc.params.id_token_hint);
        ctx.body = page('Logging out', `<h1>Log out of ${html(realm.realm)}?</h1>${form}
          <button id="kc-logout" type="submit" form="op.logoutForm" name="logout" value="yes">Log out</button>
          ${hinted ? '<script>const f=document.getElementById("op.logoutForm");' +
            'const i=document.createElement("input");i.type="hidden";i.name="logout";i.value="yes";' +
            'f.appendChild(i);f.submit();</script>' : ''}`);
      },
    },
  },
  ttl: {
    AccessToken: Number(env.SSO_ACCESS_TOKEN_TTL || 300),
    IdToken: Number(env.SSO_ID_TOKEN_TTL || 300),
    RefreshToken: 8 * 3600,
    Session: 10 * 3600,
    Grant: 10 * 3600,
    Interaction: 1800,
  },
  clockTolerance: 5,
});
provider.on('server_error', (ctx, err) => console.error('server_error', err.message));

function loginForm(uid, { username = '', error = '' } = {}) {
  return page(`Sign in to ${realm.realm}`, `<h1>Sign in to your account</h1>
    ${error ? `<p class="kc-feedback-text" id="input-error">${html(error)}</p>` : ''}
    <form id="kc-form-login" method="post" action="${LOGIN_PATH}/${html(uid)}">
      <label for="username">Username</label><input id="username" name="username" value="${html(username)}" autofocus>
      <label for="password">Password</label><input id="password" name="password" type="password">
      <input id="kc-login" name="login" type="submit" value="Sign In">
    </form>`);
}

async function readForm(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return new URLSearchParams(Buffer.concat(chunks).toString());
}

// The login screen: Keycloak's /login-actions/authenticate, with a real password check.
async function handleLogin(req, res) {
  const uid = req.url.slice(LOGIN_PATH.length + 1).split('?')[0];
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  const send = (status, body) => res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' }).end(body);
  if (details.prompt.name !== 'login') {
    // Consent for our first-party client: granted without a screen.
    const grant = new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope);
    return provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
  }
  if (req.method === 'GET') return send(200, loginForm(uid));
  const form = await readForm(req);
  const username = form.get('username') || '';
  const user = currentUser(username);
  const given = Buffer.from(form.get('password') || '');
  const expected = Buffer.from(user ? user.password : '');
  if (!user || given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) {
    console.log(`login failed for user ${JSON.stringify(username)}`);
    return send(200, loginForm(uid, { username, error: 'Invalid username or password.' }));
  }
  console.log(`login ok for user ${JSON.stringify(username)}`);
  return provider.interactionFinished(req, res, { login: { accountId: username } }, { mergeWithLastSubmission: false });
}

const callback = provider.callback();
http.createServer((req, res) => {
  if (req.url.startsWith(LOGIN_PATH + '/')) {
    handleLogin(req, res).catch((err) => {
      console.error('login error:', err.message);
      res.writeHead(400, { 'content-type': 'text/html' }).end(page('Error', `<p>${html(err.message)}. <a href="${HUB_URL}/hub/login">Start again</a></p>`));
    });
    return;
  }
  if (req.url === REALM_PATH || req.url.startsWith(REALM_PATH + '/') || req.url.startsWith(REALM_PATH + '?')) {
    req.originalUrl = req.url; // mount under /realms/<realm>, as express would
    req.url = req.url.slice(REALM_PATH.length) || '/';
    callback(req, res);
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
}).listen(PORT, HOST, () => console.log(`dev OIDC provider listening, issuer ${ISSUER}`));
