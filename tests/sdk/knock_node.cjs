// Knock's Node SDK (@knocklabs/node 1.35.0) against prefsd: over the Unix socket (undici
// `socketPath`) and over the TCP listener (KNOCK_BASE_URL alone), every method that maps to
// a route of rest.md §4, each result checked. Run by tests/sdk/run.sh; env: PREFSD_SOCKET,
// PREFSD_TCP_URL, KNOCK_API_KEY.
const assert = require('node:assert/strict');
const { Agent } = require('undici');
const Knock = require('@knocklabs/node').default;

async function drive(knock, label) {
  const run = `${label}-${Math.random().toString(36).slice(2, 10)}`;
  const uid = `node ${run}/jane+1`;
  // Users: #1 #2 #4 #5 #6-9
  const user = await knock.users.update(uid, { name: 'Jane', email: 'jane@example.com', plan: 'pro' });
  assert.equal(user.id, uid);
  assert.equal(user.plan, 'pro');
  assert.equal(user.__typename, 'User');
  assert.equal((await knock.users.get(uid)).email, 'jane@example.com');
  let ps = await knock.users.setPreferences(uid, 'default', { channel_types: { email: false } });
  assert.equal(ps.channel_types.email, false);
  assert.equal(ps.channel_types.sms, false, 'the effective set, defaults included (A2)');
  ps = await knock.users.setPreferences(uid, 'default', { __persistence_strategy__: 'merge', categories: { marketing: false } });
  assert.equal(ps.channel_types.email, false);
  ps = await knock.users.getPreferences(uid, 'default', { tenant: 'acme' });
  assert.equal(ps.id, 'acme');
  const sets = await knock.users.listPreferences(uid);
  assert.ok(Array.isArray(sets) && sets.length === 1, JSON.stringify(sets));
  assert.equal(await knock.users.unsetPreferences(uid, 'default') ?? null, null);
  const other = `node ${run}/other`;
  await knock.users.update(other, {});
  const seen = [];
  for await (const u of knock.users.list({ page_size: 1, include: ['preferences'] })) seen.push(u.id);
  assert.ok(seen.includes(uid) && seen.includes(other), JSON.stringify(seen));
  assert.equal((await knock.users.merge(uid, { from_user_id: other })).id, uid);
  await assert.rejects(knock.users.get(other), (e) => e.status === 404);
  // Bulk: #16-18 #35
  let op = await knock.users.bulk.setPreferences({ user_ids: [uid], preferences: { channel_types: { push: false } } });
  assert.equal(op.status, 'queued');
  assert.equal((await knock.bulkOperations.get(op.id)).id, op.id);
  op = await knock.users.bulk.identify({ users: [{ id: `node ${run}/b`, name: 'B' }] });
  assert.equal(op.name, 'users.identify');
  op = await knock.users.bulk.delete({ user_ids: [`node ${run}/b`] });
  assert.equal(op.name, 'users.delete');
  // Objects: #19-28
  const col = `projects-${run}`;
  const obj = await knock.objects.set(col, 'p 1/a', { name: 'Project', color: 'red' });
  assert.equal(obj.properties.color, 'red');
  assert.equal((await knock.objects.get(col, 'p 1/a')).collection, col);
  const objs = [];
  for await (const o of knock.objects.list(col)) objs.push(o.id);
  assert.deepEqual(objs, ['p 1/a']);
  ps = await knock.objects.setPreferences(col, 'p 1/a', 'default', { channel_types: { email: false } });
  assert.equal(ps.channel_types.email, false);
  assert.equal((await knock.objects.getPreferences(col, 'p 1/a', 'default')).channel_types.email, false);
  assert.equal((await knock.objects.listPreferences(col, 'p 1/a')).length, 1);
  assert.equal(await knock.objects.unsetPreferences(col, 'p 1/a', 'default') ?? null, null);
  op = await knock.objects.bulk.set(col, { objects: [{ id: 'p2', name: 'Two' }] });
  assert.equal(op.name, `objects.${col}.set`);
  op = await knock.objects.bulk.delete(col, { object_ids: ['p2'] });
  assert.equal(op.name, `objects.${col}.delete`);
  assert.equal(await knock.objects.delete(col, 'p 1/a') ?? null, null);
  // Tenants: #29-34
  const tid = `t-${run}`;
  const t = await knock.tenants.set(tid, { name: 'Tenant', settings: { preference_set: { channel_types: { sms: true } } } });
  assert.equal(t.settings.preference_set.id, 'default');
  assert.equal((await knock.tenants.get(tid)).name, 'Tenant');
  const ts = [];
  for await (const x of knock.tenants.list({ tenant_id: tid })) ts.push(x.id);
  assert.deepEqual(ts, [tid]);
  op = await knock.tenants.bulk.set({ tenants: [`${tid}-b`] });
  assert.equal(op.name, 'tenants.set');
  op = await knock.tenants.bulk.delete({ tenant_ids: [`${tid}-b`] });
  assert.equal(op.name, 'tenants.delete');
  assert.equal(await knock.tenants.delete(tid) ?? null, null);
  assert.equal(await knock.users.delete(uid) ?? null, null);
  console.log(`node (${label}): ok`);
}

(async () => {
  const apiKey = process.env.KNOCK_API_KEY;
  const dispatcher = new Agent({ connect: { socketPath: process.env.PREFSD_SOCKET } });
  await drive(new Knock({ apiKey, baseURL: 'http://prefsd', maxRetries: 0, fetchOptions: { dispatcher } }), 'socket');
  // KNOCK_BASE_URL alone, as a user would set it for the TCP listener.
  process.env.KNOCK_BASE_URL = process.env.PREFSD_TCP_URL;
  await drive(new Knock({ apiKey, maxRetries: 0 }), 'tcp');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
