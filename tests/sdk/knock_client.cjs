// Knock's browser client (@knocklabs/client 0.22.2), as a preference center uses it, in Node
// against prefsd's TCP listener with a public key and a user token minted by `prefsd token`
// (rest.md §6.2): authenticate (inline identify, #1), user.get (#2), getPreferences (#7),
// setPreferences (#8), getAllPreferences (#6), each result checked. Run by tests/sdk/run.sh;
// env: PREFSD_TCP_URL, PREFSD_USER_TOKEN, PREFSD_TOKEN_USER.
const assert = require('node:assert/strict');
const Knock = require('@knocklabs/client').default;

(async () => {
  const user = process.env.PREFSD_TOKEN_USER;
  const knock = new Knock('pk_test', { host: process.env.PREFSD_TCP_URL, logLevel: 'debug' });
  knock.authenticate({ id: user, name: 'Browser User' }, process.env.PREFSD_USER_TOKEN);
  // The inline identify is sent on authenticate; user.get reads it back.
  let me;
  for (let i = 0; i < 50; i++) {
    try {
      me = await knock.user.get();
      if (me && me.name === 'Browser User') break;
    } catch (e) { /* not identified yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(me && me.name, 'Browser User', `identify through authenticate: ${JSON.stringify(me)}`);
  let ps = await knock.user.getPreferences();
  assert.equal(ps.id, 'default');
  assert.equal(ps.channel_types.sms, false, 'the environment default');
  ps = await knock.user.setPreferences({ channel_types: { email: false, sms: true }, workflows: {}, categories: {} });
  assert.equal(ps.channel_types.email, false);
  assert.equal(ps.channel_types.sms, true);
  ps = await knock.user.getPreferences({ preferenceSet: 'default' });
  assert.equal(ps.channel_types.email, false);
  ps = await knock.user.getPreferences({ tenant: 'acme' });
  assert.equal(ps.id, 'acme');
  const all = await knock.user.getAllPreferences();
  assert.deepEqual(all.map((s) => s.id), ['default']);
  // Another user's preferences are refused (403), never served.
  await assert.rejects(
    knock.client().makeRequest({ method: 'GET', url: '/v1/users/someone-else/preferences/default' })
      .then((r) => { if (r.statusCode !== 'ok') throw Object.assign(new Error('refused'), r); return r; }),
  );
  knock.teardown();
  console.log('browser client (tcp): ok');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
